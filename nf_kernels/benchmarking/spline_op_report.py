"""What a spline op benchmark run tells its reader: the markdown report (settings, the peers' agreement with
nf_kernels, issue 14's goals, one table row per case and implementation) and the JSON record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from .report import format_number, load_warning, markdown_table
from .spline_op_runner import FUSED, SplineOpResult
from .spline_peers import Agreement

GOAL_CASE = dict(direction="forward+backward", dtype="fp32", bins=8, elements=2**20)
GOALS = (("nflows", 5.0), ("nflows compile", 2.0))  # issue 14: the fused cpu forward+backward at least this much faster
SPREAD_LIMIT = 1.5


def _share(result: SplineOpResult) -> str:
    if result.seconds is None:
        return "-"
    share = f"{result.copy_fraction:.0%}"
    return f"{share} (in cache)" if result.in_cache else share


def _speedup(result: SplineOpResult) -> str:
    if result.implementation == FUSED:
        return "1"
    return format_number(result.fused_speedup, ".2f")


def format_table(results: Sequence[SplineOpResult]) -> str:
    """One row per case and implementation: ms, GB/s of the byte model, its share of the copy bandwidth, how many
    times faster the fused cpu op is, and the spread between rounds. A failed implementation shows its error.

    >>> from nf_kernels.benchmarking.spline_cases import SplineOpCase
    >>> case = SplineOpCase("forward", "fp32", 8, 2**20)
    >>> rows = [SplineOpResult(case, "cpu", 0.01, 10**8, 2e10, fused_speedup=1.0),
    ...         SplineOpResult(case, "nflows", 0.05, 10**8, 2e10, fused_speedup=5.0, round_seconds=(0.05, 0.06))]
    >>> print(format_table(rows).splitlines()[3])
    | 8 | fp32 | forward | nflows | 50 | 2 | 10% | 5.00 | 1.20x |
    """
    header = ["K", "dtype", "direction", "implementation", "ms", "GB/s", "% of copy", "cpu faster by", "spread"]
    rows = []
    for r in results:
        if r.seconds is None:
            rows.append([str(r.case.bins), r.case.dtype, r.case.direction, r.implementation,
                         f"failed: {r.error}", "-", "-", "-", "-"])  # fmt: skip
            continue
        spread = f"{r.spread:.2f}x" if r.spread is not None else "-"
        rows.append([str(r.case.bins), r.case.dtype, r.case.direction, r.implementation,
                     format_number(r.seconds * 1e3), format_number(r.gbps), _share(r), _speedup(r), spread])  # fmt: skip
    return markdown_table(header, rows)


def goal_lines(results: Sequence[SplineOpResult]) -> list[str]:
    """Issue 14's goals, judged on the run's 2^20-element, 8-bin, fp32 forward+backward (if it ran)."""
    at_goal = {r.implementation: r for r in results if all(getattr(r.case, k) == v for k, v in GOAL_CASE.items())}
    if FUSED not in at_goal:
        return ["- not in this run: the goals are judged at 2^20 elements, 8 bins, fp32, forward+backward"]
    lines = []
    for peer, goal in GOALS:
        r = at_goal.get(peer)
        if r is None or r.fused_speedup is None:
            lines.append(f"- fused cpu forward+backward over {peer}: not measured ({r.error if r else 'not run'})")
            continue
        verdict = "met" if r.fused_speedup >= goal else "not met"
        lines.append(f"- the fused cpu forward+backward is {r.fused_speedup:.2f}x as fast as {peer}; goal >= {goal:g}x: "
                     f"{verdict}")  # fmt: skip
    return lines


def warning_lines(env: dict, results: Sequence[SplineOpResult]) -> list[str]:
    warnings = []
    load = load_warning([env.get("load_average_1m"), env.get("load_average_1m_end")], env.get("cores"))
    if load:
        warnings.append(f"- {load}")
    noisy = [r for r in results if r.spread is not None and r.spread > SPREAD_LIMIT]
    if noisy:
        worst = max(noisy, key=lambda r: r.spread)
        warnings.append(f"- {len(noisy)} timings varied by more than {SPREAD_LIMIT}x between rounds (worst: "
                        f"{worst.case.label()} {worst.implementation}, {worst.spread:.2f}x)")  # fmt: skip
    return warnings


def graph_break_lines(graph_breaks: dict[str, int]) -> list[str]:
    """torch.compile's graph breaks of the run (dynamo's counter: reason -> count), the first line of each reason.

    >>> graph_break_lines({"Backend compiler exception\\n  Explanation: ...": 4})
    ['- 4 x Backend compiler exception']
    """
    if not graph_breaks:
        return ["- none"]
    return [f"- {count} x {(reason.strip().splitlines() or [''])[0]}" for reason, count in graph_breaks.items()]


def format_report(env: dict, settings: dict, results: Sequence[SplineOpResult], agreements: Sequence[Agreement],
                  command: str, graph_breaks: dict[str, int]) -> str:  # fmt: skip
    """The whole markdown report of a run."""
    copy = results[0].copy_bytes_per_s / 1e9 if results else None
    peers = ", ".join(f"{name} {version}" for name, version in env.get("peers", {}).items() if version)
    lines = [
        f"# Spline op benchmark: {env['device_name']}",
        "",
        f"- date: {env['date']}, commit `{env['commit']}` (on main `{env.get('base_commit')}`)",
        f"- torch {env['torch']}, Python {env['python']}; {peers}",
        f"- command: `{command}`",
        f"- {settings['elements']} transformed elements: x [{settings['batch']}, {2 * settings['features']}] with "
        f"the \"half\" mask ({settings['features']} transformed features a sample), params "
        f"[{settings['batch']}, {settings['features']} * (3K - 1)]; the spline on [-3, 3], minima 1e-3; "
        f"x and params standard normal",
        f"- {settings['threads']} thread(s); {settings['rounds']} rounds, round-robin after two warm-up calls each "
        f"(the first compiles); ms: the median round's time of one call; spread: slowest round over fastest",
        f"- torch.compile: dynamic=False, backend {settings['compile_backend']!r}, of nflows' and zuko's own "
        f"spline functions (graph breaks allowed)",
        f"- forward+backward: the loss sum(y) + sum(logdet), gradients of x and params",
        f"- copy bandwidth {format_number(copy)} GB/s (read + write of a large copy, the best of three, same "
        f"run); last-level cache {env['last_level_cache']}",
        f"- CPU allocator: freed memory kept in the process (nf_kernels.keep_freed_cpu_memory): "
        f"{settings['freed_memory_kept']}",
        f"- 1-minute load average {format_number(env.get('load_average_1m'))} at the start and "
        f"{format_number(env.get('load_average_1m_end'))} at the end on {env['cores']} cores",
        "",
        "GB/s: the byte model (nf_kernels/benchmarking/byte_model.py, SPEC section 1b): per transformed element "
        "`(2 + P)` itemsize bytes forward or inverse and `(3 + 2P)` more for the backward (`P = 3K - 1`), per kept "
        "element 2 and 3, plus a float per sample. nflows and zuko get the transformed half alone (its own tensor, "
        "and params as a [B, D, P] view), so their count leaves out the kept half: fewer bytes for the same "
        "ideal. % of copy: GB/s over the copy bandwidth (the share of the floor reached; \"in cache\" when the "
        "call's bytes fit in twice the last-level cache, where it says nothing about memory). cpu faster by: "
        "this row's time over the fused cpu op's.",
        "",
        "## Agreement with nf_kernels (float64, once per K)",
        "",
        *[f"- {a}" for a in agreements],
        "",
        "zuko's spline between the knots is the same as nflows' and nf_kernels', but it maps unconstrained "
        "parameters to knots its own way (soft-clamped, a plain softmax without minimal bins, exp of the "
        "derivatives), so its timed column computes a different spline of the same raw parameters with the same "
        "amount of work. Its inverse with a log-det runs the inverse and then the forward spline again.",
        "",
        "## Goals (issue 14)",
        "",
        *goal_lines(results),
        "",
    ]
    lines += ["## torch.compile graph breaks (all cases)", "", *graph_break_lines(graph_breaks), "",
              "A graph break leaves the code around it to eager PyTorch; the compiled pieces between still run "
              "compiled. nflows' spline indexes with boolean masks (data-dependent shapes), which inductor does "
              "not compile.", ""]  # fmt: skip
    warnings = warning_lines(env, results)
    if warnings:
        lines += ["## Warnings", "", *warnings, ""]
    lines += ["## Results", "", format_table(results), ""]
    failures = [f"- {r.case.label()} {r.implementation}: {r.error}" for r in results if r.error]
    if failures:
        lines += ["## Failures", "", "An implementation that refuses a case (a dtype, a compile) says why:", "",
                  *failures, ""]  # fmt: skip
    return "\n".join(lines)


def write_json(path: Path, env: dict, settings: dict, results: Sequence[SplineOpResult],
               agreements: Sequence[Agreement], command: str, graph_breaks: dict[str, int]) -> None:  # fmt: skip
    record = dict(environment=env, settings=settings, command=command, agreements=[vars(a) for a in agreements],
                  goals=goal_lines(results), graph_breaks=graph_breaks, results=[r.to_dict() for r in results])  # fmt: skip
    path.write_text(json.dumps(record, indent=1, default=str) + "\n")


def report_paths(stem: Path) -> dict[str, Path]:
    """`<stem>-spline-op.md` and `.json` (stem: report.results_stem, `<out>/<machine>-<date>`)."""
    return {"markdown": stem.with_name(stem.name + "-spline-op.md"), "json": stem.with_name(stem.name + "-spline-op.json")}

