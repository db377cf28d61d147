"""What the fused kernels compile to on a GPU, read from their SASS on a machine without one.

Bandwidth-bound kernels reach the copy-bandwidth floor of SPEC section 4 only if their machine code moves memory
in wide instructions and leaves the SMs enough work in flight. This module shows, per kernel launch variant:

* global loads and stores by width (LDG/STG .128, .64, 32-bit, .U16, .U8) and the share that is 128-bit;
* 64-bit integer divisions and remainders (calls of the `__cuda_sm20_{div,rem}_{s,u}64` subroutines, or their
  inlined `I2F.U64.RP` reciprocal sequence), spills (STL/LDL), registers, programs per SM, waves on the device;
* elements per thread (the launch's elements over its threads) and transcendental (MUFU) ops per element.

**Triton**: the real launchers (`nf_kernels.affine_coupling(..., backend="triton")` forward, inverse, the backward
through autograd, `additive_coupling`) run on representative problems as CPU tensors while `JITFunction.run` is
intercepted, so no kernel runs: each launch is recorded (grid, arguments, constexprs, num_warps), its tensors
replaced by stand-ins with the dtype and the 256-byte alignment of a CUDA allocation. Each recorded launch is then
replayed through Triton's own `JITFunction.run(..., warmup=True)` with a stand-in driver that reports an sm_90 (or
sm_80) GPU: Triton itself derives the signature and the specialization (i32 or i64 ints, ints equal to 1 as
constants, `tt.divisibility=16` for pointers and ints divisible by 16) exactly as at a launch, and compiles.

**CUDA**: each file of CUDA_SOURCES, `csrc/cuda/coupling_kernels.cu` and `csrc/cuda/spline_kernels.cu`, is
compiled with nvcc and the build's flags (the files in parallel, in the background), every kernel function read from
the SASS, and each launch geometry computed as its launcher computes it for the representative problems: the
coupling launchers size their grid to one wave (occupancy, here from each kernel's registers, times
multiprocessors, blocks striding over the work); the spline launchers give a block to each chunk of kThreads *
kPerThread elements of a sample, or a team of lanes to each sample of a vector flow (the constants read from the
source). `--cuda-object` skips a file's build: an already-built object (any name: its kernels' names tell which
file it holds) or a directory of them, repeatable.

The rules a main kernel (not the tiny log-det sum) must meet are RULES, checked by `rule_checks`;
tests/test_gpu_code.py asserts them. Run without TRITON_INTERPRET (it compiles for the GPU):

    python -m nf_kernels.benchmarking.gpu_code [--arch 90] [--markdown OUT.md] [--json OUT.json] [--no-cuda]
        [--summary OUT.md] [--cuda-object BUILT.o|DIR ...] [--verify-on-gpu] [--check]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

REPO = pathlib.Path(__file__).resolve().parents[2]
CUDA_SOURCE = REPO / "csrc" / "cuda" / "coupling_kernels.cu"
SPLINE_CUDA_SOURCE = REPO / "csrc" / "cuda" / "spline_kernels.cu"

# Launches of at least this many elements must give every thread at least MIN_ELEMENTS_PER_THREAD (rule c).
LARGE_LAUNCH = 2**20
MIN_ELEMENTS_PER_THREAD = 4

# ---------------------------------------------------------------------------------------------------------------
# The CUDA sources the report compiles, and how each one's launchers size a launch.
# ---------------------------------------------------------------------------------------------------------------

_CUDA_TYPE_BYTES = {"float": 4, "double": 8, "half": 2, "bf16": 2}


@functools.lru_cache(maxsize=None)
def source_constant(source: pathlib.Path, name: str) -> int:
    """The value of `constexpr <int type> NAME = <digits>;` in a CUDA source (the launch constants the report's
    geometry must follow)."""
    match = re.search(rf"constexpr\s+\w+\s+{name}\s*=\s*(\d+)\s*;", source.read_text())
    if match is None:
        raise RuntimeError(f"{source.name} declares no constexpr {name}")
    return int(match.group(1))


@dataclass(frozen=True)
class Geometry:
    """One launch of a kernel function: its blocks, threads a block, and elements a thread handles per iteration
    of its loop (what the per-element columns divide by)."""

    grid: int
    threads: int
    per_iteration: int


def coupling_geometry(x_type: str, programs_per_sm: int, shape: tuple[int, ...], sms: int) -> Geometry:
    """coupling_kernels.cu's launchers: a thread moves 16 bytes of x an iteration (kGroup elements), and the grid is
    one wave, the kernel's occupancy (cudaOccupancyMaxActiveBlocksPerMultiprocessor, here from its registers) times
    the multiprocessors, the blocks striding over the work; a smaller launch gets a block per group of threads."""
    threads = source_constant(CUDA_SOURCE, "kThreads")
    width = 16 // _CUDA_TYPE_BYTES.get(x_type, 4)
    grid = min(programs_per_sm * sms, -(-math.prod(shape) // (width * threads)))
    return Geometry(grid=grid, threads=threads, per_iteration=width)


def spline_geometry(x_type: str, programs_per_sm: int, shape: tuple[int, ...], sms: int) -> Geometry:
    """spline_kernels.cu's launchers (`prepare`): a block of kThreads owns kThreads * kPerThread consecutive
    elements of one sample (a sample's chunk), one element a thread per iteration, and the grid is every chunk of
    every sample, whatever the occupancy; a sample of at most kMaxTeam * kPerThread elements goes to a team of
    lanes instead (the fewest, a power of two, that give each at most kPerThread), kThreads / team samples a block."""
    threads = source_constant(SPLINE_CUDA_SOURCE, "kThreads")
    per_thread = source_constant(SPLINE_CUDA_SOURCE, "kPerThread")
    batch, numel = shape[0], math.prod(shape[1:])
    if numel <= source_constant(SPLINE_CUDA_SOURCE, "kMaxTeam") * per_thread:
        team = 1
        while team * per_thread < numel:
            team *= 2
        return Geometry(grid=-(-batch // (threads // team)), threads=threads, per_iteration=1)
    return Geometry(grid=batch * -(-numel // (threads * per_thread)), threads=threads, per_iteration=1)


@dataclass(frozen=True)
class CudaSource:
    """A file of CUDA kernels the report compiles (with the extension build's flags) and reads."""

    path: pathlib.Path
    families: tuple[str, ...]  # its main kernel functions, by the name before `<`; the others are not checked
    vector_flag: bool  # the kernels' last template argument is kVector: `..., false>` is the element fallback
    geometry: Callable[[str, int, tuple[int, ...], int], Geometry]  # (x type, programs per SM, x shape, SMs)

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def threads(self) -> int:  # a block, every launch (kThreads)
        return source_constant(self.path, "kThreads")

    def holds_kernels_of(self, obj: pathlib.Path) -> bool:
        """Whether an nvcc object was built from this source: its symbols name one of the families."""
        data = obj.read_bytes()
        return any(family.encode() in data for family in self.families)


CUDA_SOURCES = (
    CudaSource(CUDA_SOURCE, ("coupling_forward_kernel", "coupling_backward_kernel"), True, coupling_geometry),
    CudaSource(SPLINE_CUDA_SOURCE, ("spline_forward_kernel", "spline_backward_kernel"), False, spline_geometry),
)

# ---------------------------------------------------------------------------------------------------------------
# SASS: parsing nvdisasm's listing, and what one function's instructions add up to.
# ---------------------------------------------------------------------------------------------------------------

_SECTION = re.compile(r"^\s*\.section\s+(\S+?),")
_TEXT_SECTION = ".text."
_LABEL = re.compile(r"^([A-Za-z_.$][\w.$]*):\s*$")
# `/*0640*/  @!P5 LDG.E.128 R12, desc[UR8][R32.64] ;`: address, optional predicate, opcode, operands.
_INSTRUCTION = re.compile(r"^\s*/\*([0-9a-f]+)\*/\s+(?:(@!?U?P(?:T|\d+))\s+)?([A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*)(.*?);")
_CALL_TARGET = re.compile(r"`\(([^)]+)\)")
# `nvdisasm -gi` line information, before the instructions it applies to: one comment a frame, innermost first,
# `//## File "/x/sm_32_intrinsics.hpp", line 125 inlined at "/repo/csrc/cuda/coupling_kernels.cu", line 221`, then
# the frames it is inlined into, the kernel's own line last (no `inlined at`).
_LINE_INFO = re.compile(r'^\s*//## File "([^"]+)", line (\d+)')
# The integer-division subroutines of the CUDA math library that ptxas links in (sm20 names on every arch).
_DIV64_SUBROUTINE = re.compile(r"__cuda_sm[0-9x]+_(?:div|rem)_[su]64")


@dataclass(frozen=True)
class Instruction:
    opcode: str  # with modifiers: "LDG.E.128"
    operands: str
    predicate: str = ""
    source: str = ""  # "csrc/cuda/coupling_kernels.cu:221": see source_line; "" without line information

    @property
    def base(self) -> str:
        return self.opcode.split(".")[0]

    @property
    def modifiers(self) -> list[str]:
        return self.opcode.split(".")[1:]


@dataclass
class SassFunction:
    """One kernel's code: its own instructions, and those of each subroutine in its section (nvdisasm puts the
    subroutines a kernel calls, such as `$__internal_0_$__cuda_sm20_rem_s64`, in the kernel's own section)."""

    name: str
    body: list[Instruction] = field(default_factory=list)
    subroutines: dict[str, list[Instruction]] = field(default_factory=dict)

    def everything(self) -> Iterator[Instruction]:
        yield from self.body
        for instructions in self.subroutines.values():
            yield from instructions


def source_line(frames: Sequence[tuple[str, int]]) -> str:
    """The line an instruction belongs to, from its inlining frames (innermost first): the innermost one in the
    project's csrc/ (where `__ldg(p)` was written, not the CUDA header that defines it), as "csrc/...:LINE"; else
    the innermost frame; "" without frames."""
    for path, line in frames:
        at = path.replace("\\", "/").rfind("/csrc/")
        if at >= 0:
            return f"{path[at + 1:]}:{line}"
    return f"{pathlib.Path(frames[0][0]).name}:{frames[0][1]}" if frames else ""


def parse_nvdisasm(text: str) -> dict[str, SassFunction]:
    """Functions by (mangled) name from `nvdisasm -c` output (with `-gi`, each instruction also gets its source
    line). Labels `.L_*` are branch targets inside the current function; any other label other than the kernel's
    own starts a subroutine."""
    functions: dict[str, SassFunction] = {}
    current: Optional[SassFunction] = None
    target: Optional[list[Instruction]] = None
    frames: list[tuple[str, int]] = []  # of the instructions that follow
    source, fresh = "", False  # fresh: the last line was line information (a new block of frames continues)
    for line in text.splitlines():
        location = _LINE_INFO.match(line)
        if location:
            if not fresh:
                frames = []
            frames.append((location.group(1), int(location.group(2))))
            source, fresh = source_line(frames), True
            continue
        fresh = False
        section = _SECTION.match(line)
        if section:
            name = section.group(1)
            frames, source = [], ""
            if name.startswith(_TEXT_SECTION):  # a kernel's code; other sections hold data
                name = name[len(_TEXT_SECTION) :]
                current = functions.setdefault(name, SassFunction(name))
                target = current.body
            else:
                current = target = None
            continue
        if current is None:
            continue
        label = _LABEL.match(line)
        if label:
            name = label.group(1)
            if name in (current.name, ".text." + current.name):
                target = current.body
            elif not name.startswith(".L"):
                target = current.subroutines.setdefault(name, [])
            continue
        instruction = _INSTRUCTION.match(line)
        if instruction and target is not None:
            _, predicate, opcode, operands = instruction.groups()
            target.append(Instruction(opcode, operands.strip(), predicate or "", source))
    return functions


# Memory spaces by opcode. LD/ST are generic (flat) accesses: for these kernels they reach global memory, so
# they count as global. LDC (constants, the kernel arguments) and shared memory are not counted.
_GLOBAL_LOADS = {"LDG", "LD"}
_GLOBAL_STORES = {"STG", "ST", "RED", "REDG", "ATOM", "ATOMG"}
_WIDTH_MODIFIERS = {"128": 128, "256": 256, "64": 64, "U16": 16, "S16": 16, "U8": 8, "S8": 8}


def access_bits(instruction: Instruction) -> int:
    """Bits one thread moves with a load or store: 32 unless a width modifier says otherwise. Only whole
    modifiers count: `LTC128B` is a cache hint, not a width."""
    for modifier in instruction.modifiers:
        if modifier in _WIDTH_MODIFIERS:
            return _WIDTH_MODIFIERS[modifier]
    return 32


@dataclass
class CodeStats:
    """What one function's SASS adds up to (static counts: instruction sites, not executions)."""

    loads: dict[int, int]  # global loads by width in bits
    stores: dict[int, int]
    div64: int  # 64-bit integer division/remainder call sites plus inlined sequences
    spill_stores: int  # STL
    spill_loads: int  # LDL
    mufu: dict[str, int]  # transcendental ops in the kernel body by kind (EX2, LG2, RCP, ...)
    calls: dict[str, int]  # subroutine call sites by name
    # The global loads and stores narrower than 128 bits, by kind ("loads"/"stores"), opcode and source line
    # (Instruction.source): [{"kind": "loads", "opcode": "LDG.E.64", "source": "csrc/...:221", "sites": 10}].
    narrow: list[dict] = field(default_factory=list)

    @property
    def spills(self) -> int:
        return self.spill_stores + self.spill_loads

    @staticmethod
    def share_128(by_width: dict[int, int]) -> Optional[float]:
        total = sum(by_width.values())
        return sum(n for bits, n in by_width.items() if bits >= 128) / total if total else None


def _short_subroutine(name: str) -> str:
    """`$__internal_0_$__cuda_sm20_rem_s64` -> `rem_s64`; other names unchanged."""
    match = re.search(r"__cuda_sm[0-9x]+_(\w+)$", name)
    return match.group(1) if match else name


def code_stats(function: SassFunction) -> CodeStats:
    loads: Counter[int] = Counter()
    stores: Counter[int] = Counter()
    narrow: Counter[tuple[str, str, str]] = Counter()
    # Memory traffic and spills count in the subroutines too; MUFU only in the body, since the integer-division
    # subroutines use MUFU.RCP for their reciprocal estimate and that is not element math.
    for instruction in function.everything():
        kind = "loads" if instruction.base in _GLOBAL_LOADS else "stores" if instruction.base in _GLOBAL_STORES else ""
        if kind:
            bits = access_bits(instruction)
            (loads if kind == "loads" else stores)[bits] += 1
            if bits < 128:
                narrow[(kind, instruction.opcode, instruction.source)] += 1
    calls: Counter[str] = Counter()
    div64 = 0
    mufu: Counter[str] = Counter()
    for instruction in function.body:
        if instruction.base == "CALL":
            match = _CALL_TARGET.search(instruction.operands)
            name = match.group(1) if match else instruction.operands
            calls[_short_subroutine(name)] += 1
            div64 += bool(_DIV64_SUBROUTINE.search(name))
        elif instruction.opcode.startswith("I2F.U64.RP"):  # a 64-bit division inlined into the body
            div64 += 1
        elif instruction.base == "MUFU":
            mufu[instruction.modifiers[0] if instruction.modifiers else "?"] += 1
    everything = list(function.everything())
    return CodeStats(
        loads=dict(sorted(loads.items(), reverse=True)),
        stores=dict(sorted(stores.items(), reverse=True)),
        div64=div64,
        spill_stores=sum(i.base == "STL" for i in everything),
        spill_loads=sum(i.base == "LDL" for i in everything),
        mufu=dict(mufu),
        calls=dict(calls),
        narrow=[dict(kind=kind, opcode=opcode, source=source, sites=n)
                for (kind, opcode, source), n in sorted(narrow.items())],  # fmt: skip
    )


_RESOURCE_FUNCTION = re.compile(r"^\s*Function\s+(\S+?):\s*$")
_RESOURCE_FIELD = re.compile(r"([A-Z]+(?:\[\d+\])?):(\d+)")


def parse_resource_usage(text: str) -> dict[str, dict[str, int]]:
    """`cuobjdump -res-usage` output: {function: {"REG": 113, "STACK": 0, "SHARED": 1024, "LOCAL": 0, ...}}."""
    usage: dict[str, dict[str, int]] = {}
    name = None
    for line in text.splitlines():
        match = _RESOURCE_FUNCTION.match(line)
        if match:
            name = match.group(1)
            continue
        if name and "REG:" in line:
            usage[name] = {key: int(value) for key, value in _RESOURCE_FIELD.findall(line)}
            name = None
    return usage


# ---------------------------------------------------------------------------------------------------------------
# Occupancy: how many programs (thread blocks) of a kernel one SM holds.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchLimits:
    sms: int  # of the device the report is for
    device: str
    registers: int = 65536
    max_warps: int = 64
    max_blocks: int = 32
    shared_bytes: int = 228 * 1024
    reserved_shared_per_block: int = 1024  # the system's per-block reservation (sm_80 and later)


ARCH_LIMITS = {90: ArchLimits(sms=132, device="H200"), 80: ArchLimits(sms=108, device="A100", shared_bytes=164 * 1024)}


def programs_per_sm(registers: int, warps: int, shared_bytes: int, arch: int) -> int:
    """Resident blocks per SM, limited by registers (allocated per warp in units of 256, per thread rounded up to
    8), warps, blocks and shared memory (static + dynamic + the per-block reservation)."""
    limits = ARCH_LIMITS[arch]
    per_warp = math.ceil(max(registers, 1) * 32 / 256) * 256
    by_registers = (limits.registers // per_warp) // warps
    by_warps = limits.max_warps // warps
    by_shared = limits.shared_bytes // (shared_bytes + limits.reserved_shared_per_block)
    return max(0, min(by_registers, by_warps, limits.max_blocks, by_shared))


# ---------------------------------------------------------------------------------------------------------------
# Tools: Triton ships cuobjdump and nvdisasm; nvcc comes from CUDA.
# ---------------------------------------------------------------------------------------------------------------


def cuda_tool(name: str) -> Optional[str]:
    """A CUDA binary tool: Triton's own copy first (it matches the cubins Triton makes), then PATH/CUDA_HOME."""
    try:
        import triton

        bundled = pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which(name)
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home and (pathlib.Path(home) / "bin" / name).exists():
            return str(pathlib.Path(home) / "bin" / name)
    return None


def _run_tool(command: Sequence[str], timeout: float = 600) -> str:
    result = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def read_cubin(
    path: pathlib.Path, line_info: bool = False
) -> tuple[dict[str, SassFunction], dict[str, dict[str, int]]]:
    """(functions from nvdisasm, resource usage from cuobjdump) of one cubin; with `line_info`, each instruction
    with its source line (the cubin must have been compiled with -lineinfo)."""
    nvdisasm, cuobjdump = cuda_tool("nvdisasm"), cuda_tool("cuobjdump")
    if nvdisasm is None or cuobjdump is None:
        raise RuntimeError("nvdisasm and cuobjdump are needed (Triton ships them under triton/backends/nvidia/bin)")
    # -ndf: no dataflow analysis (half the time, the same listing). -gi: line information with the inlining frames.
    flags = ["-c", "-ndf"] + (["-gi"] if line_info else [])
    return parse_nvdisasm(_run_tool([nvdisasm, *flags, str(path)])), parse_resource_usage(
        _run_tool([cuobjdump, "-res-usage", str(path)])
    )


def demangle(names: Sequence[str]) -> dict[str, str]:
    """Mangled -> short readable name (`coupling_forward_kernel<float, float>`); unchanged without c++filt."""
    tool = shutil.which("c++filt")
    if not tool or not names:
        return {name: name for name in names}
    result = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True, timeout=60)
    out = {}
    for name, readable in zip(names, result.stdout.splitlines()):
        readable = readable.replace("(anonymous namespace)::", "")
        readable = re.sub(r"^void\s+", "", readable)  # the return type of a kernel
        readable = readable.split("(")[0]  # the parameter list
        readable = re.sub(r"^(?:\w+::)*", "", readable)  # the namespaces
        out[name] = readable.replace("__nv_bfloat16", "bf16").replace("__half", "half")
    return out


# ---------------------------------------------------------------------------------------------------------------
# Representative problems and the Triton launches they make.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    group: str  # what the rules are grouped by: "image-half", "image-checkerboard", "image-bool", "vector-half"
    shape: tuple[int, ...]  # x
    mask: str  # "half", "checkerboard" or "bool"
    dtype: str  # x: "fp32", "bf16", "fp16"
    h_dtype: str
    scale: str  # "none" is the additive coupling, SPLINE the spline coupling (SPLINE_BINS bins)
    directions: tuple[str, ...] = ("forward", "inverse", "backward")

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def label(self, direction: str) -> str:
        dtypes = self.dtype if self.h_dtype == self.dtype else f"{self.dtype}/h:{self.h_dtype}"
        return f"{self.group} {'x'.join(map(str, self.shape))} {dtypes} {self.scale} {direction}"


IMAGE = (256, 6, 32, 32)  # 1.5 M elements a launch; N = 6144 elements a sample, two programs each
IMAGE_LARGE = (64, 6, 64, 64)  # the same elements in bigger samples: six programs each, a 4096-element plane
VECTOR = (65536, 64)  # [B, D] vector flows (tabular data, simulation-based inference): 4 M elements
# The spline coupling's problems are marked by this scale; its parameters are 3 * SPLINE_BINS - 1 channels a
# transformed channel.
SPLINE = "spline"
SPLINE_BINS = 8


def problems() -> list[Problem]:
    """A covering set: each mask path and problem class in every dtype and direction (tanh, the usual scale of
    RealNVP-style flows), bigger samples, the other scale maps and the additive coupling once, autocast's
    mixed dtypes, and the spline coupling (8 bins) on each mask path and problem class."""
    out = []
    for dtype in ("fp32", "bf16", "fp16"):
        for group, shape, mask in (
            ("image-half", IMAGE, "half"),
            ("image-checkerboard", IMAGE, "checkerboard"),
            ("image-bool", IMAGE, "bool"),
            ("vector-half", VECTOR, "half"),
        ):
            out.append(Problem(group, shape, mask, dtype, dtype, "tanh"))
    for group, mask in (("image-half", "half"), ("image-checkerboard", "checkerboard")):
        out.append(Problem(group, IMAGE_LARGE, mask, "fp32", "fp32", "tanh", ("forward", "backward")))
    for scale in ("exp", "atan", "sigmoid"):
        out.append(Problem("image-half", IMAGE, "half", "fp32", "fp32", scale, ("forward", "backward")))
    out.append(Problem("image-half", IMAGE, "half", "fp32", "fp32", "none", ("forward", "backward")))
    out.append(Problem("image-checkerboard", IMAGE, "checkerboard", "fp32", "fp32", "none", ("forward", "backward")))
    out.append(Problem("vector-half", VECTOR, "half", "fp32", "fp32", "none", ("forward", "backward")))
    # Autocast: the conditioner's h in bfloat16 under a float32 flow.
    out.append(Problem("image-half", IMAGE, "half", "fp32", "bf16", "tanh", ("forward", "backward")))
    # The spline coupling: each mask path and problem class, in float32 (its 4 elements a thread make 8 bytes of a
    # half type: 64-bit loads, which rule (a) would count against the float32 kernels of the same group).
    for group, shape, mask in (("image-half", IMAGE, "half"), ("image-checkerboard", IMAGE, "checkerboard"),
                               ("image-bool", IMAGE, "bool"), ("vector-half", VECTOR, "half")):  # fmt: skip
        out.append(Problem(group, shape, mask, "fp32", "fp32", SPLINE))
    return out


_TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "fp64": "float64"}

# A CUDA allocation (the caching allocator's blocks) starts on a 512-byte boundary; 256 is what the report assumes
# of every fresh tensor. A view keeps its offset from that.
DEVICE_ALIGNMENT = 256
_DEVICE_BASE = 0x7F00_0000_0000


class DevicePointer:
    """What Triton's launch needs of a tensor argument: its dtype and its address (Triton specializes on
    `data_ptr() % 16`). Stands in for the CUDA tensor the launch would get."""

    def __init__(self, dtype, data_ptr: int):
        self.dtype = dtype
        self._data_ptr = data_ptr

    def data_ptr(self) -> int:
        return self._data_ptr

    def __repr__(self) -> str:
        return f"DevicePointer({self.dtype}, +{self._data_ptr % DEVICE_ALIGNMENT})"


@dataclass
class TritonLaunch:
    problem: Problem
    direction: str
    kernel: Any  # triton.runtime.jit.JITFunction
    grid: tuple[int, ...]
    args: tuple
    kwargs: dict
    elements: int  # of the problem the launch works on (for the log-det sum: the partials it adds)

    @property
    def kernel_name(self) -> str:
        return self.kernel.fn.__name__

    @property
    def is_main(self) -> bool:
        return "sum_partials" not in self.kernel_name


def _stand_in(value):
    import torch

    if isinstance(value, torch.Tensor):
        return DevicePointer(value.dtype, _DEVICE_BASE + value.storage_offset() * value.element_size())
    return value


@contextlib.contextmanager
def recording_launches(record: Callable[[Any, tuple, tuple, dict], None]) -> Iterator[None]:
    """Within the block, a Triton kernel launch (`kernel[grid](...)`) calls `record(kernel, grid, args, kwargs)`
    instead of running, with tensor arguments as DevicePointer; the Triton backend accepts CPU tensors."""
    from triton.runtime.jit import JITFunction

    from ..backends.triton_kernels import TritonBackend

    def run(self, *args, grid, warmup, **kwargs):
        record(self, tuple(grid), tuple(_stand_in(a) for a in args), {k: _stand_in(v) for k, v in kwargs.items()})
        return None

    original_run, original_check = JITFunction.run, TritonBackend.why_unavailable
    JITFunction.run = run
    TritonBackend.why_unavailable = lambda self, device: None
    try:
        yield
    finally:
        JITFunction.run, TritonBackend.why_unavailable = original_run, original_check


def run_problem(problem: Problem, device: str, before: Callable[[str], None], after: Callable[[str], None]) -> None:
    """Run the public ops of each direction of `problem` on `device` with the Triton backend, calling
    before(direction) and after(direction) around the launches that belong to that direction (the backward's
    own forward pass lies outside them). CPU tensors are left uninitialized: nothing is computed on them."""
    import torch

    import nf_kernels

    dtype, h_dtype = (getattr(torch, _TORCH_DTYPES[d]) for d in (problem.dtype, problem.h_dtype))
    new = torch.empty if device == "cpu" else torch.randn
    x = new(problem.shape, dtype=dtype, device=device)
    channels = problem.shape[1]
    h_channels = channels - channels // 2 if problem.mask == "half" else channels
    if problem.scale == SPLINE:
        h_channels *= 3 * SPLINE_BINS - 1
    elif problem.scale != "none":
        h_channels *= 2
    h = new((problem.shape[0], h_channels, *problem.shape[2:]), dtype=h_dtype, device=device)
    mask: Any = problem.mask
    if problem.mask == "bool":
        mask = (torch.rand(problem.shape[1:], generator=torch.Generator().manual_seed(0)) < 0.5).to(device)

    def op(x, h, reverse=False):
        if problem.scale == SPLINE:
            return nf_kernels.spline_coupling(x, h, mask=mask, bins=SPLINE_BINS, reverse=reverse, backend="triton")
        if problem.scale == "none":
            return nf_kernels.additive_coupling(x, h, mask=mask, reverse=reverse, backend="triton")
        return nf_kernels.affine_coupling(x, h, mask=mask, scale=problem.scale, reverse=reverse, backend="triton")

    for direction in problem.directions:
        if direction == "backward":
            xg, hg = x.detach().requires_grad_(True), h.detach().requires_grad_(True)
            y, logdet = op(xg, hg)
            before(direction)
            torch.autograd.grad((y, logdet), (xg, hg), (torch.ones_like(y), torch.ones_like(logdet)))
        else:
            before(direction)
            op(x, h, reverse=direction == "inverse")
        after(direction)


def capture_triton_launches(problem_list: Sequence[Problem]) -> list[TritonLaunch]:
    """Run the public ops on each problem (CPU tensors, nothing computed) and record the launches they make."""
    launches: list[TritonLaunch] = []
    context: dict[str, Any] = {}

    def record(kernel, grid, args, kwargs):
        if context.get("direction"):
            launches.append(TritonLaunch(context["problem"], context["direction"], kernel, grid, args, kwargs, 0))

    with recording_launches(record):
        for problem in problem_list:
            context["problem"] = problem
            run_problem(problem, "cpu", lambda d: context.update(direction=d), lambda d: context.update(direction=""))
    for launch in launches:
        launch.elements = launch.problem.numel if launch.is_main else math.prod(launch.grid) * _partials_per_sample(
            launch
        )
    return launches


def verify_on_gpu(problem_list: Sequence[Problem], kernels: Sequence[Any], report_hashes: set[str]) -> dict:
    """On a machine with a CUDA GPU: run the problems for real, then compare the kernels Triton compiled for these
    launches (its JIT cache on the current device) with the ones the report compiled. Equal hashes mean equal
    source, signature, specialization, target and options: the report read the code that ran."""
    import torch

    for problem in problem_list:
        run_problem(problem, "cuda", lambda d: None, lambda d: None)
    torch.cuda.synchronize()
    device = torch.cuda.current_device()
    real = {}
    for kernel in kernels:
        if device in kernel.device_caches:
            for compiled in kernel.device_caches[device][0].values():
                real[compiled.hash] = compiled.name
    matched = sorted(name for h, name in real.items() if h in report_hashes)
    unmatched = sorted(name for h, name in real.items() if h not in report_hashes)
    return {"device": torch.cuda.get_device_name(), "real_kernels": len(real), "matched": len(matched),
            "unmatched": unmatched}  # fmt: skip


def _partials_per_sample(launch: TritonLaunch) -> int:
    """The `nblk` argument of the log-det sum (the partials it adds per program)."""
    names = [p.name for p in launch.kernel.params]
    return int(launch.args[names.index("nblk")]) if "nblk" in names[: len(launch.args)] else 1


class _TargetDriver:
    """The part of Triton's driver interface that `JITFunction.run(..., warmup=True)` uses, for a GPU of the given
    architecture that is not here. Each arch gets its own device id, so each has its own JIT caches."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)
        self.device = 1000 + arch

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return self.device

    def get_current_stream(self, device=None):
        return 0


@contextlib.contextmanager
def compiling_for(arch: int) -> Iterator[None]:
    from triton.runtime.driver import driver

    previous = driver._active
    driver.set_active(_TargetDriver(arch))
    try:
        yield
    finally:
        driver._active = previous


def compile_launch(launch: TritonLaunch, arch: int):
    """The CompiledKernel Triton makes for this launch on sm_<arch>: Triton's own launch path, stopped before the
    launch (warmup=True), so its binder computes the signature and specialization from the real arguments."""
    from triton.runtime.jit import JITFunction

    with compiling_for(arch):
        return JITFunction.run(launch.kernel, *launch.args, grid=launch.grid, warmup=True, **launch.kwargs)


def describe_specialization(compiled) -> str:
    """The runtime arguments as Triton specialized them: `N:i32/16` (divisible by 16), `nblk=1` (a constant),
    `x_ptr:*fp32/16`. Constexprs written in the source are left out."""
    source = compiled.src
    parts = []
    for index, param in enumerate(source.fn.params):
        name, kind = param.name, source.signature[param.name]
        if param.is_constexpr:  # declared tl.constexpr: part of the variant's label, not of the specialization
            continue
        if kind == "constexpr":  # a runtime argument Triton turned into a constant (an int equal to 1)
            parts.append(f"{name}={source.constants.get((index,))}")
            continue
        divisible = any(attr[0] == "tt.divisibility" for attr in source.attrs.get((index,), []))
        parts.append(f"{name}:{kind}{'/16' if divisible else ''}")
    return " ".join(parts)


def runtime_arguments(launch: TritonLaunch) -> dict[str, dict]:
    """The launch's non-constexpr arguments as the JSON report records them, so that a test can derive the
    specialization from them independently of Triton: {"N": {"int": 6144}, "x_ptr": {"pointer": "torch.float32",
    "address_mod_256": 0}}, an int the kernel does not let Triton specialize with "not_specialized": True."""
    values = dict(zip((p.name for p in launch.kernel.params), launch.args))
    values.update(launch.kwargs)
    out = {}
    for param in launch.kernel.params:
        if param.is_constexpr or param.name not in values:
            continue
        value = values[param.name]
        if isinstance(value, DevicePointer):
            out[param.name] = {"pointer": str(value.dtype), "address_mod_256": value.data_ptr() % DEVICE_ALIGNMENT}
        elif isinstance(value, bool):
            out[param.name] = {"bool": value}
        elif isinstance(value, int):
            out[param.name] = {"int": value}
            if param.do_not_specialize:  # the kernel's do_not_specialize: neither =1 nor /16
                out[param.name]["not_specialized"] = True
        else:
            out[param.name] = {"float": float(value)}
    return out


# 64-bit integer division in PTX (`div.s64`, `rem.u64`, ...); ptxas turns each into a subroutine call or its
# inlined sequence unless it can narrow it.
_PTX_DIV64 = re.compile(r"\b(?:div|rem)\.[su]64\b")

_TENSOR_SHAPE = re.compile(r"tensor<((?:\d+x)+)[a-z!]")


def slots_per_thread(ttgir: str, threads: int) -> int:
    """Elements each thread holds in the kernel's largest distributed tensor (BLOCK / threads for these 1-D
    kernels; a program that packs samples into a 2-D tensor counts all of them)."""
    largest = max((math.prod(int(d) for d in m.group(1).rstrip("x").split("x")) for m in
                   _TENSOR_SHAPE.finditer(ttgir)), default=1)  # fmt: skip
    return max(1, largest // threads)


# ---------------------------------------------------------------------------------------------------------------
# Rows of the report and the rules.
# ---------------------------------------------------------------------------------------------------------------

# A program's own scalars: the accesses of a main kernel that are one value per program, not per element, and
# so need not be 128-bit.
#
# Triton: counted as in the kernels' source (instruction sites in the SASS).
OWN_SCALARS = {
    # tl.store(partial_ptr + ..., total): the tile's log-det partials, one store (a scalar for one sample).
    "_coupling_forward_kernel": {"loads": 0, "stores": 1},
    # tl.load(grad_logdet_ptr + samples): the tile's log-det gradients, grad_logdet[b], one value a sample: a
    # scalar for one sample; for a tile of 32 vector samples the compiler spreads the 32 values over two
    # instruction sites (each thread holds two rows' values).
    "_coupling_backward_kernel": {"loads": 2, "stores": 0},
    # The spline kernels' the same: the partial, and grad_logdet[b].
    "_spline_forward_kernel": {"loads": 0, "stores": 1},
    "_spline_backward_kernel": {"loads": 2, "stores": 0},
}
# CUDA: by source line, not by count. A line of code in CUDA_SOURCE whose comment carries OWN_SCALAR_MARK is one (the
# sample's log-det or chunk partial the forward stores, grad_logdet[b] the backward loads), and every narrow access
# compiled from it is exempt however many sites ptxas makes of it (one per scale map of the kernel's switch, or
# none where a map does not need it). The report compiles with -lineinfo and reads the lines with `nvdisasm -gi`;
# a narrow access of any other line, or of no known line, breaks rule (a).
CUDA_FAMILIES = tuple(family for source in CUDA_SOURCES for family in source.families)
OWN_SCALAR_MARK = "gpu_code: own scalar"
# A CUDA kernel instantiated for the element-by-element fallback (unaligned tensors, sizes not a multiple of the
# vector width: `coupling_forward_kernel<XT, HT, false>`, its last template argument kVector false) is exempt from
# rule (a): its inputs are the ones no 128-bit access can read. It must still meet rules (b) and (c). Its vector
# twin (`..., true>`) holds only the vector path (the element path is compiled out of it), so a narrow access
# that creeps into the vector path still fails. Only a source whose kernels end in kVector (CudaSource.
# vector_flag) has fallbacks: the spline kernels' last argument is kReverse, and both of theirs are checked.


@functools.lru_cache(maxsize=None)
def own_scalar_lines(source: pathlib.Path = CUDA_SOURCE) -> frozenset[str]:
    """The lines of code in `source` whose comment carries OWN_SCALAR_MARK, as Instruction.source names them
    ("csrc/...:LINE"); a comment line that names the mark is not one."""
    name = source.resolve().relative_to(REPO).as_posix()
    lines = enumerate(source.read_text().splitlines(), start=1)
    return frozenset(f"{name}:{number}" for number, text in lines
                     if text.split("//")[0].strip() and OWN_SCALAR_MARK in text.partition("//")[2])  # fmt: skip


def cuda_own_scalar_lines() -> frozenset[str]:
    """own_scalar_lines of every CUDA source the report reads."""
    return frozenset().union(*(own_scalar_lines(source.path) for source in CUDA_SOURCES))


def cuda_source_of(kernel: str) -> Optional[CudaSource]:
    """The CUDA source whose main kernel families include `kernel`'s, or None."""
    base = kernel.split("<")[0]
    return next((source for source in CUDA_SOURCES if base in source.families), None)


def is_cuda_fallback(kernel: str) -> bool:
    source = cuda_source_of(kernel)
    if source is None or not source.vector_flag:
        return False
    inside = kernel[kernel.find("<") + 1 : kernel.rfind(">")]
    return inside.split(",")[-1].strip() == "false"


# How rule (a) tells a program's own scalars and the fallback, as the report prints it.
RULE_NOTES = (
    "Own scalars (rule a): a Triton kernel's are counted (OWN_SCALARS); a CUDA kernel's are the accesses compiled "
    f"from the source lines marked `// {OWN_SCALAR_MARK}` (the log-det it stores, grad_logdet[b]), read from the "
    "-lineinfo of the SASS, however many sites ptxas makes of each, and a narrow access of any other line fails. The "
    "CUDA element-by-element instantiations (`..., false>`, for misaligned tensors and sizes that are not whole "
    "16-byte groups or blocks) are exempt from rule (a) and held to (b) and (c); their vector twins are checked."
)

RULES = {
    "a": "every global load/store 128-bit, except the program's own scalars",
    "b": "no 64-bit integer division/remainder, no spill",
    "c": f"at least {MIN_ELEMENTS_PER_THREAD} elements per thread in launches of >= 2^20 elements",
}


@dataclass
class Row:
    """One kernel launch variant (Triton) or one kernel function (CUDA), on one arch."""

    backend: str  # "triton" or "cuda"
    kernel: str  # Triton: the JIT function's name; CUDA: the demangled kernel name
    family: str  # kernel_family: the main kernel family, or "" for the log-det sum
    group: str  # the problem group of a Triton launch; "" for a CUDA function
    variant: str  # a readable label
    arch: int
    main: bool
    registers: int
    warps: int
    shared_bytes: int
    programs_per_sm: int
    stats: CodeStats
    local_bytes: int = 0  # stack frame (where spills go) plus local memory
    slots_per_thread: int = 0  # elements a thread holds per program (CUDA: per loop iteration)
    elements: int = 0  # of the launch; 0 for a CUDA function (see `launches`)
    grid: int = 0
    elements_per_thread: float = 0.0
    waves: float = 0.0
    specialization: str = ""
    arguments: dict[str, dict] = field(default_factory=dict)  # Triton: the launch's runtime arguments
    kernel_hash: str = ""  # Triton: the compiled kernel's cache hash
    ptx_div64: int = 0  # Triton: 64-bit div/rem instructions in the PTX (a cross-check of the SASS count)
    launches: list[dict] = field(default_factory=list)  # CUDA: the geometry on each representative problem

    @property
    def mufu_per_element(self) -> float:
        return sum(self.stats.mufu.values()) / max(self.slots_per_thread, 1)

    def id(self) -> str:
        return f"sm{self.arch} {self.backend} {self.kernel} {self.variant}".strip()

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["stats"]["loads"] = {str(k): v for k, v in self.stats.loads.items()}
        out["stats"]["stores"] = {str(k): v for k, v in self.stats.stores.items()}
        out["checks"] = [dataclasses.asdict(check) for check in rule_checks(self)]
        out["failures"] = rule_failures(self)
        out["id"] = self.id()
        out["mufu_per_element"] = self.mufu_per_element
        return out


def kernel_family(kernel: str) -> str:
    """The main kernel family of a kernel (an OWN_SCALARS key or one of CUDA_FAMILIES; a CUDA family includes its
    element-by-element fallback), or "" for an unknown one."""
    base = kernel.split("<")[0]
    return base if base in OWN_SCALARS or base in CUDA_FAMILIES else ""


@dataclass(frozen=True)
class Check:
    """One rule on one main kernel row, for one problem group (a Triton launch's group; for a CUDA function
    "all" for rules a and b, and each problem class of its launches, "image" or "vector", for rule c)."""

    rule: str
    group: str
    ok: bool
    why: str = ""


def _check_widths(row: Row) -> tuple[bool, str]:
    if row.backend == "cuda":
        return _check_cuda_widths(row)
    allowed = OWN_SCALARS.get(row.family, {"loads": 0, "stores": 0})
    why = []
    for kind in ("loads", "stores"):
        by_width = getattr(row.stats, kind)
        narrow = sum(n for bits, n in by_width.items() if bits < 128)
        if narrow > allowed[kind]:
            why.append(f"{narrow} of {sum(by_width.values())} {kind} not 128-bit ({allowed[kind]} own scalars)")
    return not why, ", ".join(why)


def _check_cuda_widths(row: Row) -> tuple[bool, str]:
    """Rule (a) for a CUDA kernel function: narrow accesses on the own-scalar lines only (see OWN_SCALAR_MARK)."""
    if is_cuda_fallback(row.kernel):
        return True, "exempt: the element-by-element fallback"
    own_lines = cuda_own_scalar_lines()
    why = []
    for kind in ("loads", "stores"):
        by_width = getattr(row.stats, kind)
        narrow = sum(n for bits, n in by_width.items() if bits < 128)
        sites = [site for site in row.stats.narrow if site["kind"] == kind]
        exempt = sum(site["sites"] for site in sites if site["source"] in own_lines)
        if narrow > exempt:
            named = [site for site in sites if site["source"] not in own_lines]
            listed = [f"{site['sites']}x {site['opcode']} at {site['source'] or 'no source line'}" for site in named]
            unlisted = narrow - exempt - sum(site["sites"] for site in named)  # stats without sites: no line info
            listed += [f"{unlisted} without a source line"] if unlisted > 0 else []
            why.append(f"{narrow - exempt} of {sum(by_width.values())} {kind} not 128-bit ({exempt} own scalars): "
                       + ", ".join(listed))  # fmt: skip
    return not why, "; ".join(why)


def _check_div_spill(row: Row) -> tuple[bool, str]:
    why = []
    if row.stats.div64:
        why.append(f"{row.stats.div64} 64-bit div/rem")
    if row.stats.spills or row.local_bytes:
        why.append(f"{row.stats.spills} spill instructions, {row.local_bytes} B stack/local")
    return not why, ", ".join(why)


def _check_per_thread(launches: Sequence[dict]) -> tuple[bool, str]:
    thin = [f"{lc['problem']}: {lc['per_thread']:.2f}" for lc in launches
            if lc["elements"] >= LARGE_LAUNCH and lc["per_thread"] < MIN_ELEMENTS_PER_THREAD]  # fmt: skip
    return not thin, ("elements per thread " + "; ".join(thin)) if thin else ""


def rule_checks(row: Row) -> list[Check]:
    """The rules of RULES on a main kernel row; none for the log-det sum."""
    if not row.main:
        return []
    group = row.group or "all"
    checks = [Check("a", group, *_check_widths(row)), Check("b", group, *_check_div_spill(row))]
    if row.backend == "triton":
        launch = dict(problem=row.variant, elements=row.elements, per_thread=row.elements_per_thread)
        checks.append(Check("c", group, *_check_per_thread([launch])))
    else:
        classes: dict[str, list[dict]] = {}
        for launch in row.launches:
            classes.setdefault(launch["problem"].split()[0], []).append(launch)
        checks += [Check("c", name, *_check_per_thread(launches)) for name, launches in classes.items()]
    return checks


def rule_failures(row: Row) -> dict[str, str]:
    """{rule: why} for each rule the row breaks (in any of its groups)."""
    failures: dict[str, str] = {}
    for check in rule_checks(row):
        if not check.ok:
            failures[check.rule] = "; ".join(filter(None, [failures.get(check.rule), check.why]))
    return failures


def read_cubins(paths: Sequence[pathlib.Path]) -> list[tuple[dict[str, SassFunction], dict[str, dict[str, int]]]]:
    """read_cubin of each path, several at once (each is a subprocess)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(read_cubin, paths))


def triton_rows(launches: Sequence[TritonLaunch], arch: int, workdir: pathlib.Path) -> list[Row]:
    limits = ARCH_LIMITS[arch]
    compiled_kernels = [compile_launch(launch, arch) for launch in launches]
    paths: dict[str, pathlib.Path] = {}  # one cubin per distinct compiled kernel
    for compiled in compiled_kernels:
        if compiled.hash not in paths:
            paths[compiled.hash] = workdir / f"{compiled.name}-{compiled.hash[:16]}-sm{arch}.cubin"
            paths[compiled.hash].write_bytes(compiled.asm["cubin"])
    seen = dict(zip(paths, read_cubins(list(paths.values()))))
    rows = []
    for launch, compiled in zip(launches, compiled_kernels):
        functions, usage = seen[compiled.hash]
        function = functions[compiled.name]
        resources = usage.get(compiled.name, {})
        warps = compiled.metadata.num_warps
        threads = 32 * warps
        grid = math.prod(launch.grid)
        registers = resources.get("REG", 0)
        per_sm = programs_per_sm(registers, warps, resources.get("SHARED", 0) + compiled.metadata.shared, arch)
        rows.append(
            Row(
                backend="triton",
                kernel=compiled.name,
                family=kernel_family(compiled.name) if launch.is_main else "",
                group=launch.problem.group,
                variant=launch.problem.label(launch.direction),
                arch=arch,
                main=launch.is_main,
                registers=registers,
                warps=warps,
                shared_bytes=resources.get("SHARED", 0) + compiled.metadata.shared,
                programs_per_sm=per_sm,
                stats=code_stats(function),
                local_bytes=resources.get("STACK", 0) + resources.get("LOCAL", 0),
                slots_per_thread=slots_per_thread(compiled.asm["ttgir"], threads),
                elements=launch.elements,
                grid=grid,
                elements_per_thread=launch.elements / (grid * threads),
                waves=grid / max(per_sm * limits.sms, 1),
                specialization=describe_specialization(compiled),
                arguments=runtime_arguments(launch),
                kernel_hash=compiled.hash,
                ptx_div64=len(_PTX_DIV64.findall(compiled.asm["ptx"])),
            )
        )
    return rows


# ---------------------------------------------------------------------------------------------------------------
# CUDA: nvcc, then the same statistics per kernel function, and the launch geometry of the problems.
# ---------------------------------------------------------------------------------------------------------------

# The flags the extension build gives nvcc (nf_kernels/_build.py NVCC_FLAGS plus torch's common flags). -lineinfo
# (the build's too) gives each SASS instruction its source line, which rule (a) reads; it leaves the SASS as is.
NVCC_FLAGS = [
    "-std=c++17", "-O3", "--expt-relaxed-constexpr", "-lineinfo", "-D__CUDA_NO_HALF_OPERATORS__",
    "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
    "-Xcompiler", "-fPIC",
]  # fmt: skip

def nvcc() -> Optional[str]:
    return cuda_tool("nvcc")


def start_cuda_build(
    archs: Sequence[int], workdir: pathlib.Path, source: CudaSource = CUDA_SOURCES[0]
) -> subprocess.Popen:
    """nvcc -c of one source's kernels for the given archs into workdir/<stem>.o, in the background (it is the slow
    part of the report; the sources build in parallel)."""
    command = [nvcc(), "-c", str(source.path), "-o", str(workdir / f"{source.stem}.o"), *NVCC_FLAGS]
    for arch in archs:
        command += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    command += ["--threads", str(len(archs))]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def extract_cubins(obj: pathlib.Path, workdir: pathlib.Path) -> dict[int, pathlib.Path]:
    """The per-arch cubins inside an nvcc object: {90: path, 80: path} (under workdir/cubins-<object's stem>)."""
    out_dir = workdir / f"cubins-{obj.stem}"
    out_dir.mkdir(exist_ok=True)
    subprocess.run([cuda_tool("cuobjdump"), "-xelf", "all", str(obj)], cwd=out_dir, check=True, capture_output=True)
    cubins = {}
    for path in out_dir.glob("*.cubin"):
        match = re.search(r"sm_(\d+)", path.name)
        if match:
            cubins[int(match.group(1))] = path
    return cubins


def _cuda_x_type(name: str) -> str:
    """`coupling_forward_kernel<float, bf16>` -> "float" (the x type, which sets the vector width G)."""
    inside = name[name.find("<") + 1 : name.rfind(">")]
    return inside.split(",")[0].strip()


def cuda_problems() -> list[tuple[str, tuple[int, ...], str]]:
    """(label, x shape, dtype) of the launches whose geometry the CUDA rows report: both problem classes of the
    Triton problems, in each x dtype."""
    return [(f"{group} {dtype}", shape, dtype) for group, shape in (("image", IMAGE), ("vector", VECTOR))
            for dtype in ("fp32", "bf16", "fp16")]  # fmt: skip


def finish_cuda_build(build: subprocess.Popen) -> None:
    log, _ = build.communicate()
    if build.returncode != 0:
        raise RuntimeError(f"nvcc failed ({build.returncode}):\n{log[-4000:]}")


def assign_cuda_objects(paths: Sequence[pathlib.Path]) -> dict[str, pathlib.Path]:
    """{source stem: object} for already-built nvcc objects: each path a .o file or a directory of them; an object
    belongs to the source whose kernels its symbols name (so any file name works, as `--cuda-object BUILT.o` of the
    coupling kernels always did). An object of no known source, or a second one of a source, is an error."""
    objects: dict[str, pathlib.Path] = {}
    for path in paths:
        for obj in sorted(path.glob("*.o")) if path.is_dir() else [path]:
            owners = [source for source in CUDA_SOURCES if source.holds_kernels_of(obj)]
            if len(owners) != 1:
                raise RuntimeError(f"{obj} holds the kernels of {len(owners)} of the CUDA sources, not one")
            if owners[0].stem in objects:
                raise RuntimeError(f"two objects of {owners[0].path.name}: {objects[owners[0].stem]} and {obj}")
            objects[owners[0].stem] = obj
    return objects


def cuda_rows(archs: Sequence[int], workdir: pathlib.Path) -> list[Row]:
    """Rows of every kernel function in workdir/<stem>.o of each CUDA source (nvcc's object, SASS for each arch)."""
    problem_list = cuda_problems()
    rows = []
    for source in CUDA_SOURCES:
        cubins = extract_cubins(workdir / f"{source.stem}.o", workdir)
        missing = [arch for arch in archs if arch not in cubins]
        if missing:
            raise RuntimeError(f"the CUDA object of {source.path.name} has no SASS for sm_{missing} (it has "
                               f"{sorted(cubins)})")  # fmt: skip
        for arch in archs:
            rows += _cuda_source_rows(source, arch, *read_cubin(cubins[arch], line_info=True), problem_list)
    return rows


def _cuda_source_rows(source: CudaSource, arch: int, functions: dict[str, SassFunction],
                      usage: dict[str, dict[str, int]], problem_list: Sequence[tuple]) -> list[Row]:  # fmt: skip
    limits = ARCH_LIMITS[arch]
    readable = demangle(sorted(functions))
    rows = []
    for mangled in sorted(functions, key=lambda m: readable[m]):
        name = readable[mangled]
        resources = usage.get(mangled, {})
        warps = source.threads // 32
        registers = resources.get("REG", 0)
        per_sm = programs_per_sm(registers, warps, resources.get("SHARED", 0), arch)
        x_type = _cuda_x_type(name)
        main = name.split("<")[0] in source.families
        launches = []
        per_iteration = source.geometry(x_type, per_sm, IMAGE, limits.sms).per_iteration
        if main:
            x_dtype = {"float": "fp32", "bf16": "bf16", "half": "fp16", "double": "fp64"}.get(x_type)
            for label, shape, dtype in problem_list:
                if dtype != x_dtype:
                    continue
                elements = math.prod(shape)
                geometry = source.geometry(x_type, per_sm, shape, limits.sms)
                launches.append(dict(problem=label, elements=elements, grid=geometry.grid,
                                     per_thread=elements / (geometry.grid * geometry.threads),
                                     waves=geometry.grid / max(per_sm * limits.sms, 1)))  # fmt: skip
        rows.append(
            Row(
                backend="cuda", kernel=name, family=kernel_family(name), group="", variant="", arch=arch, main=main,
                registers=registers, warps=warps, shared_bytes=resources.get("SHARED", 0),
                programs_per_sm=per_sm, stats=code_stats(functions[mangled]),
                local_bytes=resources.get("STACK", 0) + resources.get("LOCAL", 0), slots_per_thread=per_iteration,
                launches=launches,
            )  # fmt: skip
        )
    return rows


# ---------------------------------------------------------------------------------------------------------------
# The report.
# ---------------------------------------------------------------------------------------------------------------


def _widths(by_width: dict[int, int]) -> str:
    """`4x128 32x32`: counts by width, widest first."""
    return " ".join(f"{n}x{bits}" for bits, n in sorted(by_width.items(), reverse=True)) or "-"


def _share(by_width: dict[int, int]) -> str:
    share = CodeStats.share_128(by_width)
    return "-" if share is None else f"{100 * share:.0f}%"


def _rules(row: Row) -> str:
    if not row.main:
        return "(not checked)"
    failures = rule_failures(row)
    return " ".join(f"{rule}:{'FAIL' if rule in failures else 'ok'}" for rule in RULES)


def _mufu(row: Row) -> str:
    kinds = " ".join(f"{k}{n}" for k, n in sorted(row.stats.mufu.items()))
    return f"{row.mufu_per_element:.1f} ({kinds})" if kinds else "0"


def _calls(row: Row) -> str:
    return " ".join(f"{name}x{n}" for name, n in sorted(row.stats.calls.items())) or "-"


TRITON_COLUMNS = ["sm", "kernel", "launch", "grid x warps", "regs", "prog/SM", "waves", "elem/thr", "LDG (128-bit)",
                  "STG (128-bit)", "div64", "spill", "MUFU/elem", "calls", "rules"]  # fmt: skip
CUDA_COLUMNS = ["sm", "kernel", "regs", "prog/SM", "elem/thr/iter", "LDG (128-bit)", "STG (128-bit)", "div64",
                "spill", "MUFU/elem (all paths)", "calls", "launches: elem/thr, waves", "rules"]  # fmt: skip


def _triton_cells(row: Row) -> list[str]:
    return [
        str(row.arch), row.kernel, row.variant, f"{row.grid} x {row.warps}", str(row.registers),
        str(row.programs_per_sm), f"{row.waves:.2f}", f"{row.elements_per_thread:.2f}",
        f"{_widths(row.stats.loads)} ({_share(row.stats.loads)})",
        f"{_widths(row.stats.stores)} ({_share(row.stats.stores)})", str(row.stats.div64),
        str(row.stats.spills), _mufu(row), _calls(row), _rules(row),
    ]  # fmt: skip


def _cuda_cells(row: Row) -> list[str]:
    geometry = "; ".join(f"{lc['problem']}: {lc['per_thread']:.2f}, {lc['waves']:.2f}" for lc in row.launches)
    return [
        str(row.arch), row.kernel, str(row.registers), str(row.programs_per_sm), str(row.slots_per_thread),
        f"{_widths(row.stats.loads)} ({_share(row.stats.loads)})",
        f"{_widths(row.stats.stores)} ({_share(row.stats.stores)})", str(row.stats.div64), str(row.stats.spills),
        _mufu(row), _calls(row), geometry or "-", _rules(row),
    ]  # fmt: skip


def format_markdown(columns: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines)


def format_text(columns: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


SUMMARY_COLUMNS = ["sm", "kernel", "group", "rows", "regs", "prog/SM", "elem/thr", "LDG 128-bit", "STG 128-bit",
                   "div64", "spill", "MUFU/elem", "a", "b", "c"]  # fmt: skip


def _span(values: Sequence[float], fmt: str = "{:.0f}") -> str:
    low, high = min(values), max(values)
    return fmt.format(low) if low == high else f"{fmt.format(low)}-{fmt.format(high)}"


def summary_cells(rows: Sequence[Row]) -> list[list[str]]:
    """One line per main kernel and problem group (CUDA: per kernel, over its dtype instantiations): ranges over
    the rows, and each rule's verdict."""
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        if row.main:
            groups.setdefault((row.arch, row.backend, row.family or row.kernel, row.group), []).append(row)
    cells = []
    for (arch, backend, family, group), members in groups.items():
        verdicts: dict[str, list[str]] = {}
        for row in members:
            for check in rule_checks(row):
                label = "" if check.group in (group, "all") else f"{check.group} "
                verdicts.setdefault(check.rule, []).append(label + ("ok" if check.ok else "FAIL"))
        per_thread = [r.elements_per_thread for r in members if r.backend == "triton"]
        per_thread += [lc["per_thread"] for r in members for lc in r.launches]
        shares = {kind: [CodeStats.share_128(getattr(r.stats, kind)) or 0.0 for r in members]
                  for kind in ("loads", "stores")}  # fmt: skip
        cells.append([
            str(arch), f"{backend} {family}", group or "all dtypes", str(len(members)),
            _span([r.registers for r in members]), _span([r.programs_per_sm for r in members]),
            _span(per_thread, "{:.2f}") if per_thread else "-",
            _span([100 * v for v in shares["loads"]], "{:.0f}%"), _span([100 * v for v in shares["stores"]], "{:.0f}%"),
            _span([r.stats.div64 for r in members]), _span([r.stats.spills for r in members]),
            _span([r.mufu_per_element for r in members], "{:.1f}"),
            *(_verdict(verdicts.get(rule, [])) for rule in RULES),
        ])  # fmt: skip
    return cells


def _verdict(verdicts: list[str]) -> str:
    """"ok", "FAIL", or per problem class ("image ok, vector FAIL"); a group fails if any of its rows does."""
    by_label: dict[str, bool] = {}
    for verdict in verdicts:
        label, _, word = verdict.rpartition(" ")
        by_label[label] = by_label.get(label, True) and word == "ok"
    return ", ".join(f"{label} {'ok' if ok else 'FAIL'}".strip() for label, ok in sorted(by_label.items())) or "-"


def report_text(rows: Sequence[Row], markdown: bool) -> str:
    fmt = format_markdown if markdown else format_text
    triton = [r for r in rows if r.backend == "triton"]
    cuda = [r for r in rows if r.backend == "cuda"]
    parts = ["Summary (main kernels; ranges over the rows of each group):", fmt(SUMMARY_COLUMNS, summary_cells(rows))]
    if triton:
        parts += ["Triton launches (one row per launch variant):",
                  fmt(TRITON_COLUMNS, [_triton_cells(r) for r in triton])]  # fmt: skip
    if cuda:
        parts += ["CUDA kernel functions (static counts over the whole function, every scale map of its switch; "
                  "coupling kernels: `..., true>` is the vector path, `..., false>` the element-by-element fallback; "
                  "spline kernels: the last argument is kReverse, `..., true>` the inverse):",
                  fmt(CUDA_COLUMNS, [_cuda_cells(r) for r in cuda])]  # fmt: skip
    parts.append("Rules: " + "; ".join(f"({k}) {v}" for k, v in RULES.items()))
    parts.append(RULE_NOTES)
    return "\n\n".join(parts)


def specialization_text(rows: Sequence[Row]) -> str:
    """The Triton specialization of each distinct launch, as Triton computed it."""
    seen = {}
    for row in rows:
        if row.backend == "triton":
            seen.setdefault((row.kernel, row.specialization), []).append(row.variant)
    return "\n".join(f"- `{kernel}` {spec}  ({len(v)} launches, e.g. {v[0]})" for (kernel, spec), v in seen.items())


def tool_versions() -> dict[str, str]:
    versions = {}
    try:
        import triton
        import torch

        versions.update(triton=triton.__version__, torch=torch.__version__)
    except ImportError:
        pass
    if nvcc():
        versions["nvcc"] = _run_tool([nvcc(), "--version"]).strip().splitlines()[-1]
    try:
        versions["commit"] = _run_tool(["git", "-C", str(REPO), "rev-parse", "HEAD"], timeout=30).strip()
    except (RuntimeError, OSError):
        versions["commit"] = "unknown"
    return versions


def build_report(
    archs: Sequence[int],
    with_cuda: bool,
    workdir: pathlib.Path,
    cuda_objects: Sequence[pathlib.Path] = (),
    verify: bool = False,
) -> tuple[list[Row], dict]:
    """Every row; nvcc builds each CUDA source in the background (all in parallel) while Triton compiles, unless
    `cuda_objects` (see assign_cuda_objects) has its object already built."""
    started = time.monotonic()
    builds = []
    if with_cuda:
        built = assign_cuda_objects(cuda_objects)
        for source in CUDA_SOURCES:
            if source.stem in built:
                shutil.copy(built[source.stem], workdir / f"{source.stem}.o")
            else:
                builds.append(start_cuda_build(archs, workdir, source))
    launches = capture_triton_launches(problems())
    rows = []
    for arch in archs:
        rows += triton_rows(launches, arch, workdir)
    triton_seconds = time.monotonic() - started
    for build in builds:
        finish_cuda_build(build)
    if with_cuda:
        rows += cuda_rows(archs, workdir)
    info: dict[str, Any] = {"triton_s": round(triton_seconds, 1)}
    if verify:
        kernels = list({id(launch.kernel): launch.kernel for launch in launches}.values())
        info["gpu_check"] = verify_on_gpu(problems(), kernels, {r.kernel_hash for r in rows if r.kernel_hash})
    info["total_s"] = round(time.monotonic() - started, 1)
    return rows, info


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, action="append", choices=sorted(ARCH_LIMITS),
                        help="compile for sm_<ARCH>; repeat for several (default: 90 and 80)")  # fmt: skip
    parser.add_argument("--markdown", type=pathlib.Path, help="also write the report as markdown to this file")
    parser.add_argument("--summary", type=pathlib.Path, help="also write the summary table alone, as markdown")
    parser.add_argument("--json", type=pathlib.Path, help="also write every row (and its rule failures) as JSON")
    parser.add_argument("--no-cuda", action="store_true", help="skip the CUDA kernels (no nvcc needed)")
    parser.add_argument("--cuda-object", type=pathlib.Path, action="append", default=[],
                        help="read a CUDA source's kernels from this already-built nvcc object (of csrc/cuda/"
                             "coupling_kernels.cu or spline_kernels.cu, told apart by their kernels' names; the "
                             "extension build's will do) or from each .o in this directory instead of compiling "
                             "them; repeat for several; the sources without one are compiled")  # fmt: skip
    parser.add_argument("--verify-on-gpu", action="store_true",
                        help="on a CUDA machine: also run the problems for real and check that Triton compiled the "
                             "very kernels the report read (needs --arch to include this GPU's arch)")  # fmt: skip
    parser.add_argument("--check", action="store_true", help="exit 1 when a main kernel breaks a rule")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        parser.error("run without TRITON_INTERPRET: the report compiles the kernels for the GPU")
    archs = args.arch or [90, 80]
    with_cuda = not args.no_cuda
    if with_cuda and nvcc() is None and len(assign_cuda_objects(args.cuda_object)) < len(CUDA_SOURCES):
        print("nvcc not found: the CUDA kernels are left out (--no-cuda to silence this)", file=sys.stderr)
        with_cuda = False
    with tempfile.TemporaryDirectory(prefix="nf-gpu-code-") as work:
        rows, info = build_report(archs, with_cuda, pathlib.Path(work), args.cuda_object, args.verify_on_gpu)
    versions = tool_versions()
    command = " ".join(["python -m nf_kernels.benchmarking.gpu_code", *(argv if argv is not None else sys.argv[1:])])
    provenance = ", ".join(f"{k} {v}" for k, v in versions.items())
    gpu_check = info.get("gpu_check")
    summary = f"seconds: Triton {info['triton_s']}, total {info['total_s']}"
    if gpu_check:
        summary += (f"; on {gpu_check['device']}: {gpu_check['matched']} of {gpu_check['real_kernels']} kernels "
                    f"Triton compiled for the real launches are the report's (unmatched: {gpu_check['unmatched']})")
    print(f"{command}\n{provenance}\n{summary}\n\n{report_text(rows, markdown=False)}")
    if args.markdown:
        args.markdown.write_text(
            f"`{command}`\n\n{provenance}\n\n{summary}\n\n{report_text(rows, markdown=True)}\n\n"
            "Triton specializations of the launches (runtime arguments only; `/16`: divisible by 16, "
            "`=1`: specialized to the constant):\n\n" + specialization_text(rows) + "\n"
        )  # fmt: skip
    if args.summary:
        args.summary.write_text(f"`{command}`\n\n{provenance}\n\n{summary}\n\n"
                                + format_markdown(SUMMARY_COLUMNS, summary_cells(rows)) + "\n")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"versions": versions, "info": info, "archs": archs, "cuda": with_cuda,
                                         "rows": [r.to_json() for r in rows]}, indent=1))  # fmt: skip
    if gpu_check and gpu_check["unmatched"]:
        print("the report did not reproduce every kernel the real launches compiled", file=sys.stderr)
        return 1
    failing = [r for r in rows if rule_failures(r)]
    if args.check and failing:
        print(f"\n{len(failing)} main kernel rows break a rule", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
