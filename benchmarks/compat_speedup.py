"""The training step of each peer library's own RealNVP, before and after nf_kernels.compat.accelerate.

For every library (normflows, nflows, zuko, FrEIA, pyro) and size D: a RealNVP written in that library's API (8
affine couplings on alternating halves, MLP conditioners of 2 hidden layers, a standard normal base), batch 256,
one Adam step on the mean negative log-likelihood. Two copies with the same weights, one of them accelerated, are
timed round-robin (one step of each in turn, after a warm-up), on one thread; the table gives each one's median step
time, the speed-up (before / after) and the backend "auto" chose for the accelerated couplings.

    python benchmarks/compat_speedup.py                       # every library, D = 2, 64, 4096
    python benchmarks/compat_speedup.py --libraries nflows --sizes 64 --rounds 5

Issue 13's goal: >= 1.3x at D=4096, never slower at D=64 and D=2, on the CPU. docs/compat.md has the last results.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from typing import Callable

import torch

import nf_kernels.compat
from nf_kernels import _dispatch

LIBRARIES = ("normflows", "nflows", "zuko", "FrEIA", "pyro")
COUPLINGS = 8


def hidden_width(features: int) -> int:
    """The conditioners' width: 128, or 64 at D=4096 (issue 12's model sizes)."""
    return 64 if features >= 4096 else 128


def normflows_model(features: int, hidden: int):
    import normflows as nf

    flows = []
    for _ in range(COUPLINGS):
        param_map = nf.nets.MLP([features - features // 2, hidden, hidden, 2 * (features // 2)], init_zeros=True)
        flows += [nf.flows.AffineCouplingBlock(param_map), nf.flows.Permute(features, mode="swap")]
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(features), flows)
    return model, lambda m, x: -m.log_prob(x).mean()


def mlp(features_in: int, features_out: int, hidden: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(features_in, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                               torch.nn.ReLU(), torch.nn.Linear(hidden, features_out))  # fmt: skip


class TransformNet(torch.nn.Module):
    """An MLP as nflows calls a transform net, net(x, context) (nflows' own MLP takes no context)."""

    def __init__(self, features_in: int, features_out: int, hidden: int):
        super().__init__()
        self.mlp = mlp(features_in, features_out, hidden)

    def forward(self, x, context=None):
        return self.mlp(x)


def nflows_model(features: int, hidden: int):
    from nflows import distributions, flows, transforms

    layers = []
    for i in range(COUPLINGS):
        mask = torch.tensor([1] * (features // 2) + [-1] * (features - features // 2))
        layers.append(transforms.AffineCouplingTransform(mask if i % 2 else -mask,
                                                         lambda i, o: TransformNet(i, o, hidden)))  # fmt: skip
    model = flows.Flow(transforms.CompositeTransform(layers), distributions.StandardNormal([features]))
    return model, lambda m, x: -m.log_prob(x).mean()


def zuko_model(features: int, hidden: int):
    import zuko

    halves = torch.arange(features) < features // 2
    layers = [zuko.flows.GeneralCouplingTransform(features, mask=halves if i % 2 else ~halves,
                                                  hidden_features=(hidden, hidden)) for i in range(COUPLINGS)]  # fmt: skip
    base = zuko.flows.UnconditionalDistribution(zuko.distributions.DiagNormal, torch.zeros(features),
                                                torch.ones(features), buffer=True)  # fmt: skip
    model = zuko.flows.Flow(layers, base)
    return model, lambda m, x: -m().log_prob(x).mean()


def freia_model(features: int, hidden: int):
    import FrEIA.framework as Ff
    import FrEIA.modules as Fm

    model = Ff.SequenceINN(features)
    for _ in range(COUPLINGS // 2):  # a GLOWCouplingBlock is two couplings, each half given the other
        model.append(Fm.GLOWCouplingBlock, subnet_constructor=lambda i, o: mlp(i, o, hidden))

    def loss(m, x):
        z, log_jac_det = m(x)
        return (0.5 * z.square().sum(1) - log_jac_det).mean()

    return model, loss


def pyro_model(features: int, hidden: int):
    import pyro.distributions as dist
    from pyro.distributions import transforms as T

    class Flow(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.couplings = torch.nn.ModuleList(T.affine_coupling(features, hidden_dims=[hidden, hidden])
                                                 for _ in range(COUPLINGS))  # fmt: skip
            self.flip = T.Permute(torch.arange(features - 1, -1, -1))
            self.register_buffer("zero", torch.zeros(features))

        def log_prob(self, x):
            transforms = [t for coupling in self.couplings for t in (coupling, self.flip)]
            base = dist.Normal(self.zero, torch.ones_like(self.zero)).to_event(1)
            return dist.TransformedDistribution(base, transforms).log_prob(x)

    return Flow(), lambda m, x: -m.log_prob(x).mean()


BUILDERS: dict[str, Callable] = {"normflows": normflows_model, "nflows": nflows_model, "zuko": zuko_model,
                                 "FrEIA": freia_model, "pyro": pyro_model}  # fmt: skip


def training_step(model, loss_fn, optimizer, x):
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, x)
    loss.backward()
    optimizer.step()
    return loss


def measure(library: str, features: int, batch: int, rounds: int, warmup: int) -> dict:
    torch.manual_seed(0)
    model, loss_fn = BUILDERS[library](features, hidden_width(features))
    fused = copy.deepcopy(model)
    report = nf_kernels.compat.accelerate(fused)
    config = _first_call_config(fused, loss_fn, torch.randn(2, features))
    contenders = {}
    for name, m in (("before", model), ("after", fused)):
        contenders[name] = (m, torch.optim.Adam(m.parameters(), lr=1e-4))
    x = torch.randn(batch, features)
    times = {name: [] for name in contenders}
    for _ in range(warmup):
        for m, optimizer in contenders.values():
            training_step(m, loss_fn, optimizer, x)
    for _ in range(rounds):  # round-robin: one step of each in turn, so that drifts of the machine hit both
        for name, (m, optimizer) in contenders.items():
            start = time.perf_counter()
            training_step(m, loss_fn, optimizer, x)
            times[name].append(time.perf_counter() - start)
    before, after = statistics.median(times["before"]), statistics.median(times["after"])
    return dict(library=library, features=features, before_ms=1e3 * before, after_ms=1e3 * after,
                speedup=before / after, replaced=len(report.replaced), backend=config)  # fmt: skip


def _first_call_config(model, loss_fn, x) -> str:
    """The backends "auto" picked for the accelerated model's couplings (recorded from one small forward)."""
    chosen = set()
    original = _dispatch.resolve_backend

    def recording(requested, device, config=None):
        name = original(requested, device, config)
        chosen.add(name)
        return name

    import nf_kernels.functional as functional

    functional.resolve_backend = recording
    try:
        with torch.no_grad():
            loss_fn(model, x)
    finally:
        functional.resolve_backend = original
    return "+".join(sorted(chosen)) or "-"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--sizes", nargs="+", type=int, default=[2, 64, 4096])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=15, help="timed steps of each model (default 15)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, {args.rounds} rounds")
    print("| library | D | before (ms) | after (ms) | speed-up | layers replaced | backend (auto) |")
    print("|---|---|---|---|---|---|---|")
    for library in args.libraries:
        for features in args.sizes:
            try:
                row = measure(library, features, args.batch, args.rounds, args.warmup)
            except ImportError as error:
                print(f"| {library} | {features} | not installed: {error} | | | | |")
                continue
            print(f"| {library} | {features} | {row['before_ms']:.2f} | {row['after_ms']:.2f} | {row['speedup']:.2f}x "
                  f"| {row['replaced']} | {row['backend']} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
