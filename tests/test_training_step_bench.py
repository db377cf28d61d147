"""The training-step benchmark against the peer libraries (nf_kernels/benchmarking/peer_models.py,
training_step.py, step_profile.py and benchmarks/training_step.py), at tiny sizes, for the RealNVP and the NSF. Peers that are not installed
are skipped: they are benchmark dependencies (requirements-bench.txt), not test ones."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FUSED_CPU_BACKENDS

from nf_kernels.benchmarking import peer_models, step_profile, training_step
from nf_kernels.benchmarking.peer_models import (
    LIBRARIES,
    NSF_LIBRARIES,
    PEERS,
    NSFSpec,
    RealNVPSpec,
    build,
    expected_init_log_prob,
)
from nf_kernels.flows import StandardNormal

REPO = Path(__file__).resolve().parents[1]
TINY = RealNVPSpec(features=4, couplings=4, hidden=8)
TINY_NSF = NSFSpec(features=4, hidden=8, bins=4)


def _build_or_skip(library: str, spec=TINY) -> peer_models.BenchModel:
    torch.manual_seed(0)
    try:
        return build(library, spec)
    except peer_models.LibraryUnavailable as error:
        pytest.skip(str(error))


@pytest.mark.parametrize("library", LIBRARIES)
def test_every_model_computes_its_predicted_init_log_prob_and_trains(library):
    model = _build_or_skip(library)
    x = peer_models.sample_batch(TINY, 16)
    expected = expected_init_log_prob(model, TINY, x)
    torch.testing.assert_close(model.log_prob(x), expected, rtol=1e-5, atol=1e-5)
    if model.init_scale == 1:  # the identity at init, as ours: the same log-prob as ours
        torch.testing.assert_close(model.log_prob(x), build("nf_kernels", TINY).log_prob(x), rtol=1e-5, atol=1e-5)
    before = [p.detach().clone() for p in model.parameters()]
    step = training_step.training_step(model, torch.optim.Adam(model.parameters(), lr=1e-2), x)
    assert math.isfinite(float(step()))
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters())), "the step changed nothing"


@pytest.mark.parametrize("library", LIBRARIES)
def test_every_model_has_the_same_parameters_as_ours(library):
    """Same architecture, counted: 4 couplings of an MLP 2 -> 8 -> 8 -> 4 each."""
    ours = sum(p.numel() for p in build("nf_kernels", TINY).parameters())
    assert ours == 4 * ((2 * 8 + 8) + (8 * 8 + 8) + (8 * 4 + 4))
    assert sum(p.numel() for p in _build_or_skip(library).parameters()) == ours


def test_the_init_check_tells_nflows_scale_map_apart():
    """nflows' scale at zero is sigmoid(2) + 1e-3: the base density alone would be the wrong prediction."""
    model = _build_or_skip("nflows")
    x = peer_models.sample_batch(TINY, 16)
    identity = peer_models.BenchModel("identity", model.network, model.log_prob)  # init_scale 1
    assert not torch.allclose(model.log_prob(x), expected_init_log_prob(identity, TINY, x), rtol=1e-3)


def test_bad_specs_and_libraries_are_rejected():
    with pytest.raises(ValueError, match="even"):
        RealNVPSpec(features=3)
    with pytest.raises(ValueError, match="couplings"):
        RealNVPSpec(features=4, couplings=0)
    with pytest.raises(ValueError, match="valid choices"):
        build("tensorflow", TINY)
    with pytest.raises(ValueError, match="valid choices"):
        training_step.run_training_steps([TINY], ["nf_kernels", "pyro"], progress=False)


def test_the_round_robin_times_every_model_and_ratios_against_the_fastest_peer(monkeypatch):
    """A peer that is not installed is skipped with a line; a model that fails the init check is not timed."""
    real_build = training_step.build

    def fake_build(library, spec):
        if library == "zuko":
            raise peer_models.LibraryUnavailable("zuko is not installed (test)")
        model = real_build(library, spec)
        if library == "nf_kernels-reference":
            model.init_scale = 0.5  # a wrong prediction: the check must catch it
        return model

    monkeypatch.setattr(training_step, "build", fake_build)
    skipped = []
    libraries = ["nf_kernels", "nf_kernels-reference", "zuko"] + [p for p in PEERS if p != "zuko"]
    results = training_step.run_training_steps([TINY], libraries, batch=8, steps=1, warmup=0, rounds=2,
                                               progress=False, on_skip=skipped.append)  # fmt: skip
    by_library = {r.library: r for r in results}
    assert "not installed" in by_library["zuko"].error and not by_library["zuko"].round_seconds
    assert "init check failed" in by_library["nf_kernels-reference"].error
    assert any("zuko" in line for line in skipped) and any("init check" in line for line in skipped)
    ours = by_library["nf_kernels"]
    assert len(ours.round_seconds) == 2 and ours.saved_bytes > 0 and math.isfinite(ours.first_loss)
    timed_peers = [r for r in results if r.library in PEERS and r.round_seconds]
    if timed_peers:
        fastest = min(timed_peers, key=lambda r: r.seconds)
        assert ours.fastest_peer == fastest.library
        for i, ratio in enumerate(ours.ratio_rounds):
            assert ratio == pytest.approx(fastest.round_seconds[i] / ours.round_seconds[i])
        assert fastest.ratio_rounds == [1.0, 1.0]
    report = training_step.format_report(dict(_ENV, peers=training_step.peer_versions()),
                                         dict(rounds=2, warmup=0, steps=1, batch=8, autocast=None), results)
    assert "## Not timed" in report and "zuko: not installed" in report
    assert "| nf_kernels |" in report and "CUDA peak" not in report


_ENV = dict(device_name="test CPU", date="2026-12-02T00:00:00", commit="abc", base_commit="abc", torch="x",
            python="3", threads=1, device="cpu", cores=2, load_average_1m=0.1, load_average_1m_end=0.1)


def test_goals_are_judged_on_the_median_ratio():
    spec = RealNVPSpec(64)
    ours = training_step.StepResult("nf_kernels", spec, 8, round_seconds=[1.0], ratio_rounds=[1.19],
                                    fastest_peer="zuko")  # fmt: skip
    saving = training_step.StepResult("nf_kernels-memory-saving", spec, 8, round_seconds=[1.3])
    lines = training_step.goal_lines([ours, saving])
    assert lines[0].endswith(">= 1.2x: not met") and "(zuko)" in lines[0]
    assert lines[1].endswith("<= 1.35x: met")


@pytest.mark.parametrize("name, kind", [
    ("aten::addmm", "conditioner linear layers"),
    ("autograd::engine::evaluate_function: AddmmBackward0", "conditioner linear layers"),
    ("autograd::engine::evaluate_function: TBackward0", "conditioner linear layers"),
    ("nf_kernels_ext::mlp", "conditioner linear layers"),  # the MLP's fused node
    ("autograd::engine::evaluate_function: torch::autograd::CppNode<nf_kernels::(anonymous namespace)::Mlp>",
     "conditioner linear layers"),
    ("aten::relu", "activations (ReLU)"),
    ("autograd::engine::evaluate_function: ReluBackward0", "activations (ReLU)"),
    ("nf_kernels::coupling", "coupling op, forward"),
    ("nf_kernels::coupling_backward", "coupling op, backward"),
    ("nf_kernels_ext::coupling", "coupling op, forward"),  # the eager path
    ("autograd::engine::evaluate_function: torch::autograd::CppNode<nf_kernels::(anonymous namespace)::Coupling>",
     "coupling op, backward"),
    ("autograd::engine::evaluate_function: GeneratedBackwardFor_nf_kernels_coupling_defaultBackward",
     "coupling op, backward"),
    ("Optimizer.step#Adam.step", "optimizer (Adam step, zero_grad)"),
    ("aten::cat", "slices, cat, index, copies"),
    ("autograd::engine::evaluate_function: SliceBackward0", "slices, cat, index, copies"),
    ("autograd::engine::evaluate_function: torch::autograd::AccumulateGrad", "gradient accumulation (.grad)"),
    ("aten::add", "elementwise glue: log-det sums, base density, loss"),
    ("autograd::engine::evaluate_function: PowBackward0", "elementwise glue: log-det sums, base density, loss"),
    ("_SquaredNorm", "elementwise glue: log-det sums, base density, loss"),
    ("autograd::engine::evaluate_function: _SquaredNormBackward", "elementwise glue: log-det sums, base density, loss"),
    ("aten::t", "views and reshapes"),
])  # fmt: skip
def test_op_names_map_to_their_layer_kind(name, kind):
    assert step_profile.op_kind(name) == kind


class _Event:
    def __init__(self, name, parent=None):
        self.name, self.cpu_parent = name, parent


_LAYER_NODE_BACKWARD = "torch::autograd::CppNode<nf_kernels::(anonymous namespace)::MlpCoupling>"


@pytest.mark.parametrize("chain, phase, kind", [
    (["nf_kernels_ext::mlp_coupling", "aten::addmm"], "forward", "conditioner linear layers"),
    (["nf_kernels_ext::mlp_coupling", "aten::relu"], "forward", "conditioner linear layers"),
    (["nf_kernels_ext::mlp_coupling", "nf_kernels_ext::coupling_forward", "aten::empty"], "forward",
     "coupling op, forward"),
    (["nf_kernels_ext::mlp_coupling"], "forward", "coupling op, forward"),
    ([f"autograd::engine::evaluate_function: {_LAYER_NODE_BACKWARD}", _LAYER_NODE_BACKWARD,
      "nf_kernels_ext::coupling_backward"], "backward", "coupling op, backward"),
    ([f"autograd::engine::evaluate_function: {_LAYER_NODE_BACKWARD}", _LAYER_NODE_BACKWARD, "aten::sum"], "backward",
     "conditioner linear layers"),
    ([f"autograd::engine::evaluate_function: {_LAYER_NODE_BACKWARD}", _LAYER_NODE_BACKWARD], "backward",
     "coupling op, backward"),
    (["aten::sum"], "backward", "elementwise glue: log-det sums, base density, loss"),
    # Memory-saving backprop's Python node: its own time is Python's, its ops are charged by their kind.
    (["autograd::engine::evaluate_function: _InvertibleStackBackward", "_InvertibleStackBackward"], "backward",
     "Python between ops (module calls, checks, the flow's loop)"),
    (["autograd::engine::evaluate_function: _InvertibleStackBackward", "_InvertibleStackBackward", "aten::addmm"],
     "backward", "conditioner linear layers"),
    (["_InvertibleStackBackward", "nf_kernels_ext::mlp_coupling_rebuilt_backward",
      "nf_kernels_ext::coupling_backward"], "backward", "coupling op, backward"),
    (["_InvertibleStack", "nf_kernels_ext::mlp_coupling", "aten::addmm"], "forward", "conditioner linear layers"),
])  # fmt: skip
def test_a_layer_nodes_work_is_charged_to_the_coupling_and_the_conditioner(chain, phase, kind):
    event = _Event(f"bench::{phase}")
    for name in chain:
        event = _Event(name, event)
    found_phase, top, inside = step_profile._phase_and_top(event)
    assert found_phase == phase
    assert step_profile._kind(top, inside) == kind


def test_the_profile_charges_the_whole_step_to_kinds():
    (profile,) = step_profile.profile_models([TINY], batch=8, steps=2)
    charged = sum(profile.kind_seconds(kind) for kind in step_profile.KINDS)
    # Every self time is charged once: the kinds add up to the step (and the few events around it).
    assert charged == pytest.approx(profile.step_seconds, rel=0.05)
    for kind in ("coupling op, forward", "coupling op, backward", "conditioner linear layers",
                 "optimizer (Adam step, zero_grad)"):  # fmt: skip
        assert profile.kind_seconds(kind) > 0, kind
    assert profile.cpu["coupling op, backward"].keys() == {"backward"}
    table = step_profile.format_profile(profile)
    assert "| coupling op, forward |" in table and "% of step" in table


def test_the_entry_point_runs_end_to_end(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, str(REPO / "benchmarks" / "training_step.py"), "--sizes", "4", "--steps", "1",
               "--rounds", "1", "--warmup", "0", "--batch", "8", "--profile", "--no-progress", "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (markdown,) = tmp_path.glob("*-training-step.md")
    (record,) = tmp_path.glob("*-training-step.json")
    (profile,) = tmp_path.glob("*-training-step-profile.md")
    data = json.loads(record.read_text())
    timed = {r["library"] for r in data["results"] if r["seconds"]}
    assert {"nf_kernels", "nf_kernels-reference", "nf_kernels-memory-saving"} <= timed
    for r in data["results"]:
        assert r["library"] in timed or "not installed" in r["error"], r
        assert (f"| {r['library']} |" in markdown.read_text()) == (r["library"] in timed)
    assert "## D=4" in profile.read_text() and data["profile"][0]["label"] == "D=4"


def test_the_entry_point_rejects_bad_arguments():
    command = [sys.executable, str(REPO / "benchmarks" / "training_step.py"), "--sizes", "3"]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 2 and "--sizes must be even" in done.stderr


def test_autocast_runs_the_forward_in_bf16(monkeypatch):
    seen = set()

    def build_and_watch(library, spec):
        model = build(library, spec)
        linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
        linear.register_forward_hook(lambda module, inputs, output: seen.add(output.dtype))
        return model

    monkeypatch.setattr(training_step, "build", build_and_watch)
    (result,) = training_step.run_training_steps([TINY], ["nf_kernels"], batch=8, steps=1, warmup=0, rounds=1,
                                                 autocast=torch.bfloat16, progress=False)  # fmt: skip
    assert result.error is None and result.round_seconds and math.isfinite(result.first_loss)
    assert torch.bfloat16 in seen  # the init check runs in float32, the steps in bf16


@pytest.mark.parametrize("name, fused", [("adam", False), ("fused-adam", True)])
def test_every_model_steps_with_the_chosen_optimizer(monkeypatch, name, fused):
    made = []

    def watched(parameters):
        optimizer = original(parameters)
        made.append(optimizer)
        return optimizer

    original = training_step.OPTIMIZERS[name]
    monkeypatch.setitem(training_step.OPTIMIZERS, name, watched)
    libraries = ["nf_kernels", "nf_kernels-reference"]
    results = training_step.run_training_steps([TINY], libraries, batch=8, steps=1, warmup=0, rounds=1,
                                               optimizer=name, progress=False)  # fmt: skip
    assert all(r.error is None for r in results) and len(made) == len(libraries)
    assert all(bool(o.defaults["fused"]) == fused and o.defaults["lr"] == training_step.LEARNING_RATE for o in made)
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        training_step.run_training_steps([TINY], libraries, optimizer="sgd", progress=False)
    (profile,) = step_profile.profile_models([TINY], batch=8, steps=1, repeats=1, make_optimizer=watched)
    assert len(made) == len(libraries) + 1 and profile.step_seconds > 0


def test_a_fused_adam_run_writes_files_of_its_own(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, str(REPO / "benchmarks" / "training_step.py"), "--sizes", "4", "--steps", "1",
               "--rounds", "1", "--warmup", "0", "--batch", "8", "--libraries", "nf_kernels", "--optimizer",
               "fused-adam", "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (markdown,) = tmp_path.glob("*-training-step-fused-adam.md")
    assert "Adam on torch's fused kernel" in markdown.read_text()
    assert json.loads(next(tmp_path.glob("*-fused-adam.json")).read_text())["settings"]["optimizer"] == "fused-adam"


# ---- the NSF (issue 14) ------------------------------------------------------------------------------------------


def _nsf_batch(spec: NSFSpec = TINY_NSF, batch: int = 32) -> torch.Tensor:
    """Most of it inside [-bound, bound], some outside, where every library's spline is the identity."""
    return peer_models.sample_batch(spec, batch) * 2


@pytest.mark.parametrize("library", NSF_LIBRARIES)
def test_every_nsf_starts_as_the_identity_and_trains(library):
    model = _build_or_skip(library, TINY_NSF)
    x = _nsf_batch()
    assert model.init_scale == 1
    base = StandardNormal((TINY_NSF.features,)).log_prob(x)  # the identity: the base density of x
    torch.testing.assert_close(expected_init_log_prob(model, TINY_NSF, x), base)
    torch.testing.assert_close(model.log_prob(x), base, rtol=1e-5, atol=1e-5)
    before = [p.detach().clone() for p in model.parameters()]
    step = training_step.training_step(model, torch.optim.Adam(model.parameters(), lr=1e-2), x)
    assert math.isfinite(float(step()))
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters())), "the step changed nothing"
    after = model.log_prob(x)
    assert not torch.allclose(after, base, atol=1e-4), "still the identity after a step"


@pytest.mark.parametrize("library", NSF_LIBRARIES)
def test_every_nsf_has_the_same_parameters_as_ours(library):
    """4 couplings of an MLP 2 -> 8 -> 8 -> 2 * (3 * 4 - 1) each."""
    ours = sum(p.numel() for p in build("nf_kernels", TINY_NSF).parameters())
    assert ours == 4 * ((2 * 8 + 8) + (8 * 8 + 8) + (8 * 22 + 22))
    assert sum(p.numel() for p in _build_or_skip(library, TINY_NSF).parameters()) == ours


def test_nflows_spline_is_the_identity_only_with_our_derivative_bias():
    """nflows' interior derivatives are 1e-3 + softplus(parameter): a zero last layer gives slope 0.694 at the
    knots, not the identity, which the init check must catch."""
    model = _build_or_skip("nflows", TINY_NSF)
    for coupling in model.network._transform._transforms:
        torch.nn.init.zeros_(coupling.transform_net.net[-1].bias)
    x = _nsf_batch()
    assert not torch.allclose(model.log_prob(x), expected_init_log_prob(model, TINY_NSF, x), rtol=1e-3)


def test_the_nsf_matches_nflows_at_trained_parameters():
    """Same conditioner, same parametrization: with nf_kernels' parameters copied into nflows' model (both at
    random, far from the identity), float64 log-probs agree, inside and outside the bound."""
    ours, theirs = build("nf_kernels-reference", TINY_NSF).double(), _build_or_skip("nflows", TINY_NSF).double()
    torch.manual_seed(3)
    with torch.no_grad():
        for mine, peer in zip(ours.parameters(), theirs.parameters()):
            peer.copy_(mine.add_(0.3 * torch.randn_like(mine)))
    x = _nsf_batch(batch=64).double()
    torch.testing.assert_close(ours.log_prob(x), theirs.log_prob(x), rtol=1e-9, atol=1e-9)


def test_nsf_specs_and_peers_without_one_are_rejected():
    with pytest.raises(ValueError, match="even"):
        NSFSpec(features=5)
    with pytest.raises(ValueError, match="bins"):
        NSFSpec(features=4, bins=0)
    with pytest.raises(ValueError, match="bound"):
        NSFSpec(features=4, bound=float("inf"))
    with pytest.raises(peer_models.Unsupported, match="no NSF of normflows"):
        build("normflows", TINY_NSF)
    results = training_step.run_training_steps([TINY_NSF], ["nf_kernels", "FrEIA"], batch=8, steps=1, warmup=0,
                                               rounds=1, progress=False, on_skip=lambda line: None)  # fmt: skip
    assert results[1].error.startswith("unsupported: no NSF of FrEIA") and results[0].round_seconds


def test_the_nsf_memory_goal_is_judged_against_nflows():
    spec = NSFSpec(8)
    ours = training_step.StepResult("nf_kernels", spec, 8, round_seconds=[1.0], ratio_rounds=[1.5],
                                    fastest_peer="zuko", saved_bytes=1 << 20)  # fmt: skip
    nflows = training_step.StepResult("nflows", spec, 8, round_seconds=[2.0], saved_bytes=3 << 20)
    saving = training_step.StepResult("nf_kernels-memory-saving", spec, 8, round_seconds=[1.2], ratio_rounds=[1.25],
                                      fastest_peer="zuko", saved_bytes=1 << 19)  # fmt: skip
    recompute = training_step.StepResult("nf_kernels-recompute", spec, 8, round_seconds=[1.1], ratio_rounds=[1.4],
                                         fastest_peer="zuko", saved_bytes=1 << 18)  # fmt: skip
    lines = training_step.goal_lines([ours, saving, recompute, nflows])
    assert lines[0] == ("D=8 nf_kernels: the step saves 1 MiB of activations, 0.333 of nflows' 3 MiB; goal <= 0.25: "
                        "not met"), lines
    assert lines[1].startswith("D=8 nf_kernels-memory-saving: the step saves 0.5 MiB") and lines[1].endswith(": met")
    assert lines[2].startswith("D=8 nf_kernels-recompute: the step saves 0.25 MiB") and lines[2].endswith(": met")
    assert lines[3] == "D=8 nf_kernels: the step is 1.50x the fastest peer (zuko) (no goal set)"
    assert lines[5] == "D=8 nf_kernels-recompute: the step is 1.40x the fastest peer (zuko) (no goal set)"
    assert len(lines) == 6  # no issue 12 memory-saving time goal for the NSF
    nflows.saved_bytes = 4 << 20
    assert training_step.goal_lines([ours, nflows])[0].endswith(": met")


def test_the_nsf_entry_point_writes_a_row_per_library(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, str(REPO / "benchmarks" / "training_step.py"), "--model", "nsf", "--sizes", "4",
               "--steps", "1", "--rounds", "1", "--warmup", "0", "--batch", "8", "--no-progress", "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (markdown,) = tmp_path.glob("*-nsf-step.md")
    (record,) = tmp_path.glob("*-nsf-step.json")
    text, data = markdown.read_text(), json.loads(record.read_text())
    assert {r["library"] for r in data["results"]} == set(NSF_LIBRARIES)
    assert all(r["spec"]["model"] == "NSF" and r["spec"]["bins"] == 8 for r in data["results"])
    for r in data["results"]:
        installed = not (r["error"] or "").startswith("not installed")
        assert (f"| {r['library']} |" in text) == installed and (r["seconds"] is not None) == installed, r
        assert installed or r["library"] in peer_models.NSF_PEERS
    assert "## NSF D=4: 4 spline couplings (8 bins on [-3, 3], linear tails), hidden 64" in text
    assert "## How each library builds the NSF" in text and "MonotonicRQSTransform" in text
    if "| nflows |" in text:
        assert "of nflows'" in text  # the memory goal was judged


def test_each_fused_nodes_gain_is_the_row_without_it_over_ours_round_by_round():
    spec = RealNVPSpec(64)
    ours = training_step.StepResult("nf_kernels", spec, 8, round_seconds=[1.0, 2.0, 1.0])
    unfused = training_step.StepResult("nf_kernels-unfused-mlp", spec, 8, round_seconds=[1.1, 2.4, 1.05])
    two_nodes = training_step.StepResult("nf_kernels-two-nodes", spec, 8, round_seconds=[1.03, 2.1, 1.02])
    lines = training_step.fused_node_lines([ours, unfused, two_nodes])
    assert lines == [
        "D=64: the MLP's fused node makes the step 1.10x faster (1.05-1.20; nf_kernels-unfused-mlp over "
        "nf_kernels, round by round) (no goal set)",
        "D=64: the coupling layer's one node makes the step 1.03x faster (1.02-1.05; nf_kernels-two-nodes over "
        "nf_kernels, round by round) (no goal set)",
    ], lines
    assert set(lines) <= set(training_step.goal_lines([ours, unfused, two_nodes]))
    assert training_step.fused_node_lines([ours]) == []


def test_the_two_node_row_runs_each_coupling_as_two_nodes():
    ours, two = (peer_models.build(name, RealNVPSpec(4, couplings=2, hidden=8)) for name in
                 ("nf_kernels", "nf_kernels-two-nodes"))  # fmt: skip
    x = torch.randn(3, 4)
    layers = [[m for m in model.network.modules() if hasattr(m, "_one_node")] for model in (ours, two)]
    assert all(m._one_node for m in layers[0]) and not any(m._one_node for m in layers[1])
    one_node = "MlpCoupling"  # the layer's node (csrc/ops/mlp_coupling.cpp), when the extension is built
    if "cpu" in FUSED_CPU_BACKENDS:
        assert one_node in layers[0][0](x)[0].grad_fn.name()
    assert all(one_node not in layer(x)[0].grad_fn.name() for layer in layers[1])
    assert "nf_kernels-two-nodes" not in peer_models.NSF_LIBRARIES
