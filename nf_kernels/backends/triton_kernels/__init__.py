"""The "triton" backend: fused Triton kernels for the coupling forward, inverse and backward.

Runs on CUDA devices, and on CPU tensors under the Triton interpreter (TRITON_INTERPRET=1, set before
nf_kernels is first used), which is how the CPU test suite checks these kernels.
"""

from __future__ import annotations

import contextlib
import os
from typing import Optional

import torch

from ..._layout import flat_layout, spline_flat_layout
from .backward import launch_backward
from .forward import launch_forward
from .spline_backward import launch_spline_backward
from .spline_forward import launch_spline_forward


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _on_device(device: torch.device):
    """Triton launches on the current CUDA device and its current stream, whatever the tensors' device: make
    that the tensors' device (the CUDA extension does the same with a device guard)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _aligned(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` contiguous and 16-byte aligned. Triton compiles another variant for a pointer that is not (a view
    at an odd offset), with narrower loads and so, possibly, another order of the log-det's additions: a copy keeps
    the log-det's bits a function of the values and shapes alone, and the loads 128-bit."""
    tensor = tensor.contiguous()
    return tensor if tensor.data_ptr() % 16 == 0 else tensor.clone()


class TritonBackend:
    name = "triton"
    eager_coupling = None  # eager calls take the custom op too
    eager_mlp_coupling = None

    def why_unavailable(self, device: torch.device) -> Optional[str]:
        if device.type == "cuda":
            return None if torch.cuda.is_available() else "torch reports no usable CUDA device"
        if device.type == "cpu":
            if _interpreting():
                return None
            return (
                "Triton compiles for GPUs; CPU tensors run only under the Triton interpreter "
                "(set TRITON_INTERPRET=1 before importing nf_kernels; slow, meant for tests)"
            )
        return f"Triton kernels do not run on {device.type} devices"

    def why_unsupported(self, scale, h_layout, mask_kind):
        return None  # every scale map, h layout and mask of the SPEC

    def forward(self, x, h, mask, config):
        with _on_device(x.device):
            x, h = _aligned(x), _aligned(h)
            return launch_forward(x, h, flat_layout(x, mask, config, h.shape))

    def backward(self, grad_y, grad_logdet, x, h, mask, config):
        with _on_device(x.device):
            x, h = _aligned(x), _aligned(h)
            layout = flat_layout(x, mask, config, h.shape)
            return launch_backward(_aligned(grad_y), grad_logdet.contiguous(), x, h, layout)

    def spline_forward(self, x, params, mask, config):
        with _on_device(x.device):
            x, params = _aligned(x), _aligned(params)
            return launch_spline_forward(x, params, spline_flat_layout(x, mask, config))

    def spline_backward(self, grad_y, grad_logdet, x, params, mask, config):
        with _on_device(x.device):
            x, params = _aligned(x), _aligned(params)
            layout = spline_flat_layout(x, mask, config)
            return launch_spline_backward(_aligned(grad_y), grad_logdet.contiguous(), x, params, layout)


BACKEND = TritonBackend()
