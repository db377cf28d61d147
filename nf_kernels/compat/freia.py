"""Drop-in classes for FrEIA 0.2: GLOWCouplingBlock, RNVPCouplingBlock, NICECouplingBlock, AffineCouplingOneSided,
ConditionalAffineTransform and AllInOneBlock's coupling, through the fused ops.

FrEIA's forward (rev=False) is its density direction (x to z), called as ``module([x], c=[...], rev=False)`` and
returning ``((y,), log_jac_det)``; rev=True returns the inverse and the log-det of the inverse. A block splits dim 1
into the first ``split_len`` channels and the rest and runs two couplings in turn (the first transforms the first
part given the second); each subnet emits the scale's raw value then the shift (h_layout="scale_shift"). The clamp
multiplies an activation of the raw value, ``clamp * f(s)``: "ATAN" (f = 0.636 atan), "TANH" and "SIGMOID"
(f = 2 sigmoid - 1) are the op's "freia_atan", "freia_tanh" and "freia_sigmoid". AllInOneBlock scales the subnet's
output by 0.1 (as FrEIA does, in place) and soft-clamps with clamp * tanh: "freia_tanh"; its permutation and global
affine scaling are FrEIA's own code, run around the fused coupling.

    >>> import torch
    >>> from nf_kernels.compat import freia as fused
    >>> block = fused.GLOWCouplingBlock([(4,)], subnet_constructor=lambda i, o: torch.nn.Linear(i, o))
    >>> (z,), log_jac_det = block([torch.randn(3, 4)])
    >>> z.shape, log_jac_det.shape
    (torch.Size([3, 4]), torch.Size([3]))
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import functional
from ._adopt import Accelerated, Unsupported
from ._library import require
from ._splits import range_mask

freia_modules = require("FrEIA.modules")

# FrEIA's named clamp activations, as the op's scale maps. A block keeps only the function (`f_clamp`), so an
# existing block's activation is recognized by its values at a few points.
CLAMP_ACTIVATIONS = {"ATAN": "freia_atan", "TANH": "freia_tanh", "SIGMOID": "freia_sigmoid"}
_PROBES = torch.tensor([-3.0, -0.4, 0.25, 1.5, 7.0], dtype=torch.float64)
_ACTIVATION_VALUES = {
    "freia_atan": 0.636 * torch.atan(_PROBES),
    "freia_tanh": torch.tanh(_PROBES),
    "freia_sigmoid": 2.0 * (torch.sigmoid(_PROBES) - 0.5),
}


def _op_scale(block) -> str:
    """The op's scale map of a block's clamp activation; Unsupported for a custom one."""
    try:
        values = block.f_clamp(_PROBES)
    except Exception as error:  # a custom function that does not take a float64 tensor
        raise Unsupported(f"a custom clamp_activation ({error}); the fused blocks take 'ATAN', 'TANH' or 'SIGMOID'")
    for scale, expected in _ACTIVATION_VALUES.items():
        if isinstance(values, Tensor) and values.shape == expected.shape and torch.allclose(values, expected, rtol=1e-12, atol=1e-12):
            return scale
    raise Unsupported("a custom clamp_activation; the fused blocks take 'ATAN', 'TANH' or 'SIGMOID'")


def _conditioned(block, u: Tensor, conditions) -> Tensor:
    """A subnet's input: the passive part, with a conditional block's conditions appended along dim 1 (as FrEIA
    does; a block built without conditions ignores them)."""
    return torch.cat([u, *conditions], 1) if block.conditional else u


class _TwoCouplingBlock(Accelerated):
    """FrEIA's _BaseCouplingBlock scheme (two couplings in turn) with fused couplings; a subclass says how a subnet
    pair computes h (`_h`) and whether the couplings are affine."""

    _affine = True

    @classmethod
    def check(cls, layer) -> None:
        if cls._affine:
            if not layer.clamp > 0:
                raise Unsupported(f"clamp={layer.clamp}: the fused blocks need clamp > 0")
            _op_scale(layer)

    def prepare(self) -> None:
        self._nfk_scale = _op_scale(self) if self._affine else None

    def _couple(self, x: Tensor, h: Tensor, first: bool, rev: bool):
        """Transform the first split_len1 channels of x (`first`) or the rest, with h."""
        split = self.split_len1
        # The kept channels are the other part.
        mask, flip = range_mask(x, split, x.shape[1]) if first else range_mask(x, 0, split)
        backend = self.nf_kernels_backend
        if self._nfk_scale is None:
            y, _ = functional.additive_coupling(x, h, mask=mask, flip=flip, reverse=rev, backend=backend)
            return y, 0.0  # FrEIA's NICE block returns a log-det of 0.
        return functional.affine_coupling(x, h, mask=mask, flip=flip, scale=self._nfk_scale, clamp=float(self.clamp),
                                          reverse=rev, backend=backend)  # fmt: skip

    def forward(self, x, c=[], rev=False, jac=True):
        x = x[0]
        split = self.split_len1
        if not rev:
            # First the first part given the rest (subnet 2), then the rest given the new first part (subnet 1).
            y, j1 = self._couple(x, self._h(2, _conditioned(self, x[:, split:], c)), first=True, rev=False)
            y, j2 = self._couple(y, self._h(1, _conditioned(self, y[:, :split], c)), first=False, rev=False)
        else:
            y, j2 = self._couple(x, self._h(1, _conditioned(self, x[:, :split], c)), first=False, rev=True)
            y, j1 = self._couple(y, self._h(2, _conditioned(self, y[:, split:], c)), first=True, rev=True)
        return (y,), j1 + j2


class GLOWCouplingBlock(_TwoCouplingBlock, freia_modules.GLOWCouplingBlock):
    """FrEIA's GLOWCouplingBlock: one subnet a coupling emits [s_raw, t]."""

    def _h(self, which: int, u: Tensor) -> Tensor:
        return (self.subnet1 if which == 1 else self.subnet2)(u)


class RNVPCouplingBlock(_TwoCouplingBlock, freia_modules.RNVPCouplingBlock):
    """FrEIA's RNVPCouplingBlock: separate s and t subnets, their outputs concatenated into h (one copy)."""

    def _h(self, which: int, u: Tensor) -> Tensor:
        s, t = (self.subnet_s1, self.subnet_t1) if which == 1 else (self.subnet_s2, self.subnet_t2)
        return torch.cat([s(u), t(u)], 1)


class NICECouplingBlock(_TwoCouplingBlock, freia_modules.NICECouplingBlock):
    """FrEIA's NICECouplingBlock: additive couplings, subnet G for the second part and F for the first."""

    _affine = False

    def _h(self, which: int, u: Tensor) -> Tensor:
        return (self.G if which == 1 else self.F)(u)


class AffineCouplingOneSided(_TwoCouplingBlock, freia_modules.AffineCouplingOneSided):
    """FrEIA's AffineCouplingOneSided: the second part transformed given the first, one subnet."""

    def forward(self, x, c=[], rev=False, jac=True):
        x = x[0]
        y, log_jac_det = self._couple(x, self.subnet(_conditioned(self, x[:, : self.split_len1], c)), first=False, rev=rev)
        return (y,), log_jac_det


class ConditionalAffineTransform(_TwoCouplingBlock, freia_modules.ConditionalAffineTransform):
    """FrEIA's ConditionalAffineTransform: every element transformed, h from the conditions alone."""

    def forward(self, x, c=[], rev=False, jac=True):
        x = x[0]
        h = self.subnet(torch.cat(list(c), 1) if len(c) > 1 else c[0])
        nothing_kept = torch.zeros(x.shape[1:], dtype=torch.bool, device=x.device)
        y, log_jac_det = functional.affine_coupling(x, h, mask=nothing_kept, scale=self._nfk_scale,
                                                    clamp=float(self.clamp), reverse=rev,
                                                    backend=self.nf_kernels_backend)  # fmt: skip
        return (y,), log_jac_det


class AllInOneBlock(Accelerated, freia_modules.AllInOneBlock):
    """FrEIA's AllInOneBlock with its affine coupling fused (its permutation and global scaling unchanged)."""

    @classmethod
    def check(cls, layer) -> None:
        if layer.GIN:
            raise Unsupported("gin_block=True (the volume-preserving coupling subtracts the mean log-scale)")
        if not layer.clamp > 0:
            raise Unsupported(f"affine_clamping={layer.clamp}: the fused coupling needs a clamp > 0")

    def forward(self, x, c=[], rev=False, jac=True):
        if self.householder:
            self.w_perm = self._construct_householder_permutation()
            if rev or self.reverse_pre_permute:
                self.w_perm_inv = self.w_perm.transpose(0, 1).contiguous()
        x = x[0]
        if rev:
            x, global_scaling_jac = self._permute(x, rev=True)
        elif self.reverse_pre_permute:
            x = self._pre_permute(x, rev=False)
        kept = self.splits[0]  # the first C - C // 2 channels condition the rest
        a = self.subnet(_conditioned(self, x[:, :kept], c))
        a *= 0.1  # FrEIA scales the whole coefficient tensor, in place
        mask, flip = range_mask(x, 0, kept)
        y, log_jac_det = functional.affine_coupling(x, a, mask=mask, flip=flip, scale="freia_tanh",
                                                    clamp=float(self.clamp), reverse=rev,
                                                    backend=self.nf_kernels_backend)  # fmt: skip
        if not rev:
            y, global_scaling_jac = self._permute(y, rev=False)
        elif self.reverse_pre_permute:
            y = self._pre_permute(y, rev=True)
        pixels = y[0, :1].numel()
        return (y,), log_jac_det + (-1) ** rev * pixels * global_scaling_jac


DROP_INS = {cls.replaces: cls for cls in (GLOWCouplingBlock, RNVPCouplingBlock, NICECouplingBlock, AffineCouplingOneSided,
                                          ConditionalAffineTransform, AllInOneBlock)}  # fmt: skip
FLOW_BASE = freia_modules.InvertibleModule
# Coupling layers with no drop-in, and why (accelerate reports it).
NOT_FUSED = {freia_modules.GINCouplingBlock: "GIN's volume-preserving coupling (the mean log-scale of each sample is "
                                             "subtracted) is not fused"}
