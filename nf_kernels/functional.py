"""The functional API of SPEC section 1: `affine_coupling`, `additive_coupling` and `spline_coupling`."""

from __future__ import annotations

import torch

from . import _ops
from ._arguments import check_coupling_args
from ._masks import MaskArg
from ._dispatch import resolve_backend, resolve_spline_backend
from ._prepared import prepare_call
from ._spline_arguments import check_spline_args


def affine_coupling(
    x: torch.Tensor,
    h: torch.Tensor,
    *,
    mask: MaskArg = "half",
    flip: bool = False,
    scale: str = "exp",
    clamp: float = 2.0,
    shift_first: bool = False,
    reverse: bool = False,
    backend: str = "auto",
    h_layout: str = "scale_shift",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The affine (RealNVP) coupling and its per-sample log-determinant, in one fused pass.

    Kept elements pass through. Each transformed element ``k`` becomes

        y[k] = x[k] * exp(a(s[k])) + t[k]        (shift_first: y[k] = (x[k] + t[k]) * exp(a(s[k])))
        logdet[b] = sum over transformed k of a(s[k])

    where ``s`` and ``t`` are the two halves of ``h`` along dim 1 and ``a`` is the ``scale`` map. ``reverse=True``
    computes the inverse with the same ``h`` (``x = (y - t) * exp(-a(s))``, ``logdet = -sum a(s)``). Differentiable
    in ``x`` and ``h`` (first order), through a fused backward. The full contract is docs/spec.md, section 1.

    Args:
        x: ``[B, *sample]``, at least 2-D; float32, float16, bfloat16 or float64; any strides, any device a backend
            runs on. ``B`` may be 0.
        h: the conditioner's output: ``s_raw`` and ``t`` along dim 1 as `h_layout` says, on ``x``'s device, any
            supported floating dtype (autocast may make it lower precision than ``x``). Shape, for ``x`` of shape
            ``[B, C, ...]``: ``mask="half"``: ``[B, 2 * (C - C // 2), ...]``; ``"checkerboard"`` or a bool mask:
            ``[B, 2 * C, ...]`` (values at kept positions are ignored); with a bool mask, or compact: only the ``T``
            transformed elements in flat order, any ``[B, 2K, *r]`` with ``K * prod(r) = T`` (the peer libraries'
            conditioners), told apart by its shape.
        mask: which elements are kept. ``"half"`` (default): the first ``C // 2`` entries of dim 1 (features of
            ``[B, D]`` vectors, or channels); ``"checkerboard"``: ``x`` is ``[B, C, H, W]`` and ``(c, i, j)`` is kept
            where ``(i + j) % 2 == 1``; or a bool tensor of shape ``x.shape[1:]``, True where kept.
        flip: swap kept and transformed elements (``"half"``: the last ``C // 2`` are kept). Default False;
            alternate it between layers so every element is transformed.
        scale: the map ``a`` from ``s_raw`` to the log-scale: ``"exp"`` (default, ``a(s) = s``), ``"tanh"``
            (``clamp * tanh(s / clamp)``), ``"atan"`` (``clamp * 2/pi * atan(s / clamp)``) or ``"sigmoid"``
            (``log sigmoid(s + 2)``, Glow); or a peer library's own: ``"rsigmoid"`` (``-log sigmoid(s + 2)``,
            normflows), ``"nflows_sigmoid"`` (``log(sigmoid(s + 2) + 1e-3)``), ``"softclamp"``
            (``s / (1 + |s| / clamp)``, zuko), ``"clip"`` (``s`` clamped to ``clamp=(low, high)``, the gradient
            passed through: pyro), ``"freia_atan"``, ``"freia_tanh"``, ``"freia_sigmoid"`` (``clamp * f(s)``,
            FrEIA). docs/spec.md has each formula and derivative. The additive coupling is
            :func:`additive_coupling`.
        clamp: the bound of the maps that take one, a finite float > 0 (for ``"clip"``: ``(low, high)``, or ``c``
            for ``(-c, c)``). Default 2.0.
        shift_first: ``(x + t) * exp(a(s))`` instead of ``x * exp(a(s)) + t``. Default False.
        reverse: compute the inverse. Default False.
        backend: ``"auto"`` (default: the fastest available for ``x``'s device; ``NF_KERNELS_BACKEND`` overrides
            it), ``"reference"``, ``"triton"``, ``"cuda"`` or ``"cpu"``. :func:`nf_kernels.list_backends` says which
            run here. A backend whose kernels lack the call's scale map, layout or compact ``h`` refuses it; "auto"
            picks one that has them.
        h_layout: where ``s_raw`` and ``t`` sit along dim 1 of ``h``, ``K`` channels each: ``"scale_shift"``
            (default; ``[s_raw | t]``), ``"shift_scale"`` (``[t | s_raw]``, nflows and pyro) or
            ``"shift_scale_pairs"`` (channel ``2c`` is ``t``, ``2c + 1`` is ``s_raw``: normflows and zuko). Read in
            place, no copy.

    Returns:
        ``(y, logdet)``: ``y`` of ``x``'s shape, dtype and device, contiguous, never an alias of an input;
        ``logdet`` of shape ``[B]``, float32 for half-precision ``x``, else ``x``'s dtype, bitwise reproducible.

    Raises:
        ValueError or TypeError for the bad inputs of docs/spec.md's error table (shapes, dtypes, devices, names);
        RuntimeError when the requested backend cannot run here, saying why and what would.

    >>> x = torch.randn(8, 6)
    >>> h = torch.randn(8, 6)          # s and t for the 3 transformed features
    >>> y, logdet = affine_coupling(x, h, scale="tanh")
    >>> x_back, minus_logdet = affine_coupling(y, h, scale="tanh", reverse=True)
    >>> torch.allclose(x_back, x, atol=1e-5), torch.allclose(minus_logdet, -logdet)
    (True, True)
    """
    return _coupling(x, h, mask, flip, scale, clamp, shift_first, reverse, backend, False, h_layout)


def additive_coupling(
    x: torch.Tensor,
    t: torch.Tensor,
    *,
    mask: MaskArg = "half",
    flip: bool = False,
    reverse: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The additive (NICE) coupling: transformed elements become ``x + t`` (``x - t`` with ``reverse``).

    The log-determinant is 0, returned for symmetry with :func:`affine_coupling`. Differentiable in ``x`` and ``t``.

    Args:
        x: ``[B, *sample]``, at least 2-D; float32, float16, bfloat16 or float64; any strides.
        t: the shift, on ``x``'s device, any supported floating dtype. Shape, for ``x`` of shape ``[B, C, ...]``:
            ``mask="half"``: ``[B, C - C // 2, ...]``; ``"checkerboard"`` or a bool mask: ``x``'s shape (values at
            kept positions are ignored).
        mask, flip, reverse, backend: as in :func:`affine_coupling`.

    Returns:
        ``(y, logdet)``: ``y`` like ``x`` (contiguous); ``logdet`` zeros of shape ``[B]`` (float32 for
        half-precision ``x``, else ``x``'s dtype).

    >>> x = torch.randn(4, 5)
    >>> y, logdet = additive_coupling(x, torch.ones(4, 3))   # 5 - 5 // 2 = 3 transformed features
    >>> torch.equal(y[:, 2:], x[:, 2:] + 1), torch.equal(y[:, :2], x[:, :2]), logdet.abs().sum().item()
    (True, True, 0.0)
    """
    return _coupling(x, t, mask, flip, None, 1.0, False, reverse, backend, True, "scale_shift")


def spline_coupling(
    x: torch.Tensor,
    params: torch.Tensor,
    *,
    mask: MaskArg = "half",
    flip: bool = False,
    bins: int = 8,
    bound: float = 3.0,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
    reverse: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rational-quadratic spline coupling (neural spline flows) and its per-sample log-determinant.

    Kept elements pass through. Each transformed element goes through its own monotonic rational-quadratic spline
    of ``bins`` bins on ``[-bound, bound]`` (identity outside: linear tails), made from its ``3 * bins - 1``
    unconstrained parameters exactly as nflows' ``unconstrained_rational_quadratic_spline(tails="linear")`` does:
    ``bins`` widths and ``bins`` heights (softmax, then at least ``min_bin_width`` / ``min_bin_height``) and
    ``bins - 1`` interior derivatives (``min_derivative + softplus``; 1 at both ends). ``logdet[b]`` sums
    ``log dy/dx`` over the transformed elements. ``reverse=True`` computes the inverse with the same ``params``
    (the stable root of the quadratic) and the negated log-det. Differentiable in ``x`` and ``params`` (first
    order). The full contract is docs/spec.md, section 1b.

    Args:
        x: ``[B, *sample]``, at least 2-D; float32, float16, bfloat16 or float64; any strides. ``B`` may be 0.
        params: the conditioner's output, on ``x``'s device, any supported floating dtype. Shape, for ``x`` of
            shape ``[B, C, ...]`` and ``P = 3 * bins - 1``: ``mask="half"``: ``[B, (C - C // 2) * P, ...]``;
            ``"checkerboard"`` or a bool mask: ``[B, C * P, ...]`` (values at kept positions are ignored).
            Parameter ``j`` of an element of channel ``c`` sits at dim-1 index ``c * P + j``: ``j < bins`` widths,
            then ``bins`` heights, then ``bins - 1`` derivatives (``params.view(B, C_t, P, ...)``, as nflows).
        mask, flip, reverse, backend: as in :func:`affine_coupling` (a backend without spline kernels refuses the
            call; "auto" picks one that has them).
        bins: the number of bins ``K >= 1``. Default 8.
        bound: the spline's interval ``[-bound, bound]``, a finite float > 0. Default 3.0.
        min_bin_width, min_bin_height: the smallest bin, as a fraction of the interval (``>= 0``, times ``bins``
            below 1). Default 1e-3.
        min_derivative: the smallest derivative at an interior knot, > 0. Default 1e-3.

    Returns:
        ``(y, logdet)`` as for :func:`affine_coupling`.

    >>> x = torch.randn(8, 6, dtype=torch.float64)
    >>> params = torch.randn(8, 3 * 23, dtype=torch.float64)  # 3 transformed features, 3 * 8 - 1 = 23 each
    >>> y, logdet = spline_coupling(x, params)
    >>> x_back, minus_logdet = spline_coupling(y, params, reverse=True)
    >>> torch.allclose(x_back, x), torch.allclose(minus_logdet, -logdet)
    (True, True)

    (In float32 a round trip is exact only to the spline's conditioning: where a bin is nearly flat, the inverse
    multiplies y's rounding error by the inverse slope.)
    """
    mask_tensor, config = check_spline_args(
        x, params, mask=mask, flip=flip, bins=bins, bound=bound, min_bin_width=min_bin_width,
        min_bin_height=min_bin_height, min_derivative=min_derivative, reverse=reverse, backend=backend,
    )  # fmt: skip
    backend = resolve_spline_backend(backend, x.device, config.bins)  # its errors, under a transform too
    if _ops.under_function_transform():
        return _ops.reference_spline_coupling(x, params, mask_tensor, config)
    return _ops.spline_coupling_op(x, params, mask_tensor, *config, backend)


def _coupling(x, h, mask, flip, scale, clamp, shift_first, reverse, backend, additive, h_layout):
    """Both ops: check the arguments, pick the backend (one that supports the call), hand the call to the op layer.

    A plain eager call is checked once per combination of shapes and options (nf_kernels/_prepared.py) and may
    take the backend's own differentiable op; anything traced or unusual is checked in full and goes through the
    custom op (nf_kernels/_ops.py says why), but for a call under a torch.func transform, which computes the
    reference formulas (:func:`~nf_kernels._ops.under_function_transform`).
    """
    if not _ops.runs_eagerly(x, h):
        mask_tensor, config = check_coupling_args(
            x, h, mask=mask, flip=flip, reverse=reverse, backend=backend, additive=additive, scale=scale,
            clamp=clamp, shift_first=shift_first, h_layout=h_layout,
        )  # fmt: skip
        backend = resolve_backend(backend, x.device, config)  # its errors, under a transform too
        if _ops.under_function_transform():
            return _ops.reference_coupling(x, h, mask_tensor, config)
        return _ops.coupling_op(x, h, mask_tensor, *config, backend)
    prepared = prepare_call(x, h, mask, flip, scale, clamp, shift_first, reverse, backend, additive, h_layout)
    return _ops.eager_coupling(x, h, mask, prepared, resolve_backend(backend, x.device, prepared.config))


def coupling_backward(grad_y, grad_logdet, x, h, mask, flip, backend, *, additive=False, scale=None, clamp=1.0,
                      shift_first=False, h_layout="scale_shift"):  # fmt: skip
    """(grad_x, grad_h) of the forward coupling at `x` with these options, for callers that differentiate by hand
    outside any graph (memory-saving backprop, a recomputed conditioner). Checked as :func:`_coupling` checks the
    forward: once per combination in a plain eager call, with no custom-op dispatch; in full through the custom op
    otherwise. The options are :func:`~nf_kernels._arguments.check_coupling_args`' (and its defaults)."""
    if not _ops.runs_eagerly(x, h):
        mask_tensor, config = check_coupling_args(
            x, h, mask=mask, flip=flip, reverse=False, backend=backend, additive=additive, scale=scale, clamp=clamp,
            shift_first=shift_first, h_layout=h_layout,
        )  # fmt: skip
        return _ops.coupling_backward_op(grad_y, grad_logdet, x, h, mask_tensor, *config,
                                         resolve_backend(backend, x.device, config))  # fmt: skip
    prepared = prepare_call(x, h, mask, flip, scale, clamp, shift_first, False, backend, additive, h_layout)
    return _ops.eager_coupling_backward(grad_y, grad_logdet, x, h, mask, prepared,
                                        resolve_backend(backend, x.device, prepared.config))  # fmt: skip
