"""The "cpu" and "cuda" backends: fused kernels of the C++/CUDA extension ``nf_kernels._C``.

Both call the extension's ops, ``torch.ops.nf_kernels_ext.coupling_forward`` / ``coupling_backward``, with
the flat description of the coupling computed here once (:func:`nf_kernels._layout.flat_layout`): the C++ side
never re-derives a mask. The dispatcher picks the CPU kernels (OpenMP-parallel, vectorized, csrc/cpu) or the
CUDA kernels (csrc/cuda) from the tensors' device.

Fake implementations of the extension's raw ops are registered here so tracing (``torch.compile``,
``torch.library.opcheck``) works on them; their autograd is the public custom op's, registered once in
:mod:`nf_kernels._ops`. Plain eager calls take a shorter way (:meth:`ExtensionBackend.eager_coupling`): the
extension's differentiable op ``nf_kernels_ext::coupling``, the same two kernels behind a C++ autograd node
(csrc/ops/autograd.cpp). When the extension is not built, importing this module still works and both backends
say why they are unavailable.

    >>> import torch
    >>> from nf_kernels.backends.extension import CPU_BACKEND
    >>> CPU_BACKEND  # doctest: +SKIP
    ExtensionBackend('cpu', kernels='avx512')
"""

from __future__ import annotations

import functools
from typing import Optional

import torch

from .._arguments import logdet_dtype
from .._build import load
from .._layout import H_LAYOUT_FIELDS, FlatLayout, flat_layout, spline_flat_layout, transformed_elements
from .._outputs import poisoning
from .._prepared import PreparedCall

_module, _why_not_loaded = load()


@functools.lru_cache(maxsize=None)
def kernel_codes(kind: str) -> tuple[str, ...]:
    """The scale maps, patterns or layout fields ("scale", "pattern", "layout") this build of the extension
    compiles in (csrc/coupling_layout.h): a prefix of nf_kernels/_layout.py's lists, so what it lacks it does not
    support."""
    return tuple(torch.ops.nf_kernels_ext.kernel_codes(kind))


def _op_arguments(layout: FlatLayout) -> tuple:
    """The arguments both extension ops take after their tensors (csrc/ops/schema.cpp): the mask, the packed
    layout, the clamp, the lower bound of "clip" and a compact h's table of positions."""
    return layout.transformed, layout.packed(), layout.clamp, layout.clamp_low, layout.h_index


# What a call needs of the extension that its kernel-code lists can lack, by mask kind: the pattern it reduces to
# (nf_kernels/_layout.flat_layout) when that is newer than the first three.
_MASK_PATTERNS = {"compact": "gather"}


if _module is not None:
    _differentiable_op = torch.ops.nf_kernels_ext.coupling.default
    _mlp_coupling_op = torch.ops.nf_kernels_ext.mlp_coupling.default
    _mlp_coupling_step_op = torch.ops.nf_kernels_ext.mlp_coupling_rebuilt_backward.default

    @torch.library.register_fake("nf_kernels_ext::coupling_forward")
    def _coupling_forward_fake(x, h, transformed, layout, clamp, clamp_low=0.0, h_index=None, poison=False,
                               h_bias=None):
        y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        return y, x.new_empty(x.shape[0], dtype=logdet_dtype(x.dtype))

    @torch.library.register_fake("nf_kernels_ext::coupling_backward")
    def _coupling_backward_fake(grad_y, grad_logdet, x, h, transformed, layout, clamp, clamp_low=0.0, h_index=None,
                                poison=False, h_bias=None):
        grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        return grad_x, torch.empty(h.shape, dtype=h.dtype, device=h.device)

    @torch.library.register_fake("nf_kernels_ext::spline_forward")
    def _spline_forward_fake(
        x, params, transformed, layout, bound, min_bin_width, min_bin_height, min_derivative, poison=False
    ):
        y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        return y, x.new_empty(x.shape[0], dtype=logdet_dtype(x.dtype))

    @torch.library.register_fake("nf_kernels_ext::spline_backward")
    def _spline_backward_fake(
        grad_y, grad_logdet, x, params, transformed, layout, bound, min_bin_width, min_bin_height, min_derivative,
        poison=False,
    ):
        grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        return grad_x, torch.empty(params.shape, dtype=params.dtype, device=params.device)


def spline_max_bins() -> int:
    """The most bins this build's spline kernels take (csrc/spline_layout.h's kMaxSplineBins)."""
    return int(kernel_codes("spline_max_bins")[0])


def _spline_op_arguments(x: torch.Tensor, mask: Optional[torch.Tensor], config) -> tuple:
    """The arguments both extension spline ops take after their tensors (csrc/ops/schema.cpp): the mask, the packed
    spline layout and the spline's four floats."""
    layout = spline_flat_layout(x, mask, config)
    return (layout.transformed, layout.packed(), *layout.floats())


def _has_kernel(device_type: str) -> bool:
    key = {"cpu": "CPU", "cuda": "CUDA"}[device_type]
    return torch._C._dispatch_has_kernel_for_dispatch_key("nf_kernels_ext::coupling_forward", key)


class ExtensionBackend:
    """One device type's kernels of the extension, behind the Backend protocol (nf_kernels/backends/base.py)."""

    def __init__(self, name: str, device_type: str):
        self.name = name
        self.device_type = device_type

    def __repr__(self) -> str:
        if _module is None:
            return f"ExtensionBackend({self.name!r}, not built)"
        detail = f", kernels={torch.ops.nf_kernels_ext.cpu_isa()!r}" if self.device_type == "cpu" else ""
        return f"ExtensionBackend({self.name!r}{detail})"

    def why_unavailable(self, device: torch.device) -> Optional[str]:
        if _module is None:
            return _why_not_loaded
        if device.type != self.device_type:
            return f"the {self.name!r} backend runs on {self.device_type} tensors only"
        if not _has_kernel(self.device_type):
            return "the extension was built without CUDA kernels (torch without CUDA, or no nvcc, at build time)"
        if self.device_type == "cuda" and not torch.cuda.is_available():
            return "torch reports no usable CUDA device"
        return None

    def why_unsupported(self, scale, h_layout, mask_kind):
        if _module is None:
            return None  # unavailable anyway: why_unavailable says why
        missing = []
        if scale not in kernel_codes("scale"):
            missing.append(f"scale={scale!r}")
        if not set(H_LAYOUT_FIELDS[h_layout]) <= set(kernel_codes("layout")):
            missing.append(f"h_layout={h_layout!r}")
        pattern = _MASK_PATTERNS.get(mask_kind)
        if pattern is not None and pattern not in kernel_codes("pattern"):
            missing.append("a bool mask with a compact h")
        if not missing:
            return None
        return f"backend {self.name!r} does not support {' or '.join(missing)} yet"

    def forward(self, x, h, mask, config):
        layout = flat_layout(x, mask, config, h.shape)
        return torch.ops.nf_kernels_ext.coupling_forward(x, h, *_op_arguments(layout), poison=poisoning())

    def backward(self, grad_y, grad_logdet, x, h, mask, config):
        layout = flat_layout(x, mask, config, h.shape)
        return torch.ops.nf_kernels_ext.coupling_backward(
            grad_y, grad_logdet, x, h, *_op_arguments(layout), poison=poisoning()
        )

    def spline_why_unsupported(self, bins: int) -> Optional[str]:
        """None when this build's spline kernels take `bins` bins, else why not (more than they are compiled for)."""
        if _module is not None and bins > spline_max_bins():
            return f"backend {self.name!r} supports at most {spline_max_bins()} bins, got bins={bins}"
        return None

    def spline_forward(self, x, params, mask, config):
        return torch.ops.nf_kernels_ext.spline_forward(
            x, params, *_spline_op_arguments(x, mask, config), poison=poisoning()
        )

    def spline_backward(self, grad_y, grad_logdet, x, params, mask, config):
        return torch.ops.nf_kernels_ext.spline_backward(
            grad_y, grad_logdet, x, params, *_spline_op_arguments(x, mask, config), poison=poisoning()
        )

    def eager_coupling(self, x, h, mask: Optional[torch.Tensor], prepared: PreparedCall):
        """(y, logdet) of a plain eager call, differentiable through the extension's own C++ autograd node.

        Only what depends on the bool mask's contents is computed here (they may have changed since the last call):
        its pattern, or for a compact h the whole layout; otherwise the layout is the prepared one. Outputs are
        poisoned under poison_outputs() at the forward call, the gradients too (the node remembers it).
        """
        config = prepared.config
        if prepared.layout is None:  # a compact h: its positions come from the mask's contents
            layout = flat_layout(x, mask, config, h.shape)
            return _differentiable_op(x, h, *_op_arguments(layout), poisoning())
        transformed = None if mask is None else transformed_elements(mask, config.flip)
        return _differentiable_op(x, h, transformed, prepared.layout, config.clamp, config.clamp_low, None, poisoning())

    def eager_mlp_coupling(self, x, layers, kept_start: int, kept_count: int, prepared: PreparedCall):
        """(y, logdet) of a coupling layer whose MLP conditioner (``layers = [W_1, b_1, ...]``) reads the features
        ``[kept_start, kept_start + kept_count)`` of the vector batch `x`, as one C++ autograd node (the "half" mask:
        no mask tensor). nf_kernels/flows/fused_coupling_layer.py decides when a layer takes it."""
        config = prepared.config
        return _mlp_coupling_op(x, layers, kept_start, kept_count, None, prepared.layout, config.clamp,
                                config.clamp_low, poisoning())  # fmt: skip

    def eager_mlp_coupling_rebuilt_backward(self, input, grad_y, grad_logdet, layers, layer_needs_grad,
                                            kept_start: int, kept_count: int, prepared: PreparedCall,
                                            inverse: Optional[PreparedCall]):  # fmt: skip
        """A rebuilt backward's step through that layer, outside any graph: ``(x, grad_x, the gradients of the
        layers flagged in layer_needs_grad)``. With `inverse` (the reverse call's), `input` is the layer's output and
        x is rebuilt (memory-saving backprop); without it, `input` is x (a recomputed conditioner). `prepared` is the
        forward call's."""
        config = prepared.config
        return _mlp_coupling_step_op(input, grad_y, grad_logdet, layers, [int(n) for n in layer_needs_grad],
                                     kept_start, kept_count, None, prepared.layout,
                                     None if inverse is None else inverse.layout, config.clamp, config.clamp_low,
                                     poisoning())  # fmt: skip


CPU_BACKEND = ExtensionBackend("cpu", "cpu")
CUDA_BACKEND = ExtensionBackend("cuda", "cuda")
