"""benchmarks/fused_epilogue.py at tiny sizes: every way of running the last layer and the coupling agrees with plain
autograd before anything is timed, and the check catches a way that does not."""

import importlib.util
from pathlib import Path

import pytest
import torch
from conftest import FUSED_CPU_BACKENDS

REPO = Path(__file__).resolve().parents[1]
TINY = ["--profile", "--features", "10", "--hidden", "3", "--couplings", "2", "--batch", "7", "--rows", "2", "3",
        "--rounds", "1", "--steps", "1"]  # fmt: skip

pytestmark = pytest.mark.skipif("cpu" not in FUSED_CPU_BACKENDS, reason="needs the C++ extension")


@pytest.fixture
def bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("fused_epilogue", REPO / "benchmarks" / "fused_epilogue.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # Not in the test process: it changes glibc's malloc for the rest of the process (tests/test_cpu_memory.py).
    monkeypatch.setattr(module.nf_kernels, "keep_freed_cpu_memory", lambda: True)
    threads = torch.get_num_threads()
    yield module
    torch.set_num_threads(threads)


def test_every_way_agrees_and_is_reported(bench, tmp_path):
    text = bench.main([*TINY, "--out", str(tmp_path)])
    for way in ("separate", "rows 2", "rows 3", "bias in product", "no bias (bound)"):
        assert text.count(f"| {way} |") == 2  # the timing table and the profile
    (written,) = tmp_path.glob("*-fused-epilogue.md")
    assert written.read_text() == text


def test_a_way_with_a_wrong_gradient_fails_the_check(bench, monkeypatch):
    original = bench.Epilogue.backward

    def backward_missing_a_block(ctx, grad_y, grad_logdet):
        grads = list(original(ctx, grad_y, grad_logdet))
        if ctx.way == "rows 3":
            grads[6] = grads[6] * 0.999  # as if the bias gradient lost part of one block
        return tuple(grads)

    monkeypatch.setattr(bench.Epilogue, "backward", staticmethod(backward_missing_a_block))
    with pytest.raises(AssertionError, match="rows 3: the gradient of parameter 5"):
        bench.main(TINY)
