"""The NSF quality benchmark (nf_kernels/benchmarking/nsf_quality.py and benchmarks/nsf_quality.py), a few steps:
every library's NSF trains on the same batches, gets a test figure, and the report judges issue 14's goal."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nf_kernels.benchmarking import nsf_quality
from nf_kernels.benchmarking.nsf_quality import DataDensity, QualityResult
from nf_kernels.benchmarking.peer_models import NSFSpec, build
from nf_kernels.data import FlowDataset, load_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    """As the benchmark runs: tiny steps on a busy 2-core machine are many times slower with 2 threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_data_map_adds_its_log_determinant():
    """(x - 0.5) * 4 on 64 pixels: the density of x is the flow's density of y times 4 ** 64."""
    flow = build("nf_kernels-reference", NSFSpec(64, hidden=8, bins=2))
    x = torch.rand(5, 1, 8, 8)
    y = (x.flatten(1) - 0.5) * 4
    expected = flow.log_prob(y) + 64 * math.log(4)
    torch.testing.assert_close(DataDensity(flow, 0.5, 4).log_prob(x), expected)
    assert nsf_quality.data_map(load_dataset("digits")) == (0.5, 4.0)
    assert nsf_quality.data_map(load_dataset("moons")) == (0.0, 1.0)


def test_every_library_trains_on_a_toy_and_gets_a_test_figure():
    points = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    data = FlowDataset("gauss", points[:200] * 0.5, points[200:] * 0.5)
    results = nsf_quality.run_quality([data], steps={"toy": 12, "digits": 1}, batch=32, progress=False)
    assert [r.library for r in results] == list(nsf_quality.QUALITY_LIBRARIES)
    trained = [r for r in results if r.error is None]
    assert trained[0].library == "nf_kernels" and all(not (r.error or "").startswith("the training") for r in results)
    for r in trained:
        assert r.metric == "nll" and r.spec == NSFSpec(2) and r.seconds > 0
        # A standard normal on N(0, 0.25) data: every model starts at the same figure, then learns the scale.
        assert r.initial_test == pytest.approx(trained[0].initial_test, rel=1e-6)
        assert r.test < r.initial_test - 0.05 and math.isfinite(r.train_tail)


def test_the_goal_is_judged_within_the_tolerance():
    spec = NSFSpec(2)
    rows = [QualityResult("nf_kernels", "moons", spec, "nll", 10, 8, 0, test=1.005),
            QualityResult("nflows", "moons", spec, "nll", 10, 8, 0, test=1.0),
            QualityResult("zuko", "moons", spec, "nll", 10, 8, 0, test=0.9)]  # fmt: skip
    lines = nsf_quality.verdict_lines(rows)
    assert lines[0].endswith("difference +0.0050); goal: no worse, within 0.01: met"), lines
    assert "against zuko 0.9000" in lines[1] and lines[1].endswith("not met")


def test_the_entry_point_reports_toys_and_digits(tmp_path):
    command = [sys.executable, str(REPO / "benchmarks" / "nsf_quality.py"), "--toy-steps", "3", "--digits-steps",
               "2", "--batch", "32", "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (markdown,) = tmp_path.glob("*-nsf-quality.md")
    (record,) = tmp_path.glob("*-nsf-quality.json")
    text, data = markdown.read_text(), json.loads(record.read_text())
    assert {(r["dataset"], r["library"]) for r in data["results"]} == {
        (d, lib) for d in ("moons", "digits") for lib in nsf_quality.QUALITY_LIBRARIES}
    metrics = {r["dataset"]: r["metric"] for r in data["results"]}
    assert metrics == {"moons": "nll", "digits": "bits_per_dim"}
    digits = [r for r in data["results"] if r["dataset"] == "digits" and r["test"] is not None]
    assert digits and all(r["spec"]["features"] == 64 and r["spec"]["hidden"] == 128 for r in digits)
    assert "## moons: test NLL (nats), 3 steps" in text and "## digits: test bits/dim, 2 steps" in text
    assert "| nf_kernels |" in text and "## Goal (issue 14)" in text and data["command"].endswith(str(tmp_path))


def _script():
    """benchmarks/nsf_quality.py as a module, for its argument parsing (importing it runs nothing)."""
    spec = importlib.util.spec_from_file_location("nsf_quality_script", REPO / "benchmarks" / "nsf_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_entry_point_rejects_an_empty_run(capsys):
    with pytest.raises(SystemExit) as stop:
        _script().parse_args(["--toys", "--no-digits"])
    assert stop.value.code == 2 and "nothing to train on" in capsys.readouterr().err
