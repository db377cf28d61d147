"""What the tests of nf_kernels.compat share: a library's model against its accelerated copy, on every backend.

Each tests/test_compat_<library>.py builds random models with that library's own API, copies each (same weights),
accelerates the copy and compares what the library computes: log-densities, samples from the same noise, inverses
and gradients, within SPEC section 3's tolerances; in float32 the log-density's error is taken relative to its
magnitude (the library's own float32 sum is no more exact than ours).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Callable, Optional

import pytest
import torch
from conftest import CPU_BACKENDS, rel_err

import nf_kernels.compat

# The backends the drop-ins are held to here: every one that runs on the CPU, the C++ "cpu" kernels included (they
# have every layout and scale map since issue 13's C++ stage).
BACKENDS = list(CPU_BACKENDS)
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}
# Gradients pass through the conditioners' matrix products: rounding differences are amplified a little.
GRAD_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}


def accelerated_copy(model, backend: str):
    """(a deep copy of `model` with every supported layer accelerated on `backend`, the report)."""
    twin = copy.deepcopy(model)
    return twin, nf_kernels.compat.accelerate(twin, backend=backend)


def _extension_lacks_codes() -> bool:
    """Whether this build of the extension exports shorter code lists than nf_kernels/_layout.py's (an older build):
    only then may "cpu" refuse a call."""
    from nf_kernels import _layout
    from nf_kernels.backends import extension

    if extension._module is None:
        return False
    lists = {"scale": _layout.SCALE_NAMES, "pattern": _layout.PATTERN_NAMES, "layout": _layout.LAYOUT_FIELDS}
    return any(len(extension.kernel_codes(kind)) < len(names) for kind, names in lists.items())


@contextlib.contextmanager
def skip_if_the_backend_lacks_it(backend: str):
    """A build of the extension without a layout or map (SPEC section 2) refuses it: that skips, saying what. A build
    with every code that refuses one fails, as does any other backend's refusal."""
    try:
        yield
    except NotImplementedError as error:
        if backend not in ("cpu", "cuda") or "does not support" not in str(error) or not _extension_lacks_codes():
            raise
        pytest.skip(str(error))


def assert_close(out, ref, dtype, what: str, tolerance=None) -> None:
    tolerance = (tolerance or TOLERANCE)[dtype]
    out, ref = torch.as_tensor(out), torch.as_tensor(ref)
    assert out.shape == ref.shape, (what, out.shape, ref.shape)
    error = rel_err(out, ref)
    assert error <= tolerance, f"{what}: relative error {error:.3g} > {tolerance:g}"


def parameter_gradients(model) -> torch.Tensor:
    """Every parameter's gradient (zeros for those without one), flattened into one vector, in parameter order."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in model.parameters()])


def assert_same_gradients(model, twin, x, twin_x, dtype) -> None:
    """The gradients of both models' losses (already backpropagated) agree: parameters and input."""
    assert_close(parameter_gradients(twin), parameter_gradients(model), dtype, "parameter gradients", GRAD_TOLERANCE)
    assert_close(twin_x.grad, x.grad, dtype, "input gradient", GRAD_TOLERANCE)


def assert_state_dicts_match(model, twin) -> None:
    """The accelerated model's state_dict has the library's keys and values, and loads back into the library's."""
    ours, theirs = twin.state_dict(), model.state_dict()
    assert list(ours) == list(theirs)
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key
    copy.deepcopy(model).load_state_dict(ours)  # the library's model loads it as its own


def leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


def compiles_fullgraph(fn, *args) -> bool:
    """Whether torch.compile(fullgraph=True) traces `fn` (the library's own model: where it does not, neither test)."""
    torch._dynamo.reset()
    try:
        torch.compile(fn, fullgraph=True, backend="aot_eager")(*args)
        return True
    except Exception:  # any tracing failure of the library's model
        return False


def seeded(seed: int, fn, *args, dtype=None, **kwargs):
    """fn(*args, **kwargs) with torch's global generator at `seed`: the same noise for a library's sampler and ours.
    With `dtype`, that is torch's default dtype meanwhile (some samplers draw their noise in it)."""
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype or previous)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_default_dtype(previous)


def _tensors(value) -> list:
    """A result as its list of tensors (a library may return a tensor, a tuple of them, or a float log-det)."""
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    return [torch.as_tensor(value)]


def assert_same_results(ours, theirs, dtype, what: str) -> None:
    ours, theirs = _tensors(ours), _tensors(theirs)
    assert len(ours) == len(theirs), what
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert_close(a, b, dtype, f"{what}[{i}]")


@dataclass(frozen=True)
class Questions:
    """How to ask one library's model what the tests compare: each takes the model (and x)."""

    log_prob: Callable  # (model, x) -> [B]: the density the model defines (a FrEIA network: its negative loss)
    inverse: Callable  # (model, x) -> the other direction's output(s)
    sample: Optional[Callable] = None  # (model) -> samples drawn with torch's global generator


def assert_gradients_as_accurate(model, twin, x, log_prob: Callable) -> None:
    """In float32, the accelerated model's gradients of log_prob(x).sum() are no further from the float64 truth (the
    library's model in float64) than the library's own float32 gradients, up to a factor 2 and float32 rounding:
    where a spline's gradients are ill-conditioned neither float32 result is near the other, only both near the
    truth."""
    truth_model = copy.deepcopy(model).double()
    results = []
    for m, dtype in ((truth_model, torch.float64), (model, x.dtype), (twin, x.dtype)):
        m.zero_grad()
        x_leaf = leaf(x.to(dtype))
        log_prob(m, x_leaf).sum().backward()
        results.append((parameter_gradients(m).double(), x_leaf.grad.double()))
    truth, theirs, ours = results
    for i, what in enumerate(("parameter gradients", "input gradient")):
        ours_error, their_error = rel_err(ours[i], truth[i]), rel_err(theirs[i], truth[i])
        assert ours_error <= 2 * their_error + 1e-5, f"{what}: {ours_error:.3g} from float64, the library's {their_error:.3g}"


def check_against_the_library(model, backend: str, dtype, x: torch.Tensor, ask: Questions, replaced: int,
                              float32_gradients_to_truth: bool = False):  # fmt: skip
    """Accelerate a copy of `model` on `backend`; check that it replaced `replaced` layers, kept the state_dict,
    and computes the library's log-densities, inverse, samples (from the same noise) and gradients. Returns the
    accelerated copy and the report. With `float32_gradients_to_truth`, float32 gradients are held to
    assert_gradients_as_accurate instead (a spline's)."""
    twin, report = accelerated_copy(model, backend)
    assert len(report.replaced) == replaced, report
    assert_state_dicts_match(model, twin)
    with skip_if_the_backend_lacks_it(backend):
        assert_close(ask.log_prob(twin, x), ask.log_prob(model, x), dtype, "log_prob")
        assert_same_results(ask.inverse(twin, x), ask.inverse(model, x), dtype, "inverse")
        if ask.sample is not None:
            assert_same_results(seeded(1, ask.sample, twin, dtype=dtype), seeded(1, ask.sample, model, dtype=dtype),
                                dtype, "samples")  # fmt: skip
        if float32_gradients_to_truth and dtype == torch.float32:
            assert_gradients_as_accurate(model, twin, x, ask.log_prob)
            return twin, report
        xa, xb = leaf(x), leaf(x)
        ask.log_prob(model, xa).sum().backward()
        ask.log_prob(twin, xb).sum().backward()
    assert_same_gradients(model, twin, xa, xb, dtype)
    return twin, report


def check_compiled_like_the_library(model, run: Callable, x: torch.Tensor, backend: str, library: str) -> None:
    """torch.compile(fullgraph=True) of run(accelerated model, x) computes run(model, x), where the library's own
    model compiles (else the test skips, saying so)."""
    if backend not in BACKENDS:
        pytest.skip(f"{backend} does not run here")
    twin, _ = accelerated_copy(model, backend)  # before the library's runs below (pyro's transforms cache them)
    if not compiles_fullgraph(run, model, x):
        pytest.skip(f"{library}'s own model does not compile with fullgraph=True")
    torch._dynamo.reset()
    compiled = torch.compile(run, fullgraph=True, backend="aot_eager")
    assert_same_results(compiled(twin, x), run(model, x), x.dtype, "compiled")
