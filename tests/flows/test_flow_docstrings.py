"""The docstrings of nf_kernels.flows: every example runs as written, and every public name documents itself."""

import doctest
import importlib
import inspect
import pkgutil

import pytest
import torch

import nf_kernels.flows as flows

MODULES = [flows.__name__] + sorted(info.name for info in pkgutil.iter_modules(flows.__path__, flows.__name__ + "."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    runner, report = doctest.DocTestRunner(), []
    with torch.random.fork_rng(devices=[]):  # examples draw random numbers: leave the other tests' stream alone
        for test in doctest.DocTestFinder().find(module):
            runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


# What the package exports that can carry a docstring (MODELS and MODEL_SIZES are tuples), and the methods of
# the objects users call most.
PUBLIC = [getattr(flows, name) for name in flows.__all__ if callable(getattr(flows, name))]
PUBLIC += [flows.Flow.forward, flows.Flow.inverse, flows.Flow.log_prob, flows.Flow.sample]
PUBLIC += [flows.StandardNormal.log_prob, flows.StandardNormal.sample]


def _named_parameters(obj) -> list[str]:
    """The arguments a caller names: a class's constructor's or a function's, less self and * / ** catch-alls."""
    signature = inspect.signature(obj)
    plain = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in signature.parameters.values() if p.kind in plain and p.name != "self"]


@pytest.mark.parametrize("obj", PUBLIC, ids=lambda obj: obj.__qualname__)
def test_public_names_document_their_arguments_returns_and_an_example(obj):
    doc = inspect.getdoc(obj)
    assert doc and ">>> " in doc and "Returns:" in doc, f"{obj.__qualname__}: needs a Returns: section and an example"
    missing = [name for name in _named_parameters(obj) if f"    {name}: " not in doc]
    assert not missing and ("Args:" in doc or not _named_parameters(obj)), f"{obj.__qualname__}: document {missing}"
