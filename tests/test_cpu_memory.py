"""nf_kernels.keep_freed_cpu_memory: after it, a loop that allocates and frees big tensors stops page-faulting.

Each case runs in a fresh interpreter, since the setting changes the whole process for good.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

LOOP = """
import resource, torch, nf_kernels
torch.set_num_threads(1)
if {keep}:
    assert nf_kernels.keep_freed_cpu_memory()
def step():  # a big temporary, allocated and freed
    return float(torch.ones(2**24)[0])
for _ in range(2):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults_of_10_steps(keep: bool) -> int:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(LOOP.format(keep=keep))], capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_kept_memory_stops_the_page_faults_of_repeated_steps():
    # A 64 MiB block is above the largest threshold glibc ever picks by itself (32 MiB), so with its defaults
    # each of the 10 steps maps and faults in 16384 pages of 4 KiB again. For smaller blocks glibc's adaptive
    # threshold makes the default's faults depend on the order of allocations (2k to 80k measured for 20 steps
    # of [256, 4096] tensors), which is why the test uses a block size where the outcome is certain.
    # Kept memory can still be paged out by the kernel's own reclaim (DAMON runs on this CI machine and took 6 of
    # the 10 steps' blocks back in 2 of 9 runs, more often under load), so the kept case counts the best of five
    # processes, and it must stay below one step's pages rather than near zero.
    default = _page_faults_of_10_steps(False)
    kept = min(_page_faults_of_10_steps(True) for _ in range(5))
    assert default > 100_000, default
    assert kept < 16384, kept
