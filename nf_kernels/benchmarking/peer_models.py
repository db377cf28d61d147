"""The same RealNVP, and the same NSF, written in nf_kernels and in each peer library, behind one interface:
``log_prob(x) -> [B]``.

The model (issue 12): `couplings` affine couplings on alternating halves of a vector of `features` elements, each
conditioned by an MLP of `depth` hidden ReLU layers `hidden` wide whose last layer starts at zero, on a standard
normal base. Each peer builds it the way its documentation does; where a library fixes its own scale map or
adds layers of its own, :data:`LIBRARY_NOTES` says so (the results file prints it). Where a library takes any
user network as the conditioner (nflows, FrEIA), it gets nf_kernels' own :class:`~nf_kernels.flows.MLP` with
``fused=False``: the same modules, run one by one as plain PyTorch runs them (the fused node is nf_kernels' own
work, measured in nf_kernels' rows); normflows and zuko use their own MLP classes, as documented.

Every library's model is the identity at init (the conditioners output zeros) except nflows', whose scale map
gives ``sigmoid(2) + 1e-3`` at zero: :attr:`BenchModel.init_scale` records that, and
:func:`expected_init_log_prob` computes what each model must return at init, the check that the models compare.

The NSF (issue 14, :class:`NSFSpec`): `couplings` rational-quadratic spline couplings on alternating halves,
`bins` bins on ``[-bound, bound]`` with linear tails (the identity outside), each conditioned by an MLP as above,
built in nf_kernels (:class:`~nf_kernels.flows.SplineCoupling`), nflows and zuko (:data:`NSF_LIBRARY_NOTES`). All
three start as the identity, so :func:`expected_init_log_prob` (``init_scale`` 1) is the base density of the input.

A library that is not installed raises :class:`LibraryUnavailable` from its builder, with the install hint.
"""

from __future__ import annotations

import functools
import importlib
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Union

import torch
from torch import Tensor, nn

from ..flows import Flow, SplineCoupling, StandardNormal, build_model
from ..flows.conditioners import MLP
from ..flows.spline_coupling import identity_derivative_parameter

# nf_kernels first, then the peers; the name a library is asked for by (--libraries) is also its import name.
PEERS = ("normflows", "nflows", "zuko", "FrEIA")
OURS = ("nf_kernels", "nf_kernels-reference", "nf_kernels-memory-saving", "nf_kernels-recompute",
        "nf_kernels-unfused-mlp", "nf_kernels-two-nodes")
LIBRARIES = OURS + PEERS
NSF_PEERS = ("nflows", "zuko")  # the peers issue 14 compares the NSF with
# A spline coupling never runs as one node with its conditioner: the two-node row would be nf_kernels' own.
NSF_LIBRARIES = tuple(name for name in OURS if name != "nf_kernels-two-nodes") + NSF_PEERS
INSTALL_HINT = "pip install --no-deps -r requirements-bench.txt"

_UNFUSED_NOTE = ("as nf_kernels, with MLP(fused=False): the conditioners' modules run one by one instead of as one "
                 "autograd node (what the fused node gains)")

# Each library's scale map (log-scale a(s) of the conditioner's raw output s) and how its model differs from ours.
LIBRARY_NOTES = {
    "nf_kernels": "a(s) = 2 tanh(s / 2) (realnvp's default scale='tanh', clamp 2); [s, t] = h halves; the fused "
    "coupling op, backend 'auto'",
    "nf_kernels-reference": "as nf_kernels, with backend='reference' (the plain-PyTorch oracle): the control",
    "nf_kernels-memory-saving": "as nf_kernels, with memory_saving=True (activations rebuilt during backward)",
    "nf_kernels-recompute": "as nf_kernels, with recompute_conditioner=True (each coupling keeps its input alone and "
    "reruns its conditioner in backward)",
    "nf_kernels-unfused-mlp": _UNFUSED_NOTE,
    "nf_kernels-two-nodes": "as nf_kernels, with each coupling and its MLP conditioner run as two autograd nodes (the "
    "MLP's, then the coupling op's) instead of one (what the coupling layer's one node gains)",
    "normflows": "a(s) = s (scale_map='exp', no clamp); shift and scale interleaved (param[:, 0::2], [:, 1::2]); "
    "AffineCouplingBlock (Split, coupling, Merge) on the channel halves then Permute(mode='swap') after each "
    "coupling, as its README's RealNVP: a cat per coupling more than ours; log_prob runs the flows' inverses",
    "nflows": "scale = sigmoid(s + 2) + 1e-3, so the flow is not the identity at init (scale 0.882); "
    "AffineCouplingTransform with a +-1 mask over halves, alternated; gather in, index-put out; "
    "conditioner: nf_kernels' MLP with fused=False (nflows takes any network)",
    "zuko": "a(s) = s / (1 + |s / log(1e-3)|) (MonotonicAffineTransform, slope 1e-3); GeneralCouplingTransform with "
    "a halves mask, alternated (zuko.flows.RealNVP fixes checkered masks); zuko's MLP with its last layer zeroed; "
    "gather in, index-put out",
    "FrEIA": "a(s) = 2 * 0.636 atan(s) (clamp 2, 'ATAN'); couplings in pairs: GLOWCouplingBlock is two couplings "
    "(each half conditioned on the other), so 8 couplings are 4 blocks; no base distribution object: the loss is "
    "0.5 |z|^2 - log|det| as FrEIA documents; conditioner: nf_kernels' MLP (fused=False: its modules one by one)",
}


# The same for the NSF (NSFSpec): how each library's spline coupling is parametrized and how it differs from ours.
NSF_LIBRARY_NOTES = {
    "nf_kernels": "SplineCoupling (mask 'half', flip alternated), the fused spline op, backend 'auto'; nflows' "
    "parametrization: softmax widths and heights with minimum 1e-3, interior derivatives 1e-3 + softplus, boundary "
    "derivatives 1 (linear tails); its MLP's last layer zero but for the derivative biases, which make it the identity",
    "nf_kernels-reference": "as nf_kernels, with backend='reference' (the plain-PyTorch oracle): the control",
    "nf_kernels-memory-saving": "as nf_kernels, with memory_saving=True (activations rebuilt during backward)",
    "nf_kernels-recompute": "as nf_kernels, with recompute_conditioner=True (each coupling keeps its input alone and "
    "reruns its conditioner in backward)",
    "nf_kernels-unfused-mlp": _UNFUSED_NOTE,
    "nflows": "PiecewiseRationalQuadraticCouplingTransform, tails='linear', tail_bound = bound, nflows' default "
    "minimum widths, heights and derivative (1e-3, as ours); +-1 halves masks alternated; conditioner: nf_kernels' "
    "MLP (fused=False) with the same initialization as ours (zero-derivative parameters would start nflows' spline "
    "at slope 0.694, not the identity); that MLP has no hidden_features, so nflows does not divide the width and height "
    "parameters by sqrt(hidden) (its warning about that is silenced), as ours does not",
    "zuko": "GeneralCouplingTransform with MonotonicRQSTransform (bins, bins and bins - 1 parameters per element) "
    "and bound = bound (zuko.flows.NSF is autoregressive, its coupling form passes=2 a masked MLP over all "
    "features, and its bound fixed at 5); halves masks alternated; zuko's MLP with its last layer zeroed (the "
    "identity in zuko's parametrization). Differs from ours in the map from parameters to spline: no minimum bin "
    "width or height but logits soft-clipped to |w| < 3.45 before the softmax, derivatives exp of a soft-clipped "
    "parameter in (1e-3, 1e3) instead of 1e-3 + softplus; identity outside [-bound, bound] and boundary "
    "derivatives 1, as ours",
}


class LibraryUnavailable(ImportError):
    """The library a builder needs is not installed."""


class Unsupported(ValueError):
    """The library cannot express the requested model."""


class _VectorSpec:
    """What the vector models' specs share: a `features`-vector split in halves, and the row label."""

    features: int

    @property
    def label(self) -> str:
        return f"D={self.features}"


def _check_sizes(spec, counts: tuple[str, ...]) -> None:
    """Each of `counts` >= 1 and `features` even and >= 2, else a ValueError naming the spec's field."""
    kind = type(spec).__name__
    for name in counts:
        if getattr(spec, name) < 1:
            raise ValueError(f"{kind}.{name} must be >= 1, got {getattr(spec, name)}")
    if spec.features < 2 or spec.features % 2:
        raise ValueError(f"{kind}.features must be even and >= 2 (halves), got {spec.features}")


@dataclass(frozen=True)
class RealNVPSpec(_VectorSpec):
    """The model every library builds: sizes of a vector RealNVP."""

    features: int
    couplings: int = 8
    hidden: int = 128
    depth: int = 2

    def __post_init__(self):
        _check_sizes(self, ("couplings", "hidden", "depth"))

    @property
    def description(self) -> str:
        return f"{self.couplings} couplings, hidden {self.hidden}, {self.depth} hidden layers"


@dataclass(frozen=True)
class NSFSpec(_VectorSpec):
    """The NSF every library builds (issue 14): `couplings` spline couplings of `bins` bins on ``[-bound, bound]``.

    >>> NSFSpec(8).description
    '4 spline couplings (8 bins on [-3, 3], linear tails), hidden 64, 2 hidden layers'
    """

    features: int
    couplings: int = 4
    hidden: int = 64
    depth: int = 2
    bins: int = 8
    bound: float = 3.0

    def __post_init__(self):
        _check_sizes(self, ("couplings", "hidden", "depth", "bins"))
        if not (math.isfinite(self.bound) and self.bound > 0):
            raise ValueError(f"NSFSpec.bound must be finite and > 0, got {self.bound}")

    @property
    def description(self) -> str:
        return (f"{self.couplings} spline couplings ({self.bins} bins on [-{self.bound:g}, {self.bound:g}], linear "
                f"tails), hidden {self.hidden}, {self.depth} hidden layers")  # fmt: skip

    @property
    def params_per_element(self) -> int:
        """Unconstrained spline parameters per transformed element: widths, heights, interior derivatives."""
        return 3 * self.bins - 1


ModelSpec = Union[RealNVPSpec, NSFSpec]


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


def sample_batch(spec: ModelSpec, batch: int, device="cpu") -> Tensor:
    """The training batch every model of `spec` gets: standard normal data, the same for every library."""
    return torch.randn(batch, spec.features, generator=torch.Generator().manual_seed(1)).to(device)


def expected_init_log_prob(model: BenchModel, spec: ModelSpec, x: Tensor) -> Tensor:
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
    """The subnet constructor ``(in_features, out_features) -> MLP`` for libraries that take any network: plain
    PyTorch modules (``fused=False``)."""
    return lambda in_features, out_features: MLP(in_features, out_features, spec.hidden, spec.depth, fused=False)


def _unfused(model: BenchModel) -> BenchModel:
    """`model` with every MLP conditioner running its modules one by one (``fused=False``)."""
    for module in model.network.modules():
        if isinstance(module, MLP):
            module.fused = False
    return model


def _two_nodes(model: BenchModel) -> BenchModel:
    """`model` with every coupling running its conditioner and its op as two nodes (flows/fused_coupling_layer.py)."""
    for module in model.network.modules():
        if hasattr(module, "_one_node"):
            module._one_node = False
    return model


def _nf_kernels(spec: RealNVPSpec, library: str, backend: str = "auto", **options: bool) -> BenchModel:
    """`options`: memory_saving, recompute_conditioner (build_model's)."""
    flow = build_model("realnvp", (spec.features,), backend=backend, num_layers=spec.couplings, hidden=spec.hidden,
                       depth=spec.depth, **options)  # fmt: skip
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
    return _zuko_couplings(spec)


def _zuko_couplings(spec, **coupling_options) -> BenchModel:
    """zuko's Flow of `spec.couplings` GeneralCouplingTransforms on alternating halves (the hyper-network's last
    layer zeroed) over a standard normal; `coupling_options` choose the univariate (default: zuko's affine)."""
    from zuko.distributions import DiagNormal
    from zuko.flows import Flow, GeneralCouplingTransform
    from zuko.lazy import UnconditionalDistribution

    kept = torch.arange(spec.features) < spec.features // 2  # True: the constant half
    couplings = []
    for i in range(spec.couplings):
        coupling = GeneralCouplingTransform(spec.features, mask=kept if i % 2 == 0 else ~kept,
                                            hidden_features=[spec.hidden] * spec.depth, **coupling_options)  # fmt: skip
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


# ---- the NSF -------------------------------------------------------------------------------------------------


def _identity_spline_conditioner(spec: NSFSpec, min_derivative: float) -> Callable[[int, int], nn.Module]:
    """nf_kernels' MLP initialized as SplineCoupling initializes its own: a zero last layer whose derivative
    biases make every interior knot's derivative ``min_derivative + softplus(bias) = 1`` (nflows' parametrization,
    as ours), so the spline starts as the identity."""

    def create(in_features: int, out_features: int) -> nn.Module:
        net = MLP(in_features, out_features, spec.hidden, spec.depth, fused=False)
        with torch.no_grad():
            net.net[-1].bias.view(-1, spec.params_per_element)[:, 2 * spec.bins :] = identity_derivative_parameter(
                min_derivative
            )
        return net

    return create


def _nf_kernels_nsf(spec: NSFSpec, library: str, backend: str = "auto", memory_saving: bool = False,
                    recompute_conditioner: bool = False) -> BenchModel:
    # The couplings alone, as the peers build them: build_model("nsf") adds ActNorm and a 1x1 convolution per step.
    couplings = [SplineCoupling((spec.features,), mask="half", flip=i % 2 == 1, bins=spec.bins, bound=spec.bound,
                                hidden=spec.hidden, depth=spec.depth, backend=backend,
                                recompute_conditioner=recompute_conditioner)
                 for i in range(spec.couplings)]  # fmt: skip
    flow = Flow(couplings, StandardNormal((spec.features,)), memory_saving=memory_saving)
    return BenchModel(library, flow, flow.log_prob)


def _nflows_nsf(spec: NSFSpec) -> BenchModel:
    _require("nflows")
    from nflows.distributions.normal import StandardNormal as NflowsStandardNormal
    from nflows.flows.base import Flow as NflowsFlow
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.coupling import PiecewiseRationalQuadraticCouplingTransform
    from nflows.transforms.splines.rational_quadratic import DEFAULT_MIN_DERIVATIVE

    # nflows warns on every call whose conditioner lacks `hidden_features`; ours does, on purpose (the same
    # network and parametrization as nf_kernels'), so the warning says nothing here.
    warnings.filterwarnings("ignore", message="Inputs to the softmax are not scaled down")
    half = spec.features // 2
    mask = torch.tensor([-1] * half + [1] * half)  # > 0: transformed
    create = _identity_spline_conditioner(spec, DEFAULT_MIN_DERIVATIVE)
    couplings = [PiecewiseRationalQuadraticCouplingTransform(mask * (-1) ** i, create, num_bins=spec.bins,
                                                             tails="linear", tail_bound=spec.bound)
                 for i in range(spec.couplings)]  # fmt: skip
    flow = NflowsFlow(CompositeTransform(couplings), NflowsStandardNormal([spec.features]))
    return BenchModel("nflows", flow, flow.log_prob)


def _zuko_nsf(spec: NSFSpec) -> BenchModel:
    _require("zuko")
    from zuko.transforms import MonotonicRQSTransform

    spline = functools.partial(MonotonicRQSTransform, bound=spec.bound)
    shapes = [(spec.bins,), (spec.bins,), (spec.bins - 1,)]  # as zuko.flows.NSF
    return _zuko_couplings(spec, univariate=spline, shapes=shapes)


_NSF_BUILDERS: dict[str, Callable[[NSFSpec], BenchModel]] = {
    "nf_kernels": lambda spec: _nf_kernels_nsf(spec, "nf_kernels"),
    "nf_kernels-reference": lambda spec: _nf_kernels_nsf(spec, "nf_kernels-reference", backend="reference"),
    "nf_kernels-memory-saving": lambda spec: _nf_kernels_nsf(spec, "nf_kernels-memory-saving", memory_saving=True),
    "nf_kernels-recompute": lambda spec: _nf_kernels_nsf(spec, "nf_kernels-recompute", recompute_conditioner=True),
    "nf_kernels-unfused-mlp": lambda spec: _unfused(_nf_kernels_nsf(spec, "nf_kernels-unfused-mlp")),
    "nflows": _nflows_nsf,
    "zuko": _zuko_nsf,
}

_BUILDERS: dict[str, Callable[[RealNVPSpec], BenchModel]] = {
    "nf_kernels": lambda spec: _nf_kernels(spec, "nf_kernels"),
    "nf_kernels-reference": lambda spec: _nf_kernels(spec, "nf_kernels-reference", backend="reference"),
    "nf_kernels-memory-saving": lambda spec: _nf_kernels(spec, "nf_kernels-memory-saving", memory_saving=True),
    "nf_kernels-recompute": lambda spec: _nf_kernels(spec, "nf_kernels-recompute", recompute_conditioner=True),
    "nf_kernels-unfused-mlp": lambda spec: _unfused(_nf_kernels(spec, "nf_kernels-unfused-mlp")),
    "nf_kernels-two-nodes": lambda spec: _two_nodes(_nf_kernels(spec, "nf_kernels-two-nodes")),
    "normflows": _normflows,
    "nflows": _nflows,
    "zuko": _zuko,
    "FrEIA": _freia,
}


def library_notes(spec: ModelSpec) -> dict[str, str]:
    """How each library builds `spec`'s kind of model: :data:`LIBRARY_NOTES` or :data:`NSF_LIBRARY_NOTES`."""
    return NSF_LIBRARY_NOTES if isinstance(spec, NSFSpec) else LIBRARY_NOTES


def build(library: str, spec: ModelSpec) -> BenchModel:
    """`library`'s model of `spec`, a RealNVP or an NSF (float32, on the CPU; move it with ``.to``).

    Raises:
        ValueError: `library` is not one of `LIBRARIES`.
        LibraryUnavailable: the library is not installed.
        Unsupported: the library cannot express the model, or has no NSF here (normflows, FrEIA: the NSF is
            compared with nflows and zuko, `NSF_PEERS`).

    Example:
        >>> model = build("nf_kernels", RealNVPSpec(features=4, couplings=2, hidden=8))
        >>> model.log_prob(torch.zeros(3, 4)).shape
        torch.Size([3])
    """
    if library not in LIBRARIES:
        raise ValueError(f"unknown library {library!r}: valid choices are {', '.join(LIBRARIES)}")
    if isinstance(spec, NSFSpec):
        if library not in _NSF_BUILDERS:
            raise Unsupported(f"no NSF of {library} in this benchmark: it compares {', '.join(NSF_PEERS)}")
        return _NSF_BUILDERS[library](spec)
    return _BUILDERS[library](spec)
