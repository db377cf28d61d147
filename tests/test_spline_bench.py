"""The spline op benchmark (benchmarks/spline_op.py and nf_kernels/benchmarking's spline_cases, byte_model,
spline_peers, spline_op_runner, spline_op_report): the byte model's counts, the peers' agreement with nf_kernels,
and a tiny run that produces every column. Peers that are not installed are skipped: they are benchmark
dependencies (requirements-bench.txt), not test ones."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nf_kernels.benchmarking import byte_model, spline_peers
from nf_kernels.benchmarking.spline_cases import SplineOpCase
from nf_kernels.benchmarking.spline_op_runner import IMPLEMENTATIONS, SplineOpResult, add_fused_speedups

REPO = Path(__file__).resolve().parents[1]


def test_the_spline_byte_model_counts_x_and_3k_minus_1_parameters_per_transformed_element():
    # 2 samples of 3 kept and 3 transformed features, K = 2: P = 5 parameters per transformed element.
    forward = SplineOpCase("forward", "fp32", 2, 6, features=3)
    # x in and y out for all 12 elements, 6 * 5 params in, one float32 logdet per sample.
    assert byte_model.spline_forward_bytes(forward) == (12 + 12 + 30) * 4 + 2 * 4 == 224
    assert byte_model.spline_forward_bytes(forward, kept_half=False) == (6 + 6 + 30) * 4 + 8 == 176
    assert byte_model.spline_bytes_moved(SplineOpCase("inverse", "fp32", 2, 6, features=3)) == 224
    # The backward: grad_y, x and grad_x of all 12 elements, 30 params in, 30 param gradients out, grad_logdet.
    both = SplineOpCase("forward+backward", "fp32", 2, 6, features=3)
    assert byte_model.spline_backward_bytes(both) == (36 + 60) * 4 + 8 == 392
    assert byte_model.spline_bytes_moved(both) == 224 + 392
    assert byte_model.spline_bytes_moved(both, kept_half=False) == 176 + (18 + 60) * 4 + 8
    # bf16: two bytes an element, the log-det stays float32.
    assert byte_model.spline_bytes_moved(SplineOpCase("forward", "bf16", 2, 6, features=3)) == 54 * 2 + 8


def test_the_fused_speedup_is_each_time_over_the_fused_ops():
    case = SplineOpCase("forward", "fp32", 8, 64, features=8)
    results = [SplineOpResult(case, "cpu", 0.002, 1, 1.0), SplineOpResult(case, "nflows", 0.01, 1, 1.0),
               SplineOpResult(case, "zuko", None, 1, 1.0, error="ImportError: no zuko")]  # fmt: skip
    add_fused_speedups(results)
    assert [r.fused_speedup for r in results] == [1.0, 5.0, None]


@pytest.mark.parametrize("peer", spline_peers.PEERS)
def test_the_peers_compute_nf_kernels_spline_on_its_knots(peer):
    pytest.importorskip(peer)
    agreement = getattr(spline_peers, f"{peer}_agreement")(bins=5, samples=8, features=4)
    assert agreement.y < 1e-12 and agreement.logdet < 1e-12, agreement
    if peer == "zuko":  # its own parameter map makes other knots of the same raw parameters
        assert agreement.raw_params_y > 1e-3, agreement


def test_the_tiny_run_produces_every_column(tmp_path):
    for peer in spline_peers.PEERS:
        pytest.importorskip(peer)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # The "eager" compile backend: dynamo's capture without inductor's code generation, which takes minutes here.
    command = [sys.executable, str(REPO / "benchmarks" / "spline_op.py"), "--smoke", "--compile-backend", "eager",
               "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (markdown,) = tmp_path.glob("*-spline-op.md")
    (record,) = tmp_path.glob("*-spline-op.json")
    data = json.loads(record.read_text())
    rows = {(r["direction"], r["implementation"]): r for r in data["results"]}
    directions = ("forward", "inverse", "forward+backward")
    assert set(rows) == {(d, name) for d in directions for name in IMPLEMENTATIONS}
    for r in rows.values():
        assert r["seconds"] and r["gbps"] and r["copy_fraction"] and r["fused_speedup"] and not r["error"], r
    text = markdown.read_text()
    for name in IMPLEMENTATIONS:
        assert f"| 8 | fp32 | forward+backward | {name} |" in text
    assert "| K | dtype | direction | implementation | ms | GB/s | % of copy | cpu faster by | spread |" in text
    assert "nflows, K=8: max |dy|" in text and "zuko, K=8: max |dy|" in text
    assert "command: `python benchmarks/spline_op.py --smoke" in text
