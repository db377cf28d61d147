"""nf_kernels.keep_freed_cpu_memory: after it, a freed big tensor stays in the process's heap for the next one, and a
loop that allocates and frees big tensors stops page-faulting.

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


# glibc's own account of its memory (mallinfo2, glibc 2.33 and later): bytes in mmap'ed blocks, and free bytes
# kept in the heap. It does not depend on what the kernel does with the pages, unlike the page-fault count.
HEAP = """
import ctypes, torch, nf_kernels
class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
if {keep}:
    assert nf_kernels.keep_freed_cpu_memory()
before = libc.mallinfo2()
block = torch.ones(2**24)  # 64 MiB
alive = libc.mallinfo2()
del block
freed = libc.mallinfo2()
print(alive.hblkhd - before.hblkhd, freed.fordblks - alive.fordblks)
"""

MIB = 2**20


def _run(program: str, keep: bool) -> list[int]:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(program.format(keep=keep))], capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return [int(word) for word in done.stdout.split()]


def _page_faults_of_10_steps(keep: bool) -> int:
    return _run(LOOP, keep)[-1]


def _glibc_has_mallinfo2() -> bool:
    try:
        import ctypes

        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not _glibc_has_mallinfo2(), reason="glibc 2.33 or later only")
def test_a_freed_big_block_stays_in_the_heap():
    # With glibc's defaults the 64 MiB block is its own mmap (above the 32 MiB most the threshold can grow to) and
    # goes back to the kernel on free; kept, it comes from the heap and stays there, free for the next step.
    mapped, kept_free = _run(HEAP, keep=False)
    assert mapped >= 64 * MIB and kept_free < 64 * MIB, (mapped, kept_free)
    mapped, kept_free = _run(HEAP, keep=True)
    assert mapped == 0 and kept_free >= 64 * MIB, (mapped, kept_free)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_kept_memory_stops_the_page_faults_of_repeated_steps():
    # A 64 MiB block is above the largest threshold glibc ever picks by itself (32 MiB), so with its defaults
    # each of the 10 steps maps and faults in 16384 pages of 4 KiB again. For smaller blocks glibc's adaptive
    # threshold makes the default's faults depend on the order of allocations (2k to 80k measured for 20 steps
    # of [256, 4096] tensors), which is why the test uses a block size where the outcome is certain.
    # Kept memory can still be paged out by the kernel's own reclaim: DAMON runs on the CI machine and took 6 of the
    # 10 steps' blocks back in 2 of 9 runs here, and in CI, under load, it took one step's block back in each of
    # five processes. So this test asks for the best of five processes to fault at most half as often as the
    # default (which still fails if keeping does nothing); the heap test above is the exact check.
    default = _page_faults_of_10_steps(False)
    kept = min(_page_faults_of_10_steps(True) for _ in range(5))
    assert default > 100_000, default
    assert kept < default // 2, (kept, default)
