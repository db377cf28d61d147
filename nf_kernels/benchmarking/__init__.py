"""Side-by-side speed measurements of the coupling ops and of flow models (SPEC section 4).

The building blocks of ``benchmarks/run.py`` and ``nf-kernels bench`` (both run a plan with :func:`run_plan`):

    >>> from nf_kernels.benchmarking import run_op_benchmarks, format_table
    >>> results = run_op_benchmarks("cpu", sizes=[2**20], dtypes=["fp32"], ops=["affine"])  # doctest: +SKIP
    >>> print(format_table(results))  # doctest: +SKIP
    | op | direction | mask | dtype | size | eager ms | compile ms | cpu ms | best | GB/s | % ceiling | ...

Each result carries its median time (and every round's, with ``rounds``), the SPEC byte count, GB/s, the fraction
of the copy bandwidth (the ceiling) measured in the same run, whether the case fits in the last-level cache,
speedups over eager and ``torch.compile`` of the reference, and peak memory (CUDA).
"""

from .byte_model import backward_bytes, bytes_moved, forward_bytes
from .cases import DIRECTIONS, DTYPES, MASKS, OPS, OpCase, op_cases
from .environment import environment
from .machine import CacheSize, cache_reach, copy_bandwidth, last_level_cache
from .model_runner import BENCHMARKED_MODELS, ModelResult, run_model_benchmarks
from .op_runner import OpResult, run_cases, run_op_benchmarks
from .presets import PRESETS, PlanRun, Preset, preset, run_plan
from .providers import PROVIDERS, available_providers
from .report import (
    format_model_table, format_report, format_summary, format_table, largest_size, timing_warnings, write_results,
)  # fmt: skip
from .targets import TargetCheck, check_targets
from .timing import TimingBudget, keep_freed_cpu_memory

__all__ = [
    "BENCHMARKED_MODELS", "DIRECTIONS", "DTYPES", "MASKS", "OPS", "PRESETS", "PROVIDERS", "PlanRun", "Preset",
    "CacheSize", "ModelResult", "OpCase", "OpResult", "TargetCheck", "TimingBudget",
    "available_providers", "backward_bytes", "bytes_moved", "cache_reach", "check_targets", "copy_bandwidth",
    "environment", "format_model_table", "format_report", "format_summary", "format_table", "forward_bytes",
    "keep_freed_cpu_memory", "largest_size", "last_level_cache", "op_cases",
    "preset", "run_cases", "run_model_benchmarks", "run_op_benchmarks", "run_plan", "timing_warnings",
    "write_results",
]  # fmt: skip
