"""The trainer and its parts, on a tiny stand-in density model (fast, and independent of nf_kernels.flows)."""

import copy
import errno
import hashlib
import math
import os
import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from nf_kernels.data import FlowDataset, load_dataset
from nf_kernels.progress import REDIRECTED_REDRAW_S, progress_bar
from nf_kernels.training import (
    BatchStream, CheckpointError, DistributedContext, MetricsError, MetricsLog, TrainConfig, Trainer,
    TrainingDiverged, load_checkpoint, save_atomically, warmup_cosine,
)  # fmt: skip
from nf_kernels.flows import build_model
from nf_kernels.training.checkpoint import FORMAT
from nf_kernels.training.optimizer import make_adam, takes_fused_adam
from nf_kernels.training.baselines import independent_pixels_bits_per_dim, kde_nll


class DiagonalGaussian(nn.Module):
    """log N(x; mean, exp(log_std)^2), summed over a sample: the smallest thing with log_prob and parameters."""

    def __init__(self, sample_shape):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(sample_shape))
        self.log_std = nn.Parameter(torch.zeros(sample_shape))

    def log_prob(self, x, context=None):
        z = (x - self.mean) * torch.exp(-self.log_std)
        return (-0.5 * z.square() - self.log_std - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


def small_digits():
    digits = load_dataset("digits")
    return FlowDataset("digits", digits.train[:96], digits.test[:32], digits.levels)


def train(data, out_dir, steps, resume=False, **options):
    torch.manual_seed(0)
    config = TrainConfig(**{"steps": steps, "batch_size": 16, "lr": 0.05, "warmup_steps": 2, "log_every": 1,
                            "eval_every": 0, "checkpoint_every": 3, "progress": False, **options})  # fmt: skip
    trainer = Trainer(DiagonalGaussian(data.sample_shape), data, config, out_dir=out_dir)
    return trainer, trainer.fit(resume=resume)


def test_schedule_warms_up_then_decays_to_the_floor():
    values = [warmup_cosine(s, warmup_steps=10, total_steps=100, final_ratio=0.1) for s in range(101)]
    assert values[0] == pytest.approx(0.1) and values[9] == 1.0
    assert all(a >= b for a, b in zip(values[9:], values[10:])) and values[100] == pytest.approx(0.1)


def test_training_lowers_the_loss_and_writes_its_outputs(tmp_path):
    _, result = train(small_digits(), tmp_path, steps=30)
    records = MetricsLog(tmp_path / "metrics.jsonl", enabled=False).records()
    train_losses = [r["bits_per_dim"] for r in records if r["split"] == "train"]
    assert len(train_losses) == 30 and train_losses[-1] < train_losses[0] - 0.3
    assert [r["step"] for r in records if r["split"] == "test"] == [30]
    assert result.metric == "bits_per_dim" and math.isfinite(result.test_metric) and result.steps_per_s > 0
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 30


def trajectory(run_dir):
    """Every logged number except timings, per step: bit for bit, since JSON floats round-trip exactly."""
    records = MetricsLog(run_dir / "metrics.jsonl", enabled=False).records()
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in records]


def crash_at_step(monkeypatch, crash_step):
    """Make the training step number `crash_step` (1-based) die like a killed process."""
    original, calls = Trainer._train_step, []

    def step(self, *args):
        calls.append(None)
        if len(calls) == crash_step:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(Trainer, "_train_step", step)


def test_resume_continues_the_same_trajectory_bitwise(tmp_path, monkeypatch):
    data = small_digits()
    whole, _ = train(data, tmp_path / "whole", steps=7)
    crash_at_step(monkeypatch, 5)  # after the checkpoint of step 3 and one more logged step
    with pytest.raises(KeyboardInterrupt):
        train(data, tmp_path / "split", steps=7)
    monkeypatch.undo()
    resumed, _ = train(data, tmp_path / "split", steps=7, resume=True)
    for a, b in zip(whole.flow.parameters(), resumed.flow.parameters()):
        assert torch.equal(a, b)
    assert trajectory(tmp_path / "whole") == trajectory(tmp_path / "split")


def test_the_trainer_steps_fused_adam_which_matches_default_adam(tmp_path):
    """The trainer's Adam is torch's fused kernel where torch has one (nf_kernels/training/optimizer.py), and fused
    steps update a flow's parameters as torch's default (one tensor at a time) does, weight decay included, to
    rounding: the fused kernel orders the update's arithmetic its own way."""
    trainer, _ = train(small_digits(), tmp_path, steps=2, weight_decay=0.01)
    assert trainer.optimizer.defaults["fused"] is True
    torch.manual_seed(1)
    for dtype in (torch.float32, torch.float64):
        model = build_model("realnvp", (6,), num_layers=2, hidden=8).to(dtype)
        twin, initial = copy.deepcopy(model), copy.deepcopy(model)
        fused, default = make_adam(model.parameters(), lr=0.01, weight_decay=0.1), torch.optim.Adam(
            twin.parameters(), lr=0.01, weight_decay=0.1)
        x = torch.randn(9, 6, dtype=dtype)
        for _ in range(4):
            for flow, optimizer in ((model, fused), (twin, default)):
                optimizer.zero_grad()
                (-flow.log_prob(x).mean()).backward()
                optimizer.step()
        assert fused.defaults["fused"] and not default.defaults["fused"]
        eps = torch.finfo(dtype).eps
        for a, b in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(a, b, rtol=16 * eps, atol=16 * eps * 0.01)  # lr 0.01: a step's size
        assert not any(torch.equal(a, b) for a, b in zip(model.parameters(), initial.parameters()))  # they moved
    # Without a fused kernel for the tensors (integers here), torch's default runs.
    assert not takes_fused_adam([torch.zeros(2, dtype=torch.int64)]) and not takes_fused_adam([])


def test_bf16_autocast_trains(tmp_path):
    _, result = train(small_digits(), tmp_path, steps=5, dtype="bf16")
    assert math.isfinite(result.train_loss)


def test_divergence_is_reported_with_advice(tmp_path):
    data = FlowDataset("bad", torch.full((32, 2), float("nan")), torch.zeros(4, 2))
    with pytest.raises(TrainingDiverged, match="lower --lr"):
        train(data, tmp_path, steps=3)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="batch_size must be positive.*lr must be positive"):
        TrainConfig(batch_size=0, lr=-1)
    with pytest.raises(ValueError, match="dtype must be one of fp32, bf16"):
        TrainConfig(dtype="fp16")


def test_ranks_split_each_global_batch_and_its_noise_exactly():
    """Two ranks' batches interleave into the single-process batch: the basis of DDP == one process."""
    data = small_digits()
    alone = BatchStream(data, batch_size=16, seed=5, context=DistributedContext())
    ranks = [BatchStream(data, batch_size=16, seed=5, context=DistributedContext(rank=r, world_size=2)) for r in (0, 1)]
    for step in (0, 1, 7, 13):  # 13 is in the third epoch of 6 steps
        together = torch.stack([ranks[0].batch(step)[0], ranks[1].batch(step)[0]], dim=1).flatten(0, 1)
        assert torch.equal(together, alone.batch(step)[0])
    assert not torch.equal(alone.batch(0)[0], alone.batch(6)[0])  # a new epoch reshuffles


def test_batch_stream_errors():
    data = small_digits()
    with pytest.raises(ValueError, match="divisible by the 3 processes"):
        BatchStream(data, batch_size=16, seed=0, context=DistributedContext(world_size=3))
    with pytest.raises(ValueError, match="larger than the 96 training samples"):
        BatchStream(data, batch_size=128, seed=0, context=DistributedContext())


def full_disk_at_fsync(monkeypatch):
    """The next fsync fails as on a full disk, after the data went into the file: an ENOSPC with no file name."""

    def fsync(handle):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_atomically({"step": 1, "weights": torch.ones(3)}, path)
    full_disk_at_fsync(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        save_atomically({"step": 2, "weights": torch.zeros(3)}, path)
    monkeypatch.undo()
    saved = load_checkpoint(path)
    assert saved["step"] == 1 and torch.equal(saved["weights"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind


def test_a_full_disk_error_names_the_file(tmp_path, monkeypatch):
    full_disk_at_fsync(monkeypatch)
    with pytest.raises(OSError, match=re.escape(f"No space left on device: '{tmp_path / 'checkpoint.pt'}'")):
        save_atomically({"step": 2}, tmp_path / "checkpoint.pt")
    monkeypatch.undo()
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full to fill")
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.path = Path("/dev/full")  # every write to it fails with ENOSPC, as on a full disk
    with pytest.raises(OSError, match="No space left on device: '/dev/full'"):
        log.write({"step": 1})


def test_checkpoints_honour_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        save_atomically({"step": 1}, tmp_path / "checkpoint.pt")
        (tmp_path / "other").write_text("any other output")
    finally:
        os.umask(previous)
    assert (tmp_path / "checkpoint.pt").stat().st_mode & 0o777 == 0o640 == (tmp_path / "other").stat().st_mode & 0o777


def test_a_damaged_checkpoint_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_atomically({"step": 1, "weights": torch.arange(4096.0)}, path)  # 16 KiB of tensor data
    whole = path.read_bytes()
    start = whole.index(torch.arange(4096.0)[1024:].numpy().tobytes()[:64])  # inside the tensor's bytes
    path.write_bytes(whole[:start] + bytes(4096) + whole[start + 4096 :])
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))} is damaged: its contents changed"):
        load_checkpoint(path)
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match="is damaged: .*truncated"):
        load_checkpoint(path)


def test_unreadable_checkpoints_are_reported(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not an nf_kernels checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    body = b"not a torch file"  # intact, but not something torch.load reads
    header = f"{FORMAT} sha256={hashlib.sha256(body).hexdigest()} bytes={len(body)}\n".encode()
    (tmp_path / "odd.pt").write_bytes(header + body)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "odd.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an nf_kernels checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


def test_metrics_log_drops_lines_past_the_resumed_step(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl")
    for step in (1, 2, 3):
        log.write({"step": step, "loss": 0.1 * step})
    assert [r["step"] for r in MetricsLog(tmp_path / "m.jsonl", resume_step=2).records()] == [1, 2]
    assert MetricsLog(tmp_path / "m.jsonl").records() == []  # a fresh run starts a fresh file


def test_resume_drops_a_torn_last_metrics_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "split": "tr')  # a kill mid-write
    log = MetricsLog(path, resume_step=2)
    log.write({"step": 3, "loss": 0.3})
    assert [r["step"] for r in log.records()] == [1, 2, 3] and path.read_text().endswith("}\n")


def test_a_corrupt_metrics_line_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, oops}\n{"step": 3}\n')
    with pytest.raises(MetricsError, match=f"^{re.escape(str(path))}, line 2: not a JSON record"):
        MetricsLog(path, resume_step=3)


def test_start_and_resume_remove_stale_partial_files(tmp_path):
    data = small_digits()

    def leave_partials():
        for name in (".checkpoint.pt.1a2b3c4d.partial", ".metrics.jsonl.5e6f7a8b.partial"):  # as a kill -9 leaves
            (tmp_path / name).write_bytes(b"half")

    leave_partials()
    train(data, tmp_path, steps=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "metrics.jsonl"]
    leave_partials()
    train(data, tmp_path, steps=3, resume=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "metrics.jsonl"]


def test_a_run_cannot_be_resumed_shorter_than_its_checkpoint(tmp_path):
    data = small_digits()
    train(data, tmp_path, steps=4)
    with pytest.raises(ValueError, match="is at step 4, past the 2 steps this run is set to"):
        train(data, tmp_path, steps=2, resume=True)


def test_baselines():
    assert 2.0 < independent_pixels_bits_per_dim(load_dataset("digits")) < math.log2(17)
    moons = load_dataset("moons")
    small = FlowDataset("moons", moons.train[:1000], moons.test[:300])
    result = kde_nll(small, bandwidths=(0.05, 0.2, 1.0))
    assert result.bandwidth == 0.2 and 1.5 < result.nll < 3.5


def test_progress_bar_disabled_or_without_tqdm_draws_nothing_but_still_writes(capsys, monkeypatch):
    def use(bar):
        bar.update(1)
        bar.set_postfix_str("nll=1.0", refresh=False)
        bar.write("step 3: test nll 1.0")
        bar.close()

    use(progress_bar(5, "train", enabled=False))
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # what a missing tqdm looks like to an import
    use(progress_bar(5, "train", initial=2))
    out, err = capsys.readouterr()
    assert out == "step 3: test nll 1.0\n" * 2 and err == ""


def test_progress_bar_redraws_rarely_when_stderr_is_not_a_terminal(capsys):
    pytest.importorskip("tqdm")
    bar = progress_bar(5, "train", unit="step")  # pytest's captured stderr is not a terminal
    try:
        assert bar.mininterval == REDIRECTED_REDRAW_S and bar.unit == "step"
    finally:
        bar.close()
