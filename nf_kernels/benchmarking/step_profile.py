"""Where one training step's time goes, per layer kind, measured with ``torch.profiler``.

A few steps of a model run under the profiler, each phase in a ``record_function`` range (``bench::forward``,
``bench::backward``, ``bench::optimizer``, all inside ``bench::step``). Every profiled event's *self* time (its
time minus its children's) is charged to one kind, so the kinds add up to the whole step: the kind of the event's
outermost op inside a phase range, found by :data:`OP_KINDS`, the one table from op names to kinds. The outermost
op decides because it says why the work happened: the ``aten::mul`` under ``nf_kernels::coupling`` is the coupling
op's, the one under ``Optimizer.step`` the optimizer's, an ``aten::transpose`` under ``aten::linear`` the linear
layer's. The ranges' own self time is Python running between ops (module calls, argument checks, the flow's
loop). In backward the outermost events are autograd's nodes, ``autograd::engine::evaluate_function: <Node>``,
named after the forward op they differentiate.

The profiler adds a few microseconds to every op, so the profiled step is slower than the timed one (the report
gives both); the shares are what to read. On a shared machine another process can only add time, so
:func:`profile_models` profiles several runs and keeps the fastest. On CUDA the device time of each kind is added (the kernels' time,
charged to the op that launched them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from .peer_models import RealNVPSpec, build, sample_batch
from .report import format_number, markdown_table
from .timing import synchronize

PHASES = ("forward", "backward", "optimizer")
PYTHON_KIND = "Python between ops (module calls, checks, the flow's loop)"
OTHER_KIND = "other"
# The kind of an op, by the name of its outermost event inside a phase: the first pattern that matches wins.
OP_KINDS: tuple[tuple[str, str], ...] = (
    # The custom op's names, then the eager path's (nf_kernels_ext::coupling, its C++ autograd node).
    ("coupling op, backward", r"nf_kernels(_ext)?::coupling_backward|GeneratedBackwardFor_nf_kernels_coupling|"
     r"CppNode<nf_kernels::.*Coupling>|^nf_kernels_ext::mlp_coupling_rebuilt_backward$"),
    ("coupling op, forward", r"nf_kernels(_ext)?::coupling|^nf_kernels_ext::mlp_coupling$"),
    ("optimizer (Adam step, zero_grad)", r"^Optimizer\."),
    # The MLP conditioner's fused node (nf_kernels_ext::mlp) holds its ReLUs too: they are charged here.
    ("conditioner linear layers", r"^aten::(linear|addmm|mm|matmul)$|\b(Addmm|Mm|T)Backward|^nf_kernels_ext::mlp$|"
     r"CppNode<nf_kernels::.*Mlp>"),
    ("activations (ReLU)", r"^aten::(relu|clamp_min|threshold)|\bReluBackward"),
    ("slices, cat, index, copies", r"^aten::(slice|cat|index|index_select|index_put_?|narrow|select|chunk|split|"
     r"split_with_sizes|copy_|clone|contiguous|gather|to|_to_copy|stack|flip)$|\b(Slice|Cat|Index|IndexPut|Split|"
     r"SplitWithSizes|Select|Clone|Copy|Gather|Stack|Unbind|ToCopy)\w*Backward|CopySlices"),
    ("views and reshapes", r"^aten::(view|reshape|expand|unsqueeze|squeeze|flatten|unflatten|permute|transpose|t|"
     r"as_strided|_unsafe_view|alias|detach)$|^detach$|\b(View|Reshape|Expand|Unsqueeze|Squeeze|Permute|Transpose|"
     r"UnsafeView|Alias)\w*Backward"),
    ("gradient accumulation (.grad)", r"AccumulateGrad"),
    # What is left of the flow's own arithmetic: the log-det sums, the base density, the loss, their backward.
    # (_SquaredNorm: the base density's |z|^2, a Python autograd function, flows/distributions.py.)
    ("elementwise glue: log-det sums, base density, loss", r"^aten::|Backward|^_SquaredNorm$"),
)
_COMPILED_KINDS = tuple((kind, re.compile(pattern)) for kind, pattern in OP_KINDS)
KINDS = tuple(kind for kind, _ in OP_KINDS) + (PYTHON_KIND, OTHER_KIND)


def op_kind(name: str) -> str:
    """The kind of an op called `name` (the outermost event of its work in a phase).

    >>> op_kind("aten::addmm"), op_kind("autograd::engine::evaluate_function: ReluBackward0")
    ('conditioner linear layers', 'activations (ReLU)')
    """
    return next((kind for kind, pattern in _COMPILED_KINDS if pattern.search(name)), OTHER_KIND)


@dataclass
class StepProfile:
    """Per kind and phase, the self time of one step in seconds (CPU; and device time on CUDA)."""

    label: str
    steps: int
    step_seconds: float  # the profiled step's wall time (profiler overhead included)
    cpu: dict = field(default_factory=dict)  # kind -> phase -> seconds per step
    device: dict = field(default_factory=dict)  # kind -> seconds per step (CUDA only)
    top_ops: list = field(default_factory=list)  # (name, seconds per step), the largest self times

    def kind_seconds(self, kind: str) -> float:
        return sum(self.cpu.get(kind, {}).values())

    def to_dict(self) -> dict:
        return {"label": self.label, "steps": self.steps, "step_seconds": self.step_seconds, "cpu": self.cpu,
                "device": self.device, "top_ops": self.top_ops}  # fmt: skip


# A coupling layer run as one node (nf_kernels_ext::mlp_coupling and its C++ autograd node, with the engine's event
# around it, or a rebuilt backward's step through it) holds two kinds of work: inside it the coupling kernels
# are charged to the coupling op, and the rest (the MLP's products, ReLUs and bias sums, the in-place sum of the kept
# features' gradient) to the conditioner, as the MLP's own node is. Its self time (C++ glue) goes to the coupling op.
_LAYER_NODE = re.compile(r"^nf_kernels_ext::mlp_coupling(_rebuilt_backward)?$|CppNode<nf_kernels::.*MlpCoupling>")
# The Python autograd nodes of memory-saving backprop and of a recomputed conditioner (flows/memory_saving.py): what
# runs inside them is charged by its own outermost op, their self time is the Python of their walk.
_PYTHON_NODE = re.compile(r"^_(InvertibleStack|ConditionerRecomputed)(Backward)?$")
_COUPLING_KINDS = ("coupling op, forward", "coupling op, backward")
_CONDITIONER_KIND = "conditioner linear layers"


def _phase_and_top(event) -> tuple[Optional[str], Optional[object], bool]:
    """The phase range `event` is in, its outermost event inside that range (None for the range itself) but below
    a coupling layer's one node, and whether it is inside such a node."""
    chain = []
    while event is not None and not event.name.startswith("bench::"):
        chain.append(event)
        event = event.cpu_parent
    phase = event.name.removeprefix("bench::") if event is not None else None
    top = chain[-1] if chain else None
    if phase not in PHASES and top is not None and top.name.startswith("autograd::engine"):
        phase = "backward"  # backward run by another thread (CUDA), outside the range
    # Below a Python node, the outermost event under the innermost such node decides; the node's own time is Python's.
    python_nodes = [i for i, e in enumerate(chain) if _PYTHON_NODE.search(e.name)]
    if python_nodes:
        chain = chain[: python_nodes[0]]
        if not chain:
            return phase, None, False
        top = chain[-1]
    nodes = [i for i, e in enumerate(chain) if _LAYER_NODE.search(e.name)]
    if nodes and nodes[0] > 0:  # below the node: the outermost event under its innermost event
        return phase, chain[nodes[0] - 1], True
    return phase, top, False


def _kind(top, inside_layer_node: bool) -> str:
    if top is None:
        return PYTHON_KIND
    kind = op_kind(top.name)
    return kind if not inside_layer_node or kind in _COUPLING_KINDS else _CONDITIONER_KIND


def _phased_step(model, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                 autocast: Optional[torch.dtype]) -> Callable[[], None]:  # fmt: skip
    def step():
        with record_function("bench::step"):
            with record_function("bench::forward"), torch.autocast(x.device.type, autocast, autocast is not None):
                optimizer.zero_grad(set_to_none=True)
                loss = -model.log_prob(x).mean()
            with record_function("bench::backward"):
                loss.backward()
            with record_function("bench::optimizer"):
                optimizer.step()

    return step


def profile_step(model, optimizer: torch.optim.Optimizer, x: torch.Tensor, label: str, steps: int = 3,
                 warmup: int = 2, top: int = 8, autocast: Optional[torch.dtype] = None) -> StepProfile:  # fmt: skip
    """Profile `steps` training steps of `model` on `x` (after `warmup` unprofiled ones; the forward under
    ``torch.autocast`` to `autocast` if given) and charge every event's self time to a kind (:func:`op_kind`) and a
    phase."""
    device = x.device
    step = _phased_step(model, optimizer, x, autocast)
    for _ in range(warmup):
        step()
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        synchronize(device)
    return _charge(prof.events(), label, steps, device, top)


def _charge(events, label: str, steps: int, device: torch.device, top: int) -> StepProfile:
    """Charge every event's self time to its kind and phase, per step."""
    result = StepProfile(label, steps, 0.0)
    self_times: dict = {}
    for event in events:
        seconds = event.self_cpu_time_total / 1e6 / steps
        if event.name == "bench::step":
            result.step_seconds += event.cpu_time_total / 1e6 / steps
        phase, top_event, inside_layer_node = _phase_and_top(event)
        kind = _kind(top_event, inside_layer_node)
        by_phase = result.cpu.setdefault(kind, {})
        by_phase[phase or "other"] = by_phase.get(phase or "other", 0.0) + seconds
        if device.type == "cuda":
            result.device[kind] = result.device.get(kind, 0.0) + event.self_device_time_total / 1e6 / steps
        self_times[event.name] = self_times.get(event.name, 0.0) + seconds
    result.top_ops = sorted(self_times.items(), key=lambda item: -item[1])[:top]
    return result


def _default_adam(parameters: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
    return torch.optim.Adam(parameters, lr=1e-3)


def profile_models(specs: Sequence[RealNVPSpec], device="cpu", *, library: str = "nf_kernels", batch: int = 256,
                   steps: int = 5, repeats: int = 3, autocast: Optional[torch.dtype] = None,
                   make_optimizer: Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer] = _default_adam,
                   ) -> list[StepProfile]:  # fmt: skip
    """:func:`profile_step` of `library`'s model (:mod:`.peer_models`) of each spec, on the benchmark's batch:
    `repeats` profiled runs of `steps` steps each, the one with the fastest step kept. The model steps with
    ``make_optimizer(parameters)`` (the training-step benchmark passes its ``OPTIMIZERS`` entry)."""
    device = torch.device(device)
    profiles = []
    for spec in specs:
        torch.manual_seed(0)
        model = build(library, spec).to(device)
        optimizer = make_optimizer(model.parameters())
        x = sample_batch(spec, batch, device)
        # Another process can only add time: of several profiled runs, the fastest is the least disturbed.
        runs = [profile_step(model, optimizer, x, spec.label, steps=steps, autocast=autocast) for _ in range(repeats)]
        profiles.append(min(runs, key=lambda run: run.step_seconds))
    return profiles


def format_profile(profile: StepProfile, timed_seconds: Optional[float] = None) -> str:
    """A markdown table of `profile`: per kind, ms per step in each phase, the total and its share of the step."""
    total = sum(profile.kind_seconds(kind) for kind in KINDS) or 1.0
    header = ["kind", *(f"{phase} ms" for phase in PHASES), "total ms", "% of step"]
    if profile.device:
        header.append("device ms")
    rows = []
    for kind in sorted(KINDS, key=lambda k: -profile.kind_seconds(k)):
        if kind not in profile.cpu:
            continue
        phases = profile.cpu[kind]
        row = [kind, *(format_number(phases[p] * 1e3 if p in phases else None) for p in PHASES),
               format_number(profile.kind_seconds(kind) * 1e3), f"{profile.kind_seconds(kind) / total:.1%}"]
        if profile.device:
            row.append(format_number(profile.device.get(kind, 0.0) * 1e3))
        rows.append(row)
    timed = f"; the same step timed without the profiler: {timed_seconds * 1e3:.3g} ms" if timed_seconds else ""
    lines = [f"Profiled step: {profile.step_seconds * 1e3:.3g} ms (mean of {profile.steps}, the least disturbed of "
             f"the profiled runs){timed}.", "",
             markdown_table(header, rows), "", "Largest self times (ms per step): " +
             ", ".join(f"`{name}` {seconds * 1e3:.3g}" for name, seconds in profile.top_ops) + "."]  # fmt: skip
    return "\n".join(lines)


def format_profiles(env: dict, profiles: Sequence[StepProfile], timed: dict, command: str = "") -> str:
    """The profile document: one section per size. `timed` maps a label to its unprofiled median step time."""
    parts = [
        f"# Where a training step's time goes: {env['device_name']}",
        "",
        f"- date: {env['date']}, commit `{env['commit']}` (on main `{env.get('base_commit') or 'unknown'}`), torch "
        f"{env['torch']}, {env['threads']} thread(s)",
        "- torch.profiler over a few steps of nf_kernels' model (backend 'auto'); each event's self time is "
        "charged to the kind of its outermost op inside the phase (nf_kernels/benchmarking/step_profile.py, "
        "OP_KINDS), so the kinds add up to the step",
    ]
    if command:
        parts.append(f"- command: `{command}`")
    for profile in profiles:
        parts += ["", f"## {profile.label}", "", format_profile(profile, timed.get(profile.label))]
    return "\n".join(parts) + "\n"
