"""The op-layer overhead case: what the layers between ``nf_kernels.affine_coupling`` and the extension's kernel
cost per call, timed apart on one backend ("cpu" or "cuda", the extension's).

Per shape (cases.OVERHEAD_SHAPES), each of these calls is timed on its own:

* ``raw forward`` / ``raw backward``: the extension's raw ops, ``torch.ops.nf_kernels_ext.coupling_forward`` and
  ``coupling_backward``, with a layout computed beforehand: the kernel launch and nothing else.
* ``autograd op forward+backward``: the extension's differentiable op ``nf_kernels_ext::coupling`` called
  directly, then ``torch.autograd.grad`` through it: both kernels plus the autograd engine, no Python layer. The
  floor of any differentiable call.
* ``public forward, no grad``, ``public forward`` (inputs that require grad) and ``public forward+backward``: the
  public function, as users call it, the last followed by ``torch.autograd.grad`` of both outputs.

The overheads are the public calls' time over the raw kernels' (forward: over the raw forward; forward+backward:
over the raw forward plus the raw backward), and over the autograd op (what the Python layers add to the engine).

On the CPU every stage runs on one thread and is timed by that thread's CPU time, the fastest of its blocks of
calls (timing.fastest_cpu_block_seconds), not the median wall time: the overheads are differences of a few
microseconds, and on a shared machine wall time also counts the turns other processes take on the core (seen to
double a 10 us call). On one thread all the work of a call, the autograd engine's included, runs on the calling
thread, so nothing is left out. With rounds, each stage keeps its fastest round.

    >>> from nf_kernels.benchmarking.cases import overhead_cases
    >>> from nf_kernels.benchmarking.timing import TimingBudget
    >>> (result,) = run_overhead("cpu", overhead_cases([(256, 2)]), budget=TimingBudget(min_run_time_s=0.01))
    >>> result  # doctest: +ELLIPSIS
    OverheadResult(affine half fp32 [256, 2] cpu: fwd+bwd ... us over the raw kernels)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import torch

import nf_kernels

from .._arguments import logdet_dtype
from .._dispatch import why_unavailable
from .._layout import flat_layout
from .cases import OverheadCase
from .timing import TimingBudget, fastest_cpu_block_seconds, median_seconds
from ..progress import progress_bar

RAW_FORWARD, RAW_BACKWARD = "raw forward", "raw backward"
AUTOGRAD_OP = "autograd op forward+backward"
PUBLIC_NO_GRAD, PUBLIC_FORWARD, PUBLIC_FORWARD_BACKWARD = (
    "public forward, no grad", "public forward", "public forward+backward",
)  # fmt: skip
STAGES = (RAW_FORWARD, RAW_BACKWARD, AUTOGRAD_OP, PUBLIC_NO_GRAD, PUBLIC_FORWARD, PUBLIC_FORWARD_BACKWARD)


@dataclass
class OverheadResult:
    """Every stage's median time of one call, in seconds (None when it was not measured); `error` says why not."""

    case: OverheadCase
    backend: str
    seconds: dict = field(default_factory=dict)  # stage -> seconds
    error: Optional[str] = None

    def _difference(self, stage: str, *minus: str) -> Optional[float]:
        values = [self.seconds.get(name) for name in (stage, *minus)]
        return None if None in values else values[0] - sum(values[1:])

    @property
    def forward_no_grad_overhead(self) -> Optional[float]:
        return self._difference(PUBLIC_NO_GRAD, RAW_FORWARD)

    @property
    def forward_overhead(self) -> Optional[float]:
        return self._difference(PUBLIC_FORWARD, RAW_FORWARD)

    @property
    def forward_backward_overhead(self) -> Optional[float]:
        return self._difference(PUBLIC_FORWARD_BACKWARD, RAW_FORWARD, RAW_BACKWARD)

    @property
    def python_layer_overhead(self) -> Optional[float]:
        """The public forward+backward over the autograd op called directly: the Python layers' share."""
        return self._difference(PUBLIC_FORWARD_BACKWARD, AUTOGRAD_OP)

    def to_dict(self) -> dict:
        return {
            "case": self.case.label(), "shape": list(self.case.shape), "dtype": self.case.dtype,
            "backend": self.backend, "seconds": dict(self.seconds), "error": self.error,
            "forward_no_grad_overhead_s": self.forward_no_grad_overhead, "forward_overhead_s": self.forward_overhead,
            "forward_backward_overhead_s": self.forward_backward_overhead,
            "python_layer_overhead_s": self.python_layer_overhead,
        }  # fmt: skip

    def __repr__(self) -> str:
        overhead = self.forward_backward_overhead
        outcome = f"fwd+bwd {overhead * 1e6:.3g} us over the raw kernels" if overhead is not None else (
            f"failed: {self.error}")  # fmt: skip
        return f"OverheadResult({self.case.label()} {self.backend}: {outcome})"


def extension_backend(device: torch.device) -> str:
    """The extension's backend for the device type: "cpu" or "cuda"."""
    return "cuda" if device.type == "cuda" else "cpu"


def stage_calls(case: OverheadCase, device: torch.device, backend: str) -> dict[str, Callable[[], object]]:
    """One callable per stage, on the case's inputs (built once, outside the timed calls)."""
    from ..backends.extension import _op_arguments  # the extension is only imported for this case

    x, h = case.inputs(device)
    config = case.config
    generator = torch.Generator(device=device).manual_seed(1)
    grad_y = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    grad_logdet = torch.randn(x.shape[0], generator=generator, device=device, dtype=logdet_dtype(x.dtype))
    raw = _op_arguments(flat_layout(x, None, config))
    xg, hg = x.clone().requires_grad_(True), h.clone().requires_grad_(True)
    ops = torch.ops.nf_kernels_ext

    def public(x_in, h_in):
        return nf_kernels.affine_coupling(x_in, h_in, mask="half", scale=config.scale, clamp=config.clamp,
                                          backend=backend)  # fmt: skip

    def no_grad():
        with torch.no_grad():
            return public(x, h)

    def differentiated(forward):
        def call():
            return torch.autograd.grad(forward(), (xg, hg), (grad_y, grad_logdet))

        return call

    return {
        RAW_FORWARD: lambda: ops.coupling_forward(x, h, *raw),
        RAW_BACKWARD: lambda: ops.coupling_backward(grad_y, grad_logdet, x, h, *raw),
        AUTOGRAD_OP: differentiated(lambda: ops.coupling(xg, hg, *raw)),
        PUBLIC_NO_GRAD: no_grad,
        PUBLIC_FORWARD: lambda: public(xg, hg),
        PUBLIC_FORWARD_BACKWARD: differentiated(lambda: public(xg, hg)),
    }


def _seconds(call: Callable[[], object], device: torch.device, budget: TimingBudget) -> float:
    if device.type == "cpu":
        return fastest_cpu_block_seconds(call, budget)
    return median_seconds(call, device, budget)


def run_overhead(
    device: Union[str, torch.device],
    cases: Sequence[OverheadCase],
    *,
    budget: TimingBudget = TimingBudget(),
    rounds: int = 1,
    progress: bool = False,
) -> list[OverheadResult]:
    """Time every stage of every case on the device's extension backend. With `rounds > 1` the stages of a case
    are measured in turn that many times and each keeps its fastest round: the overheads are differences of small
    times, and a burst of other work on a shared machine only ever adds to a time. Without the extension, each
    result says why in `error`."""
    device = torch.device(device)
    backend = extension_backend(device)
    reason = why_unavailable(backend, device)
    results = [OverheadResult(case, backend, error=reason) for case in cases]
    if reason is not None:
        return results
    bar = progress_bar(len(cases) * len(STAGES) * rounds, f"op-layer overhead on {device.type}", progress)
    for result in results:
        calls = stage_calls(result.case, device, backend)
        for _ in range(rounds):
            for stage, call in calls.items():
                bar.set_postfix_str(f"{result.case.label()} {stage}")
                seconds = _seconds(call, device, budget)
                result.seconds[stage] = min(seconds, result.seconds.get(stage, seconds))
                bar.update()
    bar.close()
    return results
