"""The optimizer ``nf-kernels train`` steps with: Adam, run by torch's fused kernel where torch has one for the
parameters' device.

Without being asked, torch runs Adam on the CPU one parameter at a time, as about ten elementwise passes over each
parameter and its two moment buffers; the fused kernel reads each of them once and writes them once. Its updates are
the default's to rounding (it orders the arithmetic its own way; tests/test_training.py checks it). On the issue's
RealNVPs (one thread, AVX-512 Xeon) one Adam step took 5.6 ms with torch's default against 1.1 ms fused for D=4096's
1.6M parameters, and 1.8 against 0.36 ms at D=64: 10% and 24% of the whole training step. ``python
benchmarks/training_step.py --optimizer fused-adam`` times the peers' models with it too.
"""

from __future__ import annotations

from typing import Iterable

import torch

# Where torch 2.x has a fused Adam kernel; asked of torch when it says (a private helper, so not relied on).
_FUSED_DEVICES_FALLBACK = ("cpu", "cuda")


def _fused_devices() -> tuple[str, ...]:
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        return tuple(_get_fused_kernels_supported_devices())
    except (ImportError, AttributeError):
        return _FUSED_DEVICES_FALLBACK


def takes_fused_adam(parameters: Iterable[torch.Tensor]) -> bool:
    """Whether torch's fused Adam runs `parameters`: floating-point tensors, all on one device type that has the
    kernel (the CPU and CUDA among them).

    >>> takes_fused_adam([torch.zeros(2), torch.zeros(3, dtype=torch.float64)])
    True
    >>> takes_fused_adam([])
    False
    """
    parameters = list(parameters)
    types = {p.device.type for p in parameters}
    return (len(types) == 1 and types <= set(_fused_devices())
            and all(p.is_floating_point() for p in parameters))  # fmt: skip


def make_adam(parameters: Iterable[torch.Tensor], lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """``torch.optim.Adam(parameters, lr, weight_decay=weight_decay)``, fused where :func:`takes_fused_adam`.

    >>> model = torch.nn.Linear(3, 2)
    >>> make_adam(model.parameters(), lr=1e-3).defaults["fused"]
    True
    """
    parameters = list(parameters)
    return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay, fused=takes_fused_adam(parameters) or None)
