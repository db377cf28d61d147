"""The benchmarking library (nf_kernels.benchmarking) on the CPU: byte counts, that every provider computes the
same function, table and target logic, and a tiny end-to-end run that writes its files."""

import importlib.util
import json
import math
import os
import subprocess
import types
from pathlib import Path

import pytest
import torch

import nf_kernels
from nf_kernels.benchmarking import machine
from nf_kernels.benchmarking.byte_model import backward_bytes, bytes_moved, forward_bytes
from nf_kernels.benchmarking.cases import OVERHEAD_SHAPES, OpCase, OverheadCase, op_cases, overhead_cases, sample_shape
from nf_kernels.benchmarking.environment import environment
from nf_kernels.benchmarking.model_runner import BENCHMARKED_MODELS, ModelResult, run_model_benchmarks
from nf_kernels.benchmarking.op_runner import OpResult, add_speedups, median_round, run_cases, timed_call
from nf_kernels.benchmarking.overhead_runner import STAGES, run_overhead
from nf_kernels.benchmarking.presets import PlanRun, Preset, preset, run_plan
from nf_kernels.benchmarking.providers import FusedBackend, available_providers, make_provider
from nf_kernels.benchmarking.report import (
    format_overhead_table, format_report, format_summary, format_table, largest_size, timing_warnings, write_results,
)  # fmt: skip
from nf_kernels.benchmarking.targets import check_targets
from nf_kernels.benchmarking.timing import TimingBudget, measure
from nf_kernels.cli import main as cli_main
from nf_kernels.flows import MODELS as FLOW_MODELS

CPU = torch.device("cpu")
TINY = TimingBudget(warmup_ms=1, rep_ms=2, min_run_time_s=0.002)
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "op, mask, forward, backward",
    [("affine", "half", 3, 5), ("affine", "checkerboard", 4, 7), ("additive", "half", 2.5, 2.5),
     ("additive", "checkerboard", 3, 3)],
)  # fmt: skip
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_byte_counts_follow_the_cost_model(op, mask, forward, backward, dtype):
    case = OpCase(op, "forward+backward", mask, dtype, 2**16)
    elements_bytes = case.numel * case.torch_dtype.itemsize
    batch = case.shape[0]
    logdet_bytes = batch * 4  # float32 log-det for fp32 and bf16
    assert forward_bytes(case) == forward * elements_bytes + logdet_bytes
    assert backward_bytes(case) == backward * elements_bytes + (0 if op == "additive" else logdet_bytes)
    assert bytes_moved(case) == forward_bytes(case) + backward_bytes(case)
    assert bytes_moved(OpCase(op, "inverse", mask, dtype, 2**16)) == forward_bytes(case)


def test_cases_have_the_shapes_the_ops_accept():
    for case in op_cases([2**6, 2**9, 2**16], ["fp32"], directions=["forward"]):
        assert math.prod(case.shape) == case.numel
        x, h = case.inputs(CPU)
        assert h.shape == case.h_shape
        coupling = nf_kernels.additive_coupling if case.additive else nf_kernels.affine_coupling
        y, _ = coupling(x, h, mask=case.mask, backend="reference")  # raises if the shapes do not fit the mask
        assert y.shape == x.shape
    assert sample_shape(2**30) == (4, 64, 64)


@pytest.mark.parametrize("bad", [dict(numel=3000), dict(numel=8), dict(op="spline"), dict(dtype="fp64")])
def test_bad_cases_are_rejected(bad):
    fields = dict(op="affine", direction="forward", mask="half", dtype="fp32", numel=2**12) | bad
    with pytest.raises(ValueError):
        OpCase(**fields)


def test_unknown_provider_lists_the_valid_ones():
    with pytest.raises(ValueError, match="'eager'"):
        make_provider("numpy")
    assert available_providers(CPU, ["eager", "triton"]) == ["eager"]  # the interpreter is never timed


def _fused_cpu_providers():
    names = ["cpu"] if FusedBackend("cpu").why_unavailable(CPU) is None else []
    # Under the interpreter (tests/conftest.py sets it), Triton computes correctly though it is never timed.
    return names + ["triton"] if nf_kernels._dispatch.why_unavailable("triton", CPU) is None else names


@pytest.mark.parametrize("provider", ["eager", "compile"] + _fused_cpu_providers())
@pytest.mark.parametrize("op, mask", [("affine", "checkerboard"), ("additive", "half")])
def test_every_provider_computes_the_reference_function(provider, op, mask):
    """A speedup means something only if the contenders compute the same thing: values and gradients."""
    case = OpCase(op, "forward+backward", mask, "fp32", 2**8)
    x, h = case.inputs(CPU)
    results = []
    for name in ("eager", provider):
        xr, hr = x.clone().requires_grad_(True), h.clone().requires_grad_(True)
        fn = make_provider(name).coupling(case)
        y, logdet = fn(xr, hr)
        grads = timed_call(fn, case, xr, hr)()
        results.append((y.detach(), logdet.detach(), *grads))
    for ours, reference in zip(*results):
        if reference is None:  # additive: the reference logdet is a constant, no gradient flows to it
            continue
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def _result(case, provider, ms, copy_rate=100e9):
    return OpResult(case, provider, ms / 1e3 if ms else None, bytes_moved(case), copy_rate,
                    error=None if ms else "RuntimeError: boom")  # fmt: skip


def test_table_shows_every_provider_and_the_best_fused_figures():
    case = OpCase("affine", "forward", "half", "fp32", 2**20)
    rows = [_result(case, "eager", 4.0), _result(case, "compile", 2.0), _result(case, "cpu", 1.0),
            _result(case, "cuda", None)]  # fmt: skip
    add_speedups(rows)
    assert rows[2].speedup_vs_eager == pytest.approx(4.0) and rows[2].speedup_vs_compile == pytest.approx(2.0)
    table = format_table(rows)
    header, _, line = table.splitlines()[:3]
    assert "eager ms" in header and "cuda ms" in header
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    gbps = bytes_moved(case) / 1e-3 / 1e9
    assert cells[5:9] == ["4", "2", "fail", "1"]  # providers in PROVIDERS order: ..., cuda, cpu
    assert cells[9:14] == ["cpu", f"{gbps:.3g}", f"{gbps / 100:.0%}", "4.00", "2.00"]
    assert "cuda: RuntimeError: boom" in table


def test_targets_judge_the_worst_case_of_the_best_fused_backend():
    big, small = OpCase("affine", "forward", "half", "fp32", 2**26), OpCase("affine", "forward", "half", "fp32", 2**16)
    floor_ms = bytes_moved(big) / 100e9 * 1e3
    rows = [_result(big, "triton", floor_ms / 0.95), _result(big, "cuda", floor_ms / 0.5),  # best: 95%
            _result(small, "triton", floor_ms)]  # below 2^26: not judged  # fmt: skip
    checks = {c.description.split(",")[0]: c for c in check_targets("cuda", rows)}
    forward = checks["fused forward"]
    assert forward.met and forward.measured == pytest.approx(0.95) and "triton" in forward.worst_case
    assert checks["fused forward+backward"].met is None  # nothing measured: neither met nor missed
    rows[0].seconds *= 2
    assert check_targets("cuda", rows)[0].met is False


def test_largest_size_keeps_one_size_per_configuration():
    rows = [_result(case, "eager", 1.0) for case in op_cases([2**10, 2**12], ["fp32"], ["affine"], ["forward"])]
    assert {r.case.numel for r in largest_size(rows)} == {2**12}
    assert len(largest_size(rows)) == 2  # half and checkerboard


def test_tiny_run_writes_markdown_json_and_plot(tmp_path):
    cases = list(op_cases([2**10, 2**12], ["fp32"], ["affine"], ["forward", "forward+backward"], ["half"]))
    results = run_cases(CPU, cases, ["eager"], progress=False, budget=TINY, copy_bytes=1 << 20)
    assert len(results) == 4 and all(r.seconds and r.gbps > 0 and r.copy_fraction > 0 for r in results)
    assert all(r.speedup_vs_eager == 1.0 and r.peak_bytes is None for r in results)
    env = environment(CPU)
    models = [ModelResult("realnvp", "reference", False, 2, (3, 8, 8), seconds=0.5)]
    paths = write_results(tmp_path, env, results, models, check_targets("cpu", results, models), "test")
    assert {p.suffix for p in paths} == {".md", ".json", ".png"}
    record = json.loads(next(p for p in paths if p.suffix == ".json").read_text())
    assert record["environment"]["torch"] == torch.__version__ and len(record["ops"]) == 4
    assert record["ops"][0]["gbps"] > 0 and record["models"][0]["samples_per_s"] == 4.0
    summary = next(p for p in paths if p.name.endswith("summary.md")).read_text()
    assert "| affine | forward | half | fp32 | 2^12 |" in summary


def test_the_benchmarked_models_are_flow_models():
    assert set(BENCHMARKED_MODELS) <= set(FLOW_MODELS)


def test_model_benchmark_times_a_training_step():
    results = run_model_benchmarks(CPU, ["realnvp"], ["reference"], [False, True], batch=2, sample_shape=(3, 8, 8),
                                   sizes={"hidden": 8, "num_steps": 1}, progress=False, budget=TINY)  # fmt: skip
    result, saving = results
    assert result.error is None and result.seconds > 0 and math.isfinite(result.first_loss)
    assert result.to_dict()["sizes"] == {"hidden": 8, "num_steps": 1}
    assert result.speedup_vs_reference == 1.0
    assert saving.memory_saving and saving.first_loss == result.first_loss  # the same model, the same loss
    assert result.time_vs_standard is None and saving.time_vs_standard == saving.seconds / result.seconds


@pytest.fixture
def run_script(monkeypatch):
    """benchmarks/run.py as a module; what its main() changes globally is put back after the test."""
    # run.py sets OMP_WAIT_POLICY when imported: let monkeypatch undo it after the test.
    monkeypatch.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    # main() sets inductor's compile_threads on the CPU. Restored by hand: monkeypatch's undo of an attribute that
    # is not in the object's __dict__ (inductor's config module) deletes it in pytest >= 9.2 instead of restoring it.
    import torch._inductor.config as inductor_config

    compile_threads = inductor_config.compile_threads
    spec = importlib.util.spec_from_file_location("benchmarks_run", REPO / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    inductor_config.compile_threads = compile_threads


def test_run_script_rejects_bad_arguments(capsys, run_script):
    run = run_script
    for argv in (["--model-batch", "-3"], ["--preset", "huge"], ["--log2-sizes", "99"]):
        with pytest.raises(SystemExit) as exit_info:
            run.parse_args(argv)
        assert exit_info.value.code == 2
    assert "--log2-sizes" in capsys.readouterr().err


def test_run_script_options_replace_the_preset_dimensions(tmp_path, capsys, run_script):
    run = run_script
    argv = ["--preset", "tiny", "--what", "ops", "--providers", "eager", "--log2-sizes", "8", "--ops", "additive",
            "--directions", "inverse", "--out", str(tmp_path), "--no-progress", "--device", "cpu",
            "--system-malloc"]  # the test process's malloc stays as it is  # fmt: skip
    assert run.main(argv) == 0
    out = capsys.readouterr().out
    assert "| additive | inverse | half | fp32 | 2^8 |" in out and "| additive | inverse | checkerboard |" in out
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_a_plan_run_announces_itself_then_saves_after_every_case(tmp_path, monkeypatch):
    cases = tuple(op_cases([2**8, 2**10], ["fp32"], ["additive"], ["forward"], ["half"]))
    plan = Preset("two cases", cases, TINY, models=())
    saves, started = [], []

    def recording_write_results(out_dir, env, op_results, *rest, **options):
        saves.append((len(op_results), options.get("plots", True)))
        return write_results(out_dir, env, op_results, *rest, **options)

    monkeypatch.setattr("nf_kernels.benchmarking.presets.write_results", recording_write_results)
    run = run_plan(plan, CPU, progress=False, providers=["eager"], keep_freed_memory=False, out_dir=tmp_path,
                   command="test", save_each_case=True, on_start=lambda env: started.append(dict(env)))  # fmt: skip
    assert saves == [(1, False), (2, False), (2, True)]  # after each case without plots, then the whole run
    assert started[0]["cpu_malloc"] == "system default" and "load_average_1m_end" not in started[0]
    assert "load_average_1m_end" in run.env and [p.parent for p in run.written] == [tmp_path] * len(run.written)


def test_a_failing_case_is_recorded_not_raised():
    def make_call():
        raise RuntimeError("CUDA out of memory. Tried to allocate 8 GiB\n(details)")

    outcome = measure(make_call, CPU, TINY)
    assert outcome.seconds is None and outcome.error == "RuntimeError: CUDA out of memory. Tried to allocate 8 GiB"


def test_rounds_keep_each_providers_median_round():
    case = OpCase("affine", "forward", "half", "fp32", 2**10)
    results = run_cases(CPU, [case], ["eager"], progress=False, budget=TINY, copy_bytes=1 << 20, rounds=3)
    assert len(results) == 1 and results[0].seconds > 0
    attempts = [_result(case, "eager", ms) for ms in (3.0, 1.0, 2.0)]
    assert median_round(attempts).seconds == pytest.approx(2e-3)
    assert median_round(attempts + [_result(case, "eager", None)]).error == "RuntimeError: boom"


# The copy bandwidth is a ceiling, and cases that fit in the last-level cache make no claim about memory.


def _fake_sysfs(root, *entries):
    for i, (level, kind, size) in enumerate(entries):
        index = root / f"index{i}"
        index.mkdir(parents=True)
        for name, value in (("level", level), ("type", kind), ("size", size)):
            (index / name).write_text(f"{value}\n")
    return root


def test_cpu_last_level_cache_is_the_highest_level_in_sysfs(tmp_path):
    sysfs = _fake_sysfs(tmp_path / "cache", (1, "Data", "48K"), (1, "Instruction", "32K"), (2, "Unified", "1024K"),
                        (3, "Unified", "32768K"))  # fmt: skip
    found = machine.cpu_last_level_cache(sysfs)
    assert found.nbytes == 32 << 20 and found.source.startswith("L3")
    (sysfs / "index3" / "size").write_text("unknown\n")  # an unreadable entry is skipped, the next level counts
    assert machine.cpu_last_level_cache(sysfs).nbytes == 1 << 20
    missing = machine.cpu_last_level_cache(tmp_path / "none")
    assert missing.nbytes == 32 << 20 and "fallback" in missing.source


def test_cuda_last_level_cache_is_the_l2(monkeypatch):
    properties = types.SimpleNamespace(L2_cache_size=60 << 20)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: properties)
    assert machine.last_level_cache(torch.device("cuda")).nbytes == 60 << 20
    assert machine.cache_reach("cuda", machine.CacheSize(60 << 20, "L2")) == 60 << 20  # do_bench flushes the L2
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace())
    assert machine.last_level_cache(torch.device("cuda")).nbytes == machine.FALLBACK_BYTES


def test_the_copy_that_measures_the_ceiling_is_beyond_the_cache(monkeypatch):
    monkeypatch.setattr(machine, "last_level_cache", lambda device: machine.CacheSize(96 << 20, "test"))
    assert machine.default_copy_bytes(CPU) == 192 << 20
    monkeypatch.setattr(machine, "last_level_cache", lambda device: machine.CacheSize(1 << 20, "test"))
    assert machine.default_copy_bytes(CPU) == 64 << 20


def test_cases_within_reach_of_the_cache_are_marked_and_make_no_claim(monkeypatch):
    small, large = (OpCase("affine", "forward", "half", "fp32", numel) for numel in (2**10, 2**14))
    monkeypatch.setattr("nf_kernels.benchmarking.op_runner.last_level_cache",
                        lambda device: machine.CacheSize(bytes_moved(small), "test"))  # fmt: skip
    results = run_cases(CPU, [small, large], ["eager"], progress=False, budget=TINY, copy_bytes=1 << 20)
    assert [r.in_cache for r in results] == [True, False]  # reach on the CPU: twice the cache
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in format_table(results).splitlines()]
    share = cells[0].index("% ceiling")
    assert cells[2][share] == "in cache" and cells[3][share].endswith("%")
    assert results[0].to_dict()["in_cache"] is True


def test_targets_leave_out_the_cases_that_fit_in_the_cache():
    big = OpCase("affine", "forward", "half", "fp32", 2**26)
    cached = _result(big, "triton", bytes_moved(big) / 100e9 * 1e3 / 1.9)  # 190% of the ceiling: the cache
    cached.in_cache = True
    forward = check_targets("cuda", [cached])[0]
    assert forward.measured is None and forward.met is None and "fit in the cache" in forward.worst_case


def test_the_report_calls_the_copy_bandwidth_a_ceiling_and_explains_in_cache():
    case = OpCase("affine", "forward", "half", "fp32", 2**20)
    env = dict(environment(CPU), commit="test")
    report = format_report(env, 30e9, [_result(case, "eager", 1.0, 30e9)], [], [])
    assert "ceiling" in report and "(floor)" not in report and "% copy" not in report
    assert "in cache" in report and env["last_level_cache"] in report
    assert env["cache_reach_bytes"] == 2 * machine.last_level_cache(CPU).nbytes


def test_the_quick_cpu_preset_is_beyond_a_32_mib_cache():
    reach = machine.cache_reach("cpu", machine.CacheSize(32 << 20, "a common L3"))
    assert all(bytes_moved(case) > reach for case in preset("quick", "cpu").cases)


# The spread between interleaved rounds is reported, and noisy rounds or a busy machine warn.


def test_rounds_report_min_median_and_max():
    case = OpCase("affine", "forward", "half", "fp32", 2**10)
    combined = median_round([_result(case, "eager", ms) for ms in (3.0, 1.0, 2.0)])
    assert combined.seconds == pytest.approx(2e-3) and combined.spread == pytest.approx(3.0)
    row = combined.to_dict()
    assert row["min_seconds"] == pytest.approx(1e-3) and row["max_seconds"] == pytest.approx(3e-3)
    assert row["round_seconds"] == pytest.approx([3e-3, 1e-3, 2e-3])
    assert median_round([_result(case, "eager", 2.0)]).spread is None  # one round: no spread to report
    assert format_table([combined]).splitlines()[2].endswith("| 3.00x |")


def test_a_plan_measures_its_own_number_of_rounds():
    assert preset("quick", "cpu").rounds == preset("default", "cuda").rounds == 3
    plan = Preset("two", (OpCase("additive", "forward", "half", "fp32", 2**8),), TINY, models=(), rounds=2)
    run = run_plan(plan, CPU, progress=False, providers=["eager"], keep_freed_memory=False)
    (result,) = run.op_results
    assert len(result.round_seconds) == 2 and result.spread >= 1.0


def test_noisy_rounds_and_a_busy_machine_warn():
    case = OpCase("affine", "forward", "half", "fp32", 2**10)
    steady, noisy = median_round([_result(case, "eager", ms) for ms in (1.0, 1.1)]), median_round(
        [_result(case, "cpu", ms) for ms in (1.0, 4.0, 1.2)])  # fmt: skip
    quiet = {"load_average_1m": 0.5, "load_average_1m_end": 1.0, "cores": 2}
    assert timing_warnings(quiet, [steady]) == []
    (spread,) = timing_warnings(quiet, [steady, noisy])
    assert "1 of 2" in spread and "affine forward half fp32 2^10 cpu" in spread and "4.0x" in spread
    (load,) = timing_warnings(dict(quiet, load_average_1m_end=5.0), [steady])
    assert "load average reached 5" in load and "2 cores" in load
    env = dict(environment(CPU), **quiet)
    assert "- warning: timings varied" in format_summary(env, [steady, noisy], [], [])


def test_bench_command_passes_rounds_and_prints_the_warnings(monkeypatch, capsys):
    case = OpCase("affine", "forward", "half", "fp32", 2**10)
    noisy = median_round([_result(case, "cpu", ms) for ms in (1.0, 4.0)])
    calls = []

    def fake_run_plan(plan, device, **options):
        calls.append(options)
        return PlanRun(environment(CPU), [noisy], [], [], [])

    monkeypatch.setattr("nf_kernels.cli.bench.run_plan", fake_run_plan)
    assert cli_main(["bench", "--preset", "tiny", "--device", "cpu", "--rounds", "2", "--no-progress"]) == 0
    assert calls[0]["rounds"] == 2
    assert "warning: timings varied by more than 1.5x" in capsys.readouterr().out


# benchmarks/run.py writes into benchmarks/results only when --out names it.


def test_run_script_writes_outside_the_checkout_unless_told(tmp_path, monkeypatch, capsys, run_script):
    checkout, cwd = tmp_path / "checkout", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.setattr(run_script, "REPO_ROOT", checkout)  # where the published results would be
    monkeypatch.chdir(cwd)
    argv = ["--preset", "tiny", "--what", "ops", "--providers", "eager", "--log2-sizes", "8", "--ops", "additive",
            "--directions", "inverse", "--masks", "half", "--no-progress", "--device", "cpu", "--system-malloc"]
    assert run_script.main(argv) == 0
    assert not checkout.exists()
    written = list((cwd / "benchmark-out").glob("*.json"))
    assert len(written) == 1 and str(written[0]) in capsys.readouterr().out  # it says where it wrote


def test_the_default_output_folder_is_ignored_by_git(run_script):
    try:
        ignored = subprocess.run(["git", "check-ignore", "-q", f"{run_script.DEFAULT_OUT}/x.json"], cwd=REPO,
                                 capture_output=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        pytest.skip("git is not available")
    if ignored.returncode == 128:
        pytest.skip("not a git checkout")
    assert ignored.returncode == 0


# The op-layer overhead case: every layer between the public call and the kernel, timed apart.


def test_every_plan_has_the_overhead_case_at_the_issues_shapes():
    assert OVERHEAD_SHAPES == ((256, 2), (256, 64), (256, 4096))
    for name in ("quick", "default", "tiny"):
        assert [case.shape for case in preset(name, "cpu").overhead] == list(OVERHEAD_SHAPES)
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        OverheadCase((2, 3, 4))


@pytest.mark.skipif("cpu" not in _fused_cpu_providers(), reason="the C++ extension is not built")
def test_the_overhead_case_times_every_layer_and_reports_it(tmp_path):
    cases = overhead_cases([(256, 2)])
    (result,) = run_overhead(CPU, cases, budget=TINY, rounds=2)
    assert result.error is None and set(result.seconds) == set(STAGES) and min(result.seconds.values()) > 0
    assert result.forward_backward_overhead == pytest.approx(
        result.seconds["public forward+backward"] - result.seconds["raw forward"] - result.seconds["raw backward"])
    line = format_overhead_table([result]).splitlines()[2]
    assert line.startswith("| [256, 2] | fp32 | cpu |") and "n/a" not in line
    plan = Preset("overhead", (), TINY, models=(), overhead=cases)
    run = run_plan(plan, CPU, what="overhead", progress=False, keep_freed_memory=False, out_dir=tmp_path)
    assert run.op_results == [] and len(run.overhead_results) == 1
    record = json.loads(next(p for p in run.written if p.suffix == ".json").read_text())
    assert record["overhead"][0]["shape"] == [256, 2] and record["overhead"][0]["forward_overhead_s"] is not None
    summary = next(p for p in run.written if p.name.endswith("summary.md")).read_text()
    assert "## Op-layer overhead" in summary and "| [256, 2] | fp32 | cpu |" in summary
    assert run_plan(plan, CPU, what="overhead", providers=["eager"], progress=False).overhead_results == []


def test_the_overhead_case_says_why_without_the_extension(monkeypatch):
    monkeypatch.setattr("nf_kernels.benchmarking.overhead_runner.why_unavailable", lambda name, device: "not built")
    (result,) = run_overhead(CPU, overhead_cases([(256, 2)]), budget=TINY)
    assert result.error == "not built" and result.seconds == {} and result.forward_overhead is None
    assert "Not measured:" in format_overhead_table([result])
