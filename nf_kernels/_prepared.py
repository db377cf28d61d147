"""What an eager coupling call needs that depends only on shapes, dtypes, devices and options, worked out once per
combination: the validated :class:`~nf_kernels._arguments.CouplingConfig` and the packed flat layout.

A training loop calls each layer with the same shapes thousands of times, and the checks and the flat layout give
the same answer every time. So the first call of a combination runs every check of
:func:`~nf_kernels._arguments.check_coupling_args` (raising the SPEC's errors) and remembers the outcome under a key
holding everything those checks read; a later call with the same key is known to pass them all and finds its
config and layout in one dict lookup. A call that fails is never remembered, so it fails every time.

The key holds the shapes, dtypes and devices of ``x`` and ``h``, the mask name (for a bool mask its shape, dtype and
device: never its identity or its contents, which a caller may change in place; the per-element pattern is read
from the mask on every call), and the options, ``clamp`` with its type (as keys ``True == 1.0``, but ``True`` is
not a valid clamp). Backend resolution is not part of it: ``_dispatch`` caches that on its own terms.

Under tracing (``torch.compile``) the functional API checks in full instead, so nothing here is traced.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from ._arguments import CouplingConfig, check_coupling_args
from ._layout import flat_layout

# Bounds the memory a program that calls with ever new shapes can tie up; a full cache starts over.
MAX_ENTRIES = 4096


class PreparedCall(NamedTuple):
    config: CouplingConfig
    layout: Optional[tuple[int, ...]]  # FlatLayout.packed() (None for a compact h): the extension ops' `layout`
    empty: bool  # no sample, or no element in a sample: nothing for a kernel to do


_prepared: dict = {}


def _mask_key(mask) -> object:
    """A bool mask by what the checks read of it (never by identity: it may be mutated in place); a name as is."""
    if isinstance(mask, torch.Tensor):
        return (torch.Tensor, mask.shape, mask.dtype, mask.device)
    return mask


def prepare_call(
    x: torch.Tensor,
    h: torch.Tensor,
    mask,
    flip,
    scale,
    clamp,
    shift_first,
    reverse,
    backend,
    additive: bool,
    h_layout: str = "scale_shift",
) -> PreparedCall:
    """The checked config and flat layout of a call with plain tensors `x` and `h`; raises per SPEC section 1
    exactly as :func:`~nf_kernels._arguments.check_coupling_args` does (which it runs once per combination)."""
    key = (x.shape, h.shape, x.dtype, h.dtype, x.device, h.device, _mask_key(mask), flip, scale, type(clamp), clamp,
           shift_first, reverse, backend, additive, h_layout)  # fmt: skip
    try:
        return _prepared[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable option: the checks reject it below
        key = None
    mask_tensor, config = check_coupling_args(
        x, h, mask=mask, flip=flip, reverse=reverse, backend=backend, additive=additive, scale=scale, clamp=clamp,
        shift_first=shift_first, h_layout=h_layout,
    )  # fmt: skip
    empty = x.shape[0] == 0 or math.prod(x.shape[1:]) == 0
    # A compact h's layout depends on the mask's contents, which may change in place: never remembered (the
    # backends that take compact calls work it out on each one).
    layout = None if config.mask_kind == "compact" else tuple(flat_layout(x, mask_tensor, config).packed())
    prepared = PreparedCall(config, layout, empty)
    if key is not None:
        if len(_prepared) >= MAX_ENTRIES:
            _prepared.clear()
        _prepared[key] = prepared
    return prepared


def clear() -> None:
    """Forget every prepared call (tests; nothing else needs it: the key holds all the checks depend on)."""
    _prepared.clear()


def cached_calls() -> int:
    return len(_prepared)
