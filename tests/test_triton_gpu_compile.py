"""The Triton kernels compile for sm_80 and sm_90 with the real GPU compiler, on this GPU-less machine."""

import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("triton")

# One process runs this and tests/test_gpu_code.py, one after the other (README's test command: --dist loadgroup):
# the two heaviest compiles of the suite, whose timeouts assume they do not share the machine with each other.
pytestmark = pytest.mark.xdist_group("gpu_compile")

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_triton_kernels_compile_to_cubin_for_sm80_and_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "triton_gpu_compile.py")],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert result.returncode == 0, "\n".join(failures) or result.stderr[-3000:]
    assert "0 failed" in result.stdout
