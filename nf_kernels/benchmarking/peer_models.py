"""The same RealNVP written in nf_kernels and in each peer library, behind one interface: ``log_prob(x) -> [B]``.

The model (issue 12): `couplings` affine couplings on alternating halves of a vector of `features` elements, each
conditioned by an MLP of `depth` hidden ReLU layers `hidden` wide whose last layer starts at zero, on a standard
normal base. Each peer builds it the way its documentation does; where a library fixes its own scale map or
adds layers of its own, :data:`LIBRARY_NOTES` says so (the results file prints it). Where a library takes any
user network as the conditioner (nflows, FrEIA), it gets nf_kernels' own :class:`~nf_kernels.flows.MLP`, plain
PyTorch, so the conditioners are the same module; normflows and zuko use their own MLP classes, as documented.

Every library's model is the identity at init (the conditioners output zeros) except nflows', whose scale map
gives ``sigmoid(2) + 1e-3`` at zero: :attr:`BenchModel.init_scale` records that, and
:func:`expected_init_log_prob` computes what each model must return at init, the check that the models compare.

A library that is not installed raises :class:`LibraryUnavailable` from its builder, with the install hint.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ..flows import StandardNormal, build_model
from ..flows.conditioners import MLP

# nf_kernels first, then the peers; the name a library is asked for by (--libraries) is also its import name.
PEERS = ("normflows", "nflows", "zuko", "FrEIA")
OURS = ("nf_kernels", "nf_kernels-reference", "nf_kernels-memory-saving")
LIBRARIES = OURS + PEERS
INSTALL_HINT = "pip install --no-deps -r requirements-bench.txt"

# Each library's scale map (log-scale a(s) of the conditioner's raw output s) and how its model differs from ours.
LIBRARY_NOTES = {
    "nf_kernels": "a(s) = 2 tanh(s / 2) (realnvp's default scale='tanh', clamp 2); [s, t] = h halves; the fused "
    "coupling op, backend 'auto'",
    "nf_kernels-reference": "as nf_kernels, with backend='reference' (the plain-PyTorch oracle): the control",
    "nf_kernels-memory-saving": "as nf_kernels, with memory_saving=True (activations rebuilt during backward)",
    "normflows": "a(s) = s (scale_map='exp', no clamp); shift and scale interleaved (param[:, 0::2], [:, 1::2]); "
    "AffineCouplingBlock (Split, coupling, Merge) on the channel halves then Permute(mode='swap') after each "
    "coupling, as its README's RealNVP: a cat per coupling more than ours; log_prob runs the flows' inverses",
    "nflows": "scale = sigmoid(s + 2) + 1e-3, so the flow is not the identity at init (scale 0.882); "
    "AffineCouplingTransform with a +-1 mask over halves, alternated; gather in, index-put out; "
    "conditioner: nf_kernels' MLP (nflows takes any network)",
    "zuko": "a(s) = s / (1 + |s / log(1e-3)|) (MonotonicAffineTransform, slope 1e-3); GeneralCouplingTransform with "
    "a halves mask, alternated (zuko.flows.RealNVP fixes checkered masks); zuko's MLP with its last layer zeroed; "
    "gather in, index-put out",
    "FrEIA": "a(s) = 2 * 0.636 atan(s) (clamp 2, 'ATAN'); couplings in pairs: GLOWCouplingBlock is two couplings "
    "(each half conditioned on the other), so 8 couplings are 4 blocks; no base distribution object: the loss is "
    "0.5 |z|^2 - log|det| as FrEIA documents; conditioner: nf_kernels' MLP",
}


class LibraryUnavailable(ImportError):
    """The library a builder needs is not installed."""


class Unsupported(ValueError):
    """The library cannot express the requested model."""


@dataclass(frozen=True)
class RealNVPSpec:
    """The model every library builds: sizes of a vector RealNVP."""

    features: int
    couplings: int = 8
    hidden: int = 128
    depth: int = 2

    def __post_init__(self):
        for name in ("couplings", "hidden", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"RealNVPSpec.{name} must be >= 1, got {getattr(self, name)}")
        if self.features < 2 or self.features % 2:
            raise ValueError(f"RealNVPSpec.features must be even and >= 2 (halves), got {self.features}")

    @property
    def label(self) -> str:
        return f"D={self.features}"


class BenchModel(nn.Module):
    """One library's model: `network` holds every parameter, ``log_prob(x)`` calls the library's own density.

    ``log_prob(x, context=None)`` has the signature of :meth:`nf_kernels.flows.Flow.log_prob`, so
    :func:`nf_kernels.flows.memory_report.activation_memory` measures any of these models.
    """

    def __init__(self, library: str, network: nn.Module, log_prob: Callable[[Tensor], Tensor], init_scale=1.0):
        super().__init__()
        self.library, self.network, self._log_prob, self.init_scale = library, network, log_prob, float(init_scale)

    def log_prob(self, x: Tensor, context=None) -> Tensor:
        if context is not None:
            raise ValueError("the benchmark models are unconditional: context must be None")
        return self._log_prob(x)


def sample_batch(spec: RealNVPSpec, batch: int, device="cpu") -> Tensor:
    """The training batch every model of `spec` gets: standard normal data, the same for every library."""
    return torch.randn(batch, spec.features, generator=torch.Generator().manual_seed(1)).to(device)


def expected_init_log_prob(model: BenchModel, spec: RealNVPSpec, x: Tensor) -> Tensor:
    """What `model` computes at init: the couplings' scales are all ``init_scale`` and the shifts zero.

    With alternating halves, the element ``x[k]`` is transformed ``n[k]`` times: ``couplings / 2``, rounded up
    for the second half, which the first coupling transforms (in nf_kernels and nflows, the one library whose
    ``init_scale`` is not 1), so ``z = x * init_scale ** n`` and the log-det adds ``sum_k n[k] log init_scale``.
    """
    half = spec.features // 2
    times = torch.tensor([spec.couplings // 2] * half + [(spec.couplings + 1) // 2] * half, dtype=x.dtype,
                         device=x.device)  # fmt: skip
    log_s = math.log(model.init_scale)
    z = x * torch.exp(times * log_s)
    return StandardNormal((spec.features,)).to(x).log_prob(z) + (times * log_s).sum()


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise LibraryUnavailable(f"{module} is not installed ({INSTALL_HINT})") from error


def _conditioner(spec: RealNVPSpec) -> Callable[[int, int], nn.Module]:
    """The subnet constructor ``(in_features, out_features) -> MLP`` for libraries that take any network."""
    return lambda in_features, out_features: MLP(in_features, out_features, spec.hidden, spec.depth)


def _nf_kernels(spec: RealNVPSpec, library: str, backend: str = "auto", memory_saving: bool = False) -> BenchModel:
    flow = build_model("realnvp", (spec.features,), backend=backend, memory_saving=memory_saving,
                       num_layers=spec.couplings, hidden=spec.hidden, depth=spec.depth)  # fmt: skip
    return BenchModel(library, flow, flow.log_prob)


def _normflows(spec: RealNVPSpec) -> BenchModel:
    nf = _require("normflows")
    flows = []
    for _ in range(spec.couplings):
        param_map = nf.nets.MLP([spec.features // 2] + [spec.hidden] * spec.depth + [spec.features], init_zeros=True)
        flows += [nf.flows.AffineCouplingBlock(param_map), nf.flows.Permute(spec.features, mode="swap")]
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(spec.features, trainable=False), flows)
    return BenchModel("normflows", model, model.log_prob)


def _nflows(spec: RealNVPSpec) -> BenchModel:
    _require("nflows")
    from nflows.distributions.normal import StandardNormal as NflowsStandardNormal
    from nflows.flows.base import Flow
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.coupling import AffineCouplingTransform

    half = spec.features // 2
    mask = torch.tensor([-1] * half + [1] * half)  # > 0: transformed
    couplings = [AffineCouplingTransform(mask * (-1) ** i, transform_net_create_fn=_conditioner(spec))
                 for i in range(spec.couplings)]  # fmt: skip
    flow = Flow(CompositeTransform(couplings), NflowsStandardNormal([spec.features]))
    return BenchModel("nflows", flow, flow.log_prob, init_scale=torch.sigmoid(torch.tensor(2.0)).item() + 1e-3)


def _zuko(spec: RealNVPSpec) -> BenchModel:
    _require("zuko")
    from zuko.distributions import DiagNormal
    from zuko.flows import Flow, GeneralCouplingTransform
    from zuko.lazy import UnconditionalDistribution

    kept = torch.arange(spec.features) < spec.features // 2  # True: the constant half
    couplings = []
    for i in range(spec.couplings):
        coupling = GeneralCouplingTransform(spec.features, mask=kept if i % 2 == 0 else ~kept,
                                            hidden_features=[spec.hidden] * spec.depth)  # fmt: skip
        nn.init.zeros_(coupling.hyper[-1].weight)
        nn.init.zeros_(coupling.hyper[-1].bias)
        couplings.append(coupling)
    base = UnconditionalDistribution(DiagNormal, torch.zeros(spec.features), torch.ones(spec.features), buffer=True)
    flow = Flow(couplings, base)
    return BenchModel("zuko", flow, lambda x: flow().log_prob(x))


def _freia(spec: RealNVPSpec) -> BenchModel:
    _require("FrEIA")
    import FrEIA.framework as Ff
    import FrEIA.modules as Fm

    if spec.couplings % 2:
        raise Unsupported(f"FrEIA's GLOWCouplingBlock holds two couplings: {spec.couplings} is odd")
    inn = Ff.SequenceINN(spec.features)
    for _ in range(spec.couplings // 2):
        inn.append(Fm.GLOWCouplingBlock, subnet_constructor=_conditioner(spec), clamp=2.0)

    base = StandardNormal((spec.features,))  # FrEIA has none: its examples write this density out

    def log_prob(x: Tensor) -> Tensor:
        z, log_jac_det = inn(x)
        return base.log_prob(z) + log_jac_det

    return BenchModel("FrEIA", nn.ModuleDict(dict(inn=inn, base=base)), log_prob)


_BUILDERS: dict[str, Callable[[RealNVPSpec], BenchModel]] = {
    "nf_kernels": lambda spec: _nf_kernels(spec, "nf_kernels"),
    "nf_kernels-reference": lambda spec: _nf_kernels(spec, "nf_kernels-reference", backend="reference"),
    "nf_kernels-memory-saving": lambda spec: _nf_kernels(spec, "nf_kernels-memory-saving", memory_saving=True),
    "normflows": _normflows,
    "nflows": _nflows,
    "zuko": _zuko,
    "FrEIA": _freia,
}


def build(library: str, spec: RealNVPSpec) -> BenchModel:
    """`library`'s model of `spec` (float32, on the CPU; move it with ``.to``).

    Raises:
        ValueError: `library` is not one of `LIBRARIES`.
        LibraryUnavailable: the library is not installed.
        Unsupported: the library cannot express the model.

    Example:
        >>> model = build("nf_kernels", RealNVPSpec(features=4, couplings=2, hidden=8))
        >>> model.log_prob(torch.zeros(3, 4)).shape
        torch.Size([3])
    """
    if library not in _BUILDERS:
        raise ValueError(f"unknown library {library!r}: valid choices are {', '.join(LIBRARIES)}")
    return _BUILDERS[library](spec)
