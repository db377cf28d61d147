"""What one run tells its reader: markdown tables, the warnings about untrustworthy timings, the bandwidth plots,
the JSON record and the results' file names.

``format_overhead_table`` prints the op-layer overhead case (overhead_runner.py), each stage in microseconds.

``format_table`` prints one row per case with every provider's time side by side, then the fastest fused
provider's GB/s, share of the copy-bandwidth ceiling ("in cache" when the case fits in the last-level cache),
speedups and peak memory, and the spread between rounds (the JSON keeps every number of every provider).

**Warnings.** On a shared machine the same benchmark was seen to differ by up to 10x from one run to the next. Two
signs give it away in the run itself: the interleaved rounds of a case disagree (op_runner.run_cases keeps every
round's time), or the 1-minute load average exceeds the number of cores, so other processes compete for them.

**The bandwidth plot**: achieved GB/s against size, one line per provider, with the copy bandwidth drawn in. The
copy bandwidth is the ceiling of a memory-bound op's GB/s (its floor time is bytes / copy bandwidth), so a
provider's line touching it means the op runs as fast as memory allows. Sizes that fit in the last-level cache
are drawn as hollow points: they can pass the ceiling without saying anything about memory. One panel per
(op, direction, mask), one figure per dtype.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from .model_runner import ModelResult
from .op_runner import OpResult
from .overhead_runner import STAGES, OverheadResult
from .providers import PROVIDERS
from .targets import TargetCheck, best_fused

MIB = 1 << 20
SPREAD_LIMIT = 1.5  # slowest round over fastest round, beyond which a figure is noise rather than a measurement


def format_number(value: Optional[float], fmt: str = ".3g") -> str:
    return "n/a" if value is None else format(value, fmt)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _mib(nbytes: Optional[int]) -> str:
    return "n/a" if nbytes is None else f"{nbytes / MIB:.0f}"


def _ceiling_share(result: OpResult) -> str:
    return "in cache" if result.in_cache else f"{result.copy_fraction:.0%}"


def _spread(row: dict) -> str:
    """The largest spread between rounds among the providers of a row (its least steady figure)."""
    spreads = [r.spread for r in row.values() if r.spread is not None]
    return f"{max(spreads):.2f}x" if spreads else "-"


def format_table(results: Sequence[OpResult]) -> str:
    """A markdown table: a row per case, each provider's median time in ms, then the fastest fused provider's
    figures ("best"; the fastest provider of any kind when no fused one ran), then the spread between rounds.

    >>> from nf_kernels.benchmarking.cases import OpCase
    >>> from nf_kernels.benchmarking.op_runner import add_speedups
    >>> case = OpCase("affine", "forward", "half", "fp32", 2**20)
    >>> rows = [OpResult(case, "eager", 2e-3, 12 * 2**20, 10e9), OpResult(case, "cpu", 1e-3, 12 * 2**20, 10e9)]
    >>> add_speedups(rows); print(format_table(rows).splitlines()[2])
    | affine | forward | half | fp32 | 2^20 | 2 | 1 | cpu | 12.6 | 126% | 2.00 | n/a | n/a | - |
    """
    providers = [name for name in PROVIDERS if any(r.provider == name for r in results)]
    best = best_fused(results)
    by_case: dict = {}
    for r in results:
        by_case.setdefault(r.case, {})[r.provider] = r
    header = ["op", "direction", "mask", "dtype", "size"] + [f"{name} ms" for name in providers]
    header += ["best", "GB/s", "% ceiling", "x eager", "x compile", "peak MiB", "spread"]
    rows = []
    for case, row in by_case.items():
        times = [format_number(row[name].seconds * 1e3) if name in row and row[name].seconds else
                 ("fail" if name in row else "-") for name in providers]  # fmt: skip
        winner = best.get(case) or min((r for r in row.values() if r.seconds), key=lambda r: r.seconds, default=None)
        figures = ["-"] * 6
        if winner is not None:
            figures = [winner.provider, format_number(winner.gbps), _ceiling_share(winner),
                       format_number(winner.speedup_vs_eager, ".2f"), format_number(winner.speedup_vs_compile, ".2f"),
                       _mib(winner.peak_bytes)]  # fmt: skip
        size = f"2^{case.numel.bit_length() - 1}"
        rows.append([case.op, case.direction, case.mask, case.dtype, size] + times + figures + [_spread(row)])
    failures = [f"- {r.case.label()} {r.provider}: {r.error}" for r in results if r.error]
    return markdown_table(header, rows) + ("\n\nFailures:\n" + "\n".join(failures) if failures else "")


def largest_size(results: Sequence[OpResult]) -> list[OpResult]:
    """Only the results at the largest size of each configuration: the short summary's rows."""
    largest: dict = {}
    for r in results:
        largest[r.case.group] = max(largest.get(r.case.group, 0), r.case.numel)
    return [r for r in results if r.case.numel == largest[r.case.group]]


def format_model_table(results: Sequence[ModelResult]) -> str:
    """A markdown table of training-step results: samples/s, speedup over the reference, the memory-saving step's
    time over the standard one, peak memory."""
    header = ["model", "backend", "memory-saving", "batch", "sample", "step ms", "samples/s", "x reference",
              "time x standard", "peak MiB", "first loss"]  # fmt: skip
    rows = [
        [r.model, r.backend, "yes" if r.memory_saving else "no", str(r.batch), "x".join(map(str, r.sample_shape)),
         format_number(r.seconds * 1e3 if r.seconds else None), format_number(r.samples_per_s, ".4g"),
         format_number(r.speedup_vs_reference, ".2f"), format_number(r.time_vs_standard, ".2f"), _mib(r.peak_bytes),
         format_number(r.first_loss, ".6g") if not r.error else "fail"]
        for r in results
    ]  # fmt: skip
    failures = [f"- {r.model} {r.backend}: {r.error}" for r in results if r.error]
    return markdown_table(header, rows) + ("\n\nFailures:\n" + "\n".join(failures) if failures else "")


def _microseconds(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value * 1e6:.1f}"


def format_overhead_table(results: Sequence[OverheadResult]) -> str:
    """The op-layer overhead case: per shape, each stage's time and the overheads, in microseconds per call.

    >>> from nf_kernels.benchmarking.cases import OverheadCase
    >>> seconds = dict(zip(STAGES, (10e-6, 9e-6, 25e-6, 12e-6, 14e-6, 30e-6)))
    >>> print(format_overhead_table([OverheadResult(OverheadCase((256, 64)), "cpu", seconds)]).splitlines()[2])
    | [256, 64] | fp32 | cpu | 10.0 | 9.0 | 25.0 | 12.0 | 14.0 | 30.0 | 2.0 | 4.0 | 11.0 | 5.0 |
    """
    header = ["shape", "dtype", "backend", *(f"{stage} us" for stage in STAGES), "overhead fwd no grad us",
              "overhead fwd us", "overhead fwd+bwd us", "fwd+bwd over the autograd op us"]  # fmt: skip
    overheads = ("forward_no_grad_overhead", "forward_overhead", "forward_backward_overhead", "python_layer_overhead")
    rows = [[str(list(r.case.shape)), r.case.dtype, r.backend]
            + [_microseconds(r.seconds.get(stage)) for stage in STAGES]
            + [_microseconds(getattr(r, name)) for name in overheads] for r in results]  # fmt: skip
    failures = [f"- {r.case.label()} {r.backend}: {r.error}" for r in results if r.error]
    return markdown_table(header, rows) + ("\n\nNot measured:\n" + "\n".join(failures) if failures else "")


def format_targets(checks: Sequence[TargetCheck]) -> str:
    return "\n".join(f"- {check}" for check in checks) or "- no targets for this device"


def spread_warning(results: Sequence[OpResult], limit: float = SPREAD_LIMIT) -> Optional[str]:
    """One line naming how many timings varied by more than `limit` between rounds, and the worst; None if none.

    >>> from nf_kernels.benchmarking.cases import OpCase
    >>> case = OpCase("affine", "forward", "half", "fp32", 2**10)
    >>> print(spread_warning([OpResult(case, "eager", 1e-3, 1, 1.0, round_seconds=(1e-3, 2e-3, 1e-3))]))
    ... # doctest: +ELLIPSIS
    timings varied by more than 1.5x between rounds in 1 of 1 measurements (worst: affine ... eager, 1 to 2 ms, 2.0x)...
    """
    measured = [r for r in results if r.spread is not None]
    noisy = [r for r in measured if r.spread > limit]
    if not noisy:
        return None
    worst = max(noisy, key=lambda r: r.spread)
    fastest, slowest = min(worst.round_seconds) * 1e3, max(worst.round_seconds) * 1e3
    return (f"timings varied by more than {limit:g}x between rounds in {len(noisy)} of {len(measured)} measurements "
            f"(worst: {worst.case.label()} {worst.provider}, {fastest:.3g} to {slowest:.3g} ms, {worst.spread:.1f}x): "
            "the machine was busy; rerun it quieter or with more --rounds")  # fmt: skip


def load_warning(load_averages: Sequence[Optional[float]], cores: Optional[int]) -> Optional[str]:
    """One line when the highest of the 1-minute load averages (taken at the start and the end of a run, say)
    exceeds the core count; None otherwise or when either is unknown.

    >>> load_warning([1.2, 3.5], 2)  # doctest: +ELLIPSIS
    'the 1-minute load average reached 3.5 on 2 cores: other processes competed with the timed code, ...'
    """
    known = [load for load in load_averages if load is not None]
    if not known or not cores or max(known) <= cores:
        return None
    return (f"the 1-minute load average reached {max(known):.2g} on {cores} cores: other processes competed with "
            "the timed code, so times may be slow and noisy")


def timing_warnings(env: dict, op_results: Sequence[OpResult]) -> list[str]:
    """Every warning for a run described by `env` (environment(), plus ``load_average_1m_end`` once it ended)."""
    loads = (env.get("load_average_1m"), env.get("load_average_1m_end"))
    found = (spread_warning(op_results), load_warning(loads, env.get("cores")))
    return [warning for warning in found if warning]


def format_warnings(env: dict, op_results: Sequence[OpResult]) -> list[str]:
    """A "## Warnings" section when the run's timings are suspect (:func:`timing_warnings`), else nothing."""
    warnings = timing_warnings(env, op_results)
    return ["", "## Warnings", "", *(f"- warning: {warning}" for warning in warnings)] if warnings else []


def format_report(
    env: dict,
    copy_bytes_per_s: Optional[float],
    op_results: Sequence[OpResult],
    model_results: Sequence[ModelResult],
    checks: Sequence[TargetCheck],
    command: str = "",
    overhead_results: Sequence[OverheadResult] = (),
) -> str:
    """The whole markdown document of one run."""
    parts = [
        f"# nf_kernels benchmarks: {env['device_name']}",
        "",
        f"- date: {env['date']}, commit `{env['commit']}`",
        f"- torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}, Python {env['python']}",
    ]
    if command:
        parts.append(f"- command: `{command}`")
    if env["device"] == "cpu":
        parts.append(f"- CPU: {env['threads']} threads, OMP_WAIT_POLICY={env.get('omp_wait_policy')}, "
                     f"malloc: {env.get('cpu_malloc', 'system default')}, 1-minute load average "
                     f"{format_number(env.get('load_average_1m'), '.2g')} at the start and "
                     f"{format_number(env.get('load_average_1m_end'), '.2g')} at the end on {env.get('cores')} cores "
                     "(other processes on the machine skew CPU timings)")
    if copy_bytes_per_s:
        parts.append(f"- copy bandwidth, the ceiling of a memory-bound op's GB/s (read + write, the best of 3 large "
                     f"device copies): {copy_bytes_per_s / 1e9:.1f} GB/s. A case's floor is a time, its bytes over "
                     "this ceiling; % ceiling is its GB/s over the ceiling (its floor over its time).")
    parts += [
        "- GB/s use the SPEC byte count (nf_kernels/benchmarking/byte_model.py): affine half 3N (fwd) / 5N (bwd), "
        "checkerboard 4N / 7N, additive half 2.5N / 2.5N, additive checkerboard 3N / 3N, times the itemsize.",
        f"- in cache: the case's bytes are at most {_mib(env.get('cache_reach_bytes'))} MiB, within reach of the "
        f"last-level cache ({env.get('last_level_cache')}; see nf_kernels/benchmarking/machine.py), so it can beat "
        "the ceiling: it gets no % ceiling and the targets leave it out.",
        "- peak MiB: memory allocated by one call above its inputs (CUDA); n/a on the CPU.",
        f"- spread: slowest round over fastest round, the least steady provider of the row (above {SPREAD_LIMIT:g}x "
        "a warning says so); - with one round (--rounds).",
    ]
    parts += format_warnings(env, op_results)
    parts += ["", "## Targets", "", format_targets(checks)]
    if op_results:
        parts += ["", "## Ops (median times)", "", format_table(op_results)]
    if model_results:
        parts += ["", "## Models (one training step)", "", format_model_table(model_results)]
    parts += _overhead_section(overhead_results)
    return "\n".join(parts) + "\n"


def _overhead_section(results: Sequence[OverheadResult]) -> list[str]:
    if not results:
        return []
    return ["", "## Op-layer overhead (microseconds per call, fastest round)", "", format_overhead_table(results), "",
            "raw: the extension's raw ops with a precomputed layout; autograd op: its differentiable op called "
            "directly, then torch.autograd.grad (kernels and autograd engine, no Python layer); public: "
            "nf_kernels.affine_coupling. Overheads: public forward over raw forward, public forward+backward over "
            "raw forward + raw backward, and over the autograd op."]  # fmt: skip


def format_summary(
    env: dict,
    op_results: Sequence[OpResult],
    model_results: Sequence[ModelResult],
    checks: Sequence[TargetCheck],
    overhead_results: Sequence[OverheadResult] = (),
) -> str:
    """The short version: targets, the ops at their largest size, the models, the op-layer overhead."""
    parts = [f"# Summary: {env['device_name']}, commit {env['commit']}", *format_warnings(env, op_results)]
    parts += ["", "## Targets", "", format_targets(checks)]
    if op_results:
        ceiling = op_results[0].copy_bytes_per_s / 1e9
        parts += ["", "## Ops at the largest size (median ms)", "", format_table(largest_size(op_results)), "",
                  f"% ceiling: GB/s over the copy bandwidth ({ceiling:.1f} GB/s); in cache: at most "
                  f"{_mib(env.get('cache_reach_bytes'))} MiB, within reach of the last-level cache "
                  f"({env.get('last_level_cache')}), so no % ceiling and no target; spread: slowest round over "
                  "fastest."]
    if model_results:
        parts += ["", "## Models (one training step)", "", format_model_table(model_results)]
    parts += _overhead_section(overhead_results)
    return "\n".join(parts) + "\n"


def results_stem(out_dir: Path, env: dict) -> Path:
    """`<out_dir>/<machine>-<date>`, the common stem of a run's .md, .json and .png files."""
    return Path(out_dir) / f"{env['machine']}-{env['date'][:10]}"


def write_json(path: Path, env: dict, copy_bytes_per_s, op_results, model_results, checks, command: str = "",
               overhead_results: Sequence[OverheadResult] = ()) -> None:  # fmt: skip
    record = {
        "environment": env,
        "command": command,
        "copy_bytes_per_s": copy_bytes_per_s,
        "targets": [dict(vars(c), met=c.met) for c in checks],
        "ops": [r.to_dict() for r in op_results],
        "models": [r.to_dict() for r in model_results],
        "overhead": [r.to_dict() for r in overhead_results],
    }
    Path(path).write_text(json.dumps(record, indent=1) + "\n")


def plot_bandwidth(results: Sequence[OpResult], copy_bytes_per_s: float, path: Path, dtype: str) -> Optional[Path]:
    """Write the plot of `dtype`'s results to `path` (PNG); None when matplotlib is missing or nothing ran."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [r for r in results if r.case.dtype == dtype and r.seconds]
    panels = sorted({(r.case.op, r.case.direction, r.case.mask) for r in rows})
    if not panels:
        return None
    columns = min(3, len(panels))
    lines = -(-len(panels) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(5 * columns, 3.6 * lines), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for provider in PROVIDERS:
            points = sorted((r.case.numel, r.gbps, r.in_cache) for r in rows if r.provider == provider
                            and (r.case.op, r.case.direction, r.case.mask) == panel)  # fmt: skip
            if points:
                sizes, speeds, _ = zip(*points)
                (line,) = ax.plot(sizes, speeds, marker="o", label=provider)
                hollow = [(size, speed) for size, speed, cached in points if cached]
                if hollow:
                    ax.plot(*zip(*hollow), linestyle="none", marker="o", markerfacecolor="white",
                            markeredgecolor=line.get_color())  # fmt: skip
        ax.axhline(copy_bytes_per_s / 1e9, color="black", linestyle="--", label="copy bandwidth (ceiling)")
        ax.set_xscale("log", base=2)
        rates = [r.gbps for r in rows if (r.case.op, r.case.direction, r.case.mask) == panel]
        if max(rates) > 20 * min(rates):  # launch-bound small sizes next to bandwidth-bound large ones
            ax.set_yscale("log")
        ax.set_title(" ".join(panel) + f" ({dtype})", fontsize=10)
        ax.set_xlabel("elements of x")
        ax.set_ylabel("GB/s (SPEC byte count)")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if any(r.in_cache for r in rows):  # the legend (first panel only) explains the hollow points
        axes.flat[0].plot([], [], linestyle="none", marker="o", markerfacecolor="white", markeredgecolor="black",
                          label="fits in cache")  # fmt: skip
    axes.flat[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def write_results(
    out_dir: Path,
    env: dict,
    op_results: Sequence[OpResult],
    model_results: Sequence[ModelResult],
    checks: Sequence[TargetCheck],
    command: str = "",
    plots: bool = True,
    overhead_results: Sequence[OverheadResult] = (),
) -> list[Path]:
    """Write `<machine>-<date>.md`, `.json`, `-summary.md` and (with `plots`) one `-<dtype>.png` per dtype under
    `out_dir`; return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = results_stem(out_dir, env)
    copy_rate = op_results[0].copy_bytes_per_s if op_results else None
    markdown, record = stem.with_suffix(".md"), stem.with_suffix(".json")
    markdown.write_text(format_report(env, copy_rate, op_results, model_results, checks, command, overhead_results))
    write_json(record, env, copy_rate, op_results, model_results, checks, command, overhead_results)
    summary = stem.with_name(stem.name + "-summary.md")
    summary.write_text(format_summary(env, op_results, model_results, checks, overhead_results))
    written = [markdown, record, summary]
    for dtype in dict.fromkeys(r.case.dtype for r in op_results) if plots else ():
        png = plot_bandwidth(op_results, copy_rate, stem.with_name(f"{stem.name}-{dtype}.png"), dtype)
        if png:
            written.append(png)
    return written
