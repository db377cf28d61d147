"""nf_kernels.compat.accelerate itself: what it walks, what it reports, and that it can be run twice."""

import pytest
import torch

import nf_kernels.compat
from nf_kernels.compat import Accelerated, accelerate


def test_accelerate_walks_nested_lists_of_layers_of_several_libraries_keeping_their_weights():
    nflows_transforms = pytest.importorskip("nflows.transforms")
    freia_modules = pytest.importorskip("FrEIA.modules")
    nets = pytest.importorskip("nflows.nn.nets")
    coupling = nflows_transforms.AffineCouplingTransform([1, 0, 1, 0], lambda i, o: nets.ResidualNet(i, o, 8))
    block = freia_modules.GLOWCouplingBlock([(4,)], subnet_constructor=lambda i, o: torch.nn.Linear(i, o))
    weights = [p.clone() for p in (*coupling.parameters(), *block.parameters())]
    report = accelerate([coupling, [block, torch.nn.Linear(4, 4)]])
    assert [r.path for r in report.replaced] == ["0", "1.0"]
    assert isinstance(coupling, Accelerated) and isinstance(coupling, nflows_transforms.AffineCouplingTransform)
    assert all(torch.equal(a, b) for a, b in zip(weights, (*coupling.parameters(), *block.parameters())))
    assert "replaced     0: nflows.transforms.coupling.AffineCouplingTransform -> " in str(report)


def test_accelerating_twice_changes_nothing_and_says_so():
    nf = pytest.importorskip("normflows")
    flow = nf.NormalizingFlow(nf.distributions.DiagGaussian(4), [nf.flows.AffineCouplingBlock(nf.nets.MLP([2, 8, 4]))])
    assert len(accelerate(flow).replaced) == 1
    again = accelerate(flow)
    assert not again.replaced and again.left_alone[0].reason == "already a fused drop-in"


def test_the_backend_is_set_on_the_replaced_layers_and_checked():
    nf = pytest.importorskip("normflows")
    block = nf.flows.AffineCouplingBlock(nf.nets.MLP([2, 8, 4]))
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        accelerate(block, backend="fast")
    assert not isinstance(block, Accelerated)  # nothing changed by the failed call
    accelerate(block, backend="reference")
    assert block.nf_kernels_backend == "reference"


def test_a_model_without_peer_layers():
    report = accelerate(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    assert not report.replaced and not report.left_alone
    assert str(report) == "no layer of a supported library found"


def test_importing_compat_imports_no_peer_library():
    import subprocess
    import sys

    code = "import sys, nf_kernels.compat; print(sorted(m for m in ('normflows', 'nflows', 'zuko', 'FrEIA', 'pyro') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert nf_kernels.compat.__all__


def test_accelerate_swaps_the_spline_couplings_it_can_and_says_why_not_the_others():
    nflows_transforms = pytest.importorskip("nflows.transforms")
    nets = pytest.importorskip("nflows.nn.nets")
    zuko = pytest.importorskip("zuko")
    nf = pytest.importorskip("normflows")

    def net(i, o):
        return nets.ResidualNet(i, o, 8)

    spline = nflows_transforms.PiecewiseRationalQuadraticCouplingTransform
    layers = [spline([1, 0, 1, 0], net, tails="linear"), spline([1, 0, 1, 0], net),
              zuko.flows.GeneralCouplingTransform(4, univariate=zuko.transforms.MonotonicRQSTransform,
                                                  shapes=[(4,), (4,), (3,)]),
              nf.flows.CoupledRationalQuadraticSpline(4, 1, 8)]  # fmt: skip
    weights = [p.clone() for layer in layers for p in layer.parameters()]
    report = accelerate(layers)
    assert [r.path for r in report.replaced] == ["0", "2"], report
    assert isinstance(layers[0], spline) and isinstance(layers[0], Accelerated)
    assert all(torch.equal(a, b) for a, b in zip(weights, (p for layer in layers for p in layer.parameters())))
    reasons = {entry.path: entry.reason for entry in report.left_alone}
    assert set(reasons) == {"1", "3"} and "tails=None" in reasons["1"] and "unconditional spline" in reasons["3"]
