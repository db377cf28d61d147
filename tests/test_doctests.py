"""The examples in the package's docstrings run as written (on a CPU), so the documentation cannot rot."""

import doctest
import importlib
import pkgutil

import pytest

import nf_kernels

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(nf_kernels.__path__, prefix="nf_kernels.")
    # __main__: running it is the command line's job (tests/test_cli.py); the flows have their own, stricter check
    # (tests/flows/test_flow_docstrings.py).
    if not info.name.endswith("__main__") and not info.name.startswith("nf_kernels.flows")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    if name.startswith("nf_kernels.compat."):  # a peer library's drop-ins: only where that library is installed
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            pytest.skip(str(error))
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed"
