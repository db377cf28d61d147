"""DistributedDataParallel on the CPU: `nf-kernels train` under torchrun with 2 gloo processes, on one node and
on two node groups of one process each (`--nnodes 2`, rendezvous on localhost, as a cluster would run it).

After every step the parameters must be identical on both ranks, and equal (within 1e-5) to a single process
trained with the same global batch. This file is also the torchrun worker: run as a script, it trains and records.

The runs use Glow (so ActNorm's data-dependent initialization is covered) in float64: ActNorm starts at a
stationary point, where gradients are pure rounding noise, and Adam's first steps turn the sign of that noise into
updates of size lr. In float32 two different summation orders (2 ranks vs 1) then differ by ~lr, which is
rounding, not a bug; in float64 the comparison is exact enough to catch any real difference.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--data", "digits", "--model", "glow", "--num-scales", "1", "--num-steps", "2", "--hidden", "8",
         "--depth", "1", "--batch-size", "16", "--steps", "4", "--warmup", "0", "--log-every", "1", "--checkpoint-every", "2",
         "--plot-samples", "0", "--no-progress", "--backend", "reference", "--device", "cpu", "--dtype", "fp64"]  # fmt: skip


def record_parameters_after_each_step(on_step, patch=setattr):
    """Wrap Trainer._train_step so that `on_step(flat parameters)` runs after every optimizer step."""
    from nf_kernels.training import Trainer

    original = Trainer._train_step

    def step(self, *args):
        outcome = original(self, *args)
        on_step(torch.cat([p.detach().flatten() for p in self.flow.parameters()]))
        return outcome

    patch(Trainer, "_train_step", step)


def worker(out_dir: Path) -> None:
    """One torchrun process: train, checking after each step that every rank holds the same parameters."""
    import torch.distributed as dist

    from nf_kernels.cli import main

    history = []

    def check(flat):
        gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, flat)
        if not all(torch.equal(gathered[0], other) for other in gathered[1:]):
            raise AssertionError(f"ranks disagree after step {len(history) + 1}")
        history.append(flat)

    record_parameters_after_each_step(check)
    status = main([*TRAIN, "--out", str(out_dir / "ddp")])
    if status != 0:
        raise SystemExit(status)
    if int(os.environ["RANK"]) == 0:
        torch.save(torch.stack(history), out_dir / "ddp_parameters.pt")


def _torchrun_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _check_against_one_process(tmp_path, monkeypatch, stdout: str) -> None:
    """The distributed run in tmp_path/ddp against one process trained with the same global batch."""
    assert "world_size=2, device=cpu, backend=gloo" in stdout  # only rank 0 prints
    assert stdout.count("outputs:") == 1
    distributed = torch.load(tmp_path / "ddp_parameters.pt")
    assert (tmp_path / "ddp" / "checkpoint.pt").is_file()

    from nf_kernels.cli import main

    single = []
    record_parameters_after_each_step(single.append, monkeypatch.setattr)
    assert main([*TRAIN, "--out", str(tmp_path / "single")]) == 0
    single = torch.stack(single)
    assert distributed.shape == single.shape == (4, distributed.shape[1])
    for step, (a, b) in enumerate(zip(distributed, single), start=1):
        assert torch.allclose(a, b, rtol=0, atol=1e-5), f"step {step}: max difference {(a - b).abs().max():.3g}"
    assert not torch.allclose(single[0], single[-1])  # the parameters did move
    print(f"largest difference, DDP vs one process: {(distributed - single).abs().max():.3g}")


def test_two_gloo_processes_match_one_process(tmp_path, monkeypatch):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__, str(tmp_path)]
    done = subprocess.run(command, env=_torchrun_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _check_against_one_process(tmp_path, monkeypatch, done.stdout)


def test_two_node_groups_match_one_process(tmp_path, monkeypatch):
    """`torchrun --nnodes 2`: two launchers, one per node, meeting at a rendezvous on localhost (docs/cli.md)."""
    port = _free_port()
    nodes = []
    for node_rank in range(2):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={node_rank}",
                   "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}", __file__, str(tmp_path)]  # fmt: skip
        nodes.append(subprocess.Popen(command, env=_torchrun_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))  # fmt: skip
    outputs = []
    try:
        for node in nodes:
            outputs.append(node.communicate(timeout=240))
    finally:
        for node in nodes:
            node.kill()
    for node, (stdout, stderr) in zip(nodes, outputs):
        assert node.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert "world_size=2" not in outputs[1][0]  # the second node's process is rank 1: it prints nothing
    _check_against_one_process(tmp_path, monkeypatch, outputs[0][0])


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
