"""The nf-kernels command line, in process through main(argv): smoke runs, resume, and bad-argument messages."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from nf_kernels.cli import main
from nf_kernels.cli.errors import UsageError
from nf_kernels.cli.run_directory import RunInUse
from nf_kernels.cli.settings import SETTINGS, default_settings, train_config
from nf_kernels.data import DataError
from nf_kernels.errors import UserError
from nf_kernels.flows import build_model
from nf_kernels.training import (
    CheckpointError, MetricsError, TrainConfig, TrainConfigError, TrainingDiverged, load_checkpoint, save_atomically,
)  # fmt: skip
from nf_kernels.training.baselines import BaselineUnavailable
from nf_kernels.training.distributed import DeviceUnavailable
from nf_kernels.training.model_spec import ModelError
from nf_kernels.training.plots import PlottingUnavailable
from test_training import crash_at_step, full_disk_at_fsync, trajectory

TINY_MOONS = ["--data", "moons", "--hidden", "8", "--num-layers", "2", "--batch-size", "32"]
TINY_DIGITS = ["--data", "digits", "--num-scales", "1", "--num-steps", "1", "--hidden", "8", "--depth", "1",
               "--batch-size", "16"]  # fmt: skip
TINY_NSF_MOONS = ["--data", "moons", "--hidden", "8", "--num-steps", "2", "--bins", "4", "--batch-size", "32"]
QUIET = ["--no-progress", "--plot-samples", "4", "--log-every", "1"]


def cli(capsys, *argv):
    """(exit status, stdout, stderr) of `nf-kernels argv`."""
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("data, model", [(TINY_MOONS, "realnvp"), (TINY_DIGITS, "realnvp"), (TINY_DIGITS, "glow"),
                                         (TINY_NSF_MOONS, "nsf"), (TINY_NSF_MOONS + ["--recompute-conditioner"], "nsf")])
def test_train_eval_sample(tmp_path, capsys, data, model):
    run = tmp_path / "run"
    status, out, err = cli(capsys, "train", *data, "--model", model, "--steps", 5, "--out", run, *QUIET)
    assert status == 0, err
    image = "--data" in data and data[1] == "digits"
    plot = run / ("samples.png" if image else "density.png")
    for path in (run / "checkpoint.pt", run / "metrics.jsonl", run / "curves.png", plot):
        assert path.is_file() and str(path) in out  # it says where every output went
    metric = "bits_per_dim" if image else "nll"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["split"] == "train"] == [1, 2, 3, 4, 5] and metric in lines[-1]

    status, out, err = cli(capsys, "eval", run, "--json")
    assert status == 0, err
    assert json.loads(out)[metric] == pytest.approx(lines[-1][metric], rel=1e-5)  # the same fixed test noise

    status, out, err = cli(capsys, "sample", run, "-n", 6, "--out", tmp_path / "s.npy")
    assert status == 0, err
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == ((6, 1, 8, 8) if image else (6, 2))
    if image:
        assert samples.dtype == np.uint8 and samples.max() <= 16
    assert cli(capsys, "sample", run, "-n", 4, "--out", tmp_path / "s.png")[0] == 0
    assert (tmp_path / "s.png").is_file()


def test_resumed_cli_run_continues_the_same_trajectory_bitwise(tmp_path, capsys, monkeypatch):
    argv = ["train", *TINY_DIGITS, "--steps", 6, "--checkpoint-every", 3, *QUIET]
    assert cli(capsys, *argv, "--out", tmp_path / "whole")[0] == 0
    crash_at_step(monkeypatch, 5)
    status, _, err = cli(capsys, *argv, "--out", tmp_path / "split")
    assert status == 130 and "interrupted" in err
    monkeypatch.undo()
    assert cli(capsys, "train", "--out", tmp_path / "split", "--resume", "--no-progress")[0] == 0
    assert trajectory(tmp_path / "whole") == trajectory(tmp_path / "split")
    whole, split = (load_checkpoint(tmp_path / r / "checkpoint.pt")["model"] for r in ("whole", "split"))
    assert all(torch.equal(whole[k], split[k]) for k in whole)


def test_a_compiled_run_writes_the_checkpoint_an_eager_model_loads(tmp_path, capsys, aot_eager_graphs):
    """--compile trains the compiled flow (aot_eager here: Inductor's code generation is slow on a small CPU);
    its checkpoint holds the plain state_dict keys, which eval and sample load into a model built without it."""
    from nf_kernels.flows import Flow

    run = tmp_path / "run"
    assert cli(capsys, "train", *TINY_MOONS, "--compile", "--steps", 2, "--out", run, *QUIET)[0] == 0
    assert aot_eager_graphs  # the flow ran compiled
    saved = load_checkpoint(run / "checkpoint.pt")
    assert saved["cli"]["compile"] is True
    eager = build_model("realnvp", (2,), hidden=8, num_layers=2)
    assert isinstance(eager, Flow) and list(saved["model"]) == list(eager.state_dict())
    assert cli(capsys, "eval", run, "--json")[0] == 0
    assert cli(capsys, "sample", run, "-n", 3, "--out", tmp_path / "s.npy")[0] == 0


def test_class_conditional_digits(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(capsys, "train", *TINY_DIGITS, "--conditional", "--steps", 2, "--out", run, *QUIET)[0] == 0
    assert cli(capsys, "sample", run, "-n", 3, "--label", 7, "--out", tmp_path / "sevens.pt")[0] == 0
    assert torch.load(tmp_path / "sevens.pt").shape == (3, 1, 8, 8)
    status, _, err = cli(capsys, "sample", run, "--label", 10)
    assert status == 1 and "--label must be in [0, 10)" in err


@pytest.mark.parametrize("command", ["", "train", "eval", "sample", "bench", "demo"])
def test_help(capsys, command):
    status, out, _ = cli(capsys, *([command] if command else []), "--help")
    assert status == 0 and out.startswith("usage: nf-kernels") and "example" in out


def one_line_error(capsys, *argv, status=None):
    code, out, err = cli(capsys, *argv)
    assert code != 0 and (status is None or code == status)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--batch-size", "-3"], "--batch-size: expected a positive integer, got -3"),
        (["train", "--model", "maf"], "invalid choice: 'maf'"),
        (["train", "--steps", "3", "--epochs", "2"], "not allowed with argument"),
        (["train", "--memory-saving", "--compile"], "--compile: not allowed with argument --memory-saving"),
        (["train", "--memory-saving", "--recompute-conditioner"],
         "--recompute-conditioner: not allowed with argument --memory-saving"),
        (["train", "--lr", "zero"], "--lr: expected a positive number, got 'zero'"),
        (["train", "--data", "no/such/file.npy"], "no such data file or folder: no/such/file.npy"),
        (["train", "--data", "mnist"], "unknown data set 'mnist'"),
        (["train", "--data", "moons", "--conditional"], "--conditional needs labelled data"),
        (["train", "--data", "moons", "--levels", "4", "--steps", "1"], "--levels applies to integer data files"),
        (["train", "--data", "moons", "--model", "glow", "--num-layers", "4", "--steps", "1"],
         "--num-layers: not a size of glow on vectors (moons); its sizes are --hidden, --depth, --num-steps"),
        (["train", "--data", "digits", "--num-layers", "4", "--steps", "1"],
         "--num-layers: not a size of realnvp on images"),
        (["eval", "nowhere/checkpoint.pt"], "no checkpoint at nowhere/checkpoint.pt"),
        (["sample", "nowhere", "--out", "x.gif"], "--out must end in .png, .npy, .pt"),
        (["bench", "--preset", "huge"], "unknown preset 'huge'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_arguments_give_one_clear_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert message in one_line_error(capsys, *argv)


def test_checkpoint_mismatches(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(capsys, "train", *TINY_MOONS, "--steps", 2, "--out", run, *QUIET, "--plot-samples", 0)[0] == 0
    assert "already holds a run" in one_line_error(capsys, "train", *TINY_MOONS, "--out", run)
    assert "from a different run: --model glow (the run has realnvp)" in one_line_error(
        capsys, "train", "--out", run, "--resume", "--model", "glow")  # fmt: skip
    assert "nothing to resume" in one_line_error(capsys, "train", "--out", tmp_path / "empty", "--resume")
    torch.save({"weights": torch.ones(2)}, tmp_path / "foreign.pt")
    assert "not an nf_kernels checkpoint" in one_line_error(capsys, "eval", tmp_path / "foreign.pt")
    payload = load_checkpoint(run / "checkpoint.pt")
    payload["model_spec"]["sizes"]["hidden"] = 16  # a checkpoint whose weights do not fit the model it names
    save_atomically(payload, tmp_path / "edited.pt")
    assert "does not fit realnvp on (2,)" in one_line_error(capsys, "eval", tmp_path / "edited.pt")


def test_a_damaged_checkpoint_stops_eval_and_resume(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", *TINY_MOONS, "--hidden", 64, "--steps", 2, "--out", run, *QUIET, "--plot-samples", 0]
    assert cli(capsys, *argv)[0] == 0
    path = run / "checkpoint.pt"
    weights = max(load_checkpoint(path)["model"].values(), key=torch.Tensor.numel)  # 64 x 64 floats: 16 KiB
    content = path.read_bytes()
    start = content.index(weights.numpy().tobytes()) + 4096
    path.write_bytes(content[:start] + bytes(4096) + content[start + 4096 :])  # as a bad disk block would
    for command in (["eval", run], ["sample", run, "--out", tmp_path / "s.npy"], ["train", "--out", run, "--resume"]):
        assert f"{path} is damaged" in one_line_error(capsys, *command, status=1)
    assert not (tmp_path / "s.npy").exists() and len((run / "metrics.jsonl").read_text().splitlines()) == 3


def test_resuming_a_complete_run_has_nothing_to_do(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(capsys, "train", *TINY_MOONS, "--steps", 3, "--out", run, *QUIET, "--plot-samples", 0)[0] == 0
    before = (run / "metrics.jsonl").read_text()
    status, out, err = cli(capsys, "train", "--out", run, "--resume")
    assert status == 0 and "nothing to do: the run in" in out and "complete (3 of 3 steps)" in out, out + err
    assert "nan" not in out and (run / "metrics.jsonl").read_text() == before
    assert cli(capsys, "train", "--out", run, "--resume", "--steps", 3)[0] == 0
    assert "--steps 2 is fewer than the 3 steps the run" in one_line_error(
        capsys, "train", "--out", run, "--resume", "--steps", 2, status=1)  # fmt: skip


def test_a_warm_up_longer_than_the_run_is_warned_about(tmp_path, capsys):
    argv = ["train", *TINY_MOONS, "--steps", 3, *QUIET, "--plot-samples", 0]
    status, _, err = cli(capsys, *argv, "--out", tmp_path / "a", "--warmup", 5)
    assert status == 0 and "warning: the warm-up (--warmup 5) lasts the whole run (3 steps)" in err
    status, _, err = cli(capsys, *argv, "--out", tmp_path / "b", "--warmup", 2)
    assert status == 0 and "warning" not in err


def test_a_full_disk_names_the_file_it_could_not_write(tmp_path, capsys, monkeypatch):
    full_disk_at_fsync(monkeypatch)
    run = tmp_path / "run"
    err = one_line_error(capsys, "train", *TINY_MOONS, "--steps", 1, "--warmup", 0, "--out", run, *QUIET, status=1)
    assert "No space left on device" in err and str(run) in err


def test_sample_help_shows_the_seed_default(capsys):
    status, out, _ = cli(capsys, "sample", "--help")
    assert status == 0 and "sampling seed [0]" in " ".join(out.split())


def test_demo_runs_end_to_end(tmp_path, capsys):
    status, out, err = cli(capsys, "demo", "--out", tmp_path / "demo", "--steps", 2, "--no-bench", "--no-progress")
    assert status == 0, err
    assert "digits test bits/dim: RealNVP" in out and (tmp_path / "demo" / "samples.png").is_file()


def test_python_dash_m_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "nf_kernels", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("nf-kernels ")


BLOCK_OPTIONAL = "import sys; sys.modules.update(tqdm=None, matplotlib=None, sklearn=None); "  # import -> ImportError


def test_cli_without_tqdm_matplotlib_or_sklearn(tmp_path):
    """They are optional at run time (a bare GPU machine may lack them): no traceback, plots are skipped."""

    def run(*argv):
        code = BLOCK_OPTIONAL + f"from nf_kernels.cli import main; sys.exit(main({[str(a) for a in argv]!r}))"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)

    done = run("train", *TINY_MOONS, "--steps", 2, "--out", tmp_path / "moons", *QUIET[:1], "--log-every", 1)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert (tmp_path / "moons" / "checkpoint.pt").is_file() and "matplotlib" in done.stdout + done.stderr
    for argv in (["train", *TINY_DIGITS, "--steps", 1, "--out", tmp_path / "digits", "--no-progress"],
                 ["eval", tmp_path / "moons", "--baseline"],
                 ["sample", tmp_path / "moons", "--out", tmp_path / "s.png"]):  # fmt: skip
        done = run(*argv)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert "scikit-learn" in done.stderr or "matplotlib" in done.stderr, done.stderr
    assert run("sample", tmp_path / "moons", "--out", tmp_path / "s.npy").returncode == 0


def test_float64_two_dimensional_run_plots_its_density(tmp_path, capsys):
    run = tmp_path / "run"
    status, _, err = cli(capsys, "train", *TINY_MOONS, "--steps", 2, "--dtype", "fp64", "--out", run, *QUIET)
    assert status == 0, err
    assert (run / "density.png").is_file()
    assert cli(capsys, "sample", run, "-n", 4, "--out", tmp_path / "s.png")[0] == 0


USER_ERRORS = [
    (DataError, ValueError), (CheckpointError, ValueError), (MetricsError, ValueError), (ModelError, ValueError),
    (TrainConfigError, ValueError), (UsageError, ValueError), (TrainingDiverged, RuntimeError),
    (RunInUse, RuntimeError), (DeviceUnavailable, RuntimeError), (PlottingUnavailable, RuntimeError),
    (BaselineUnavailable, RuntimeError),
]  # fmt: skip


@pytest.mark.parametrize("error, builtin", USER_ERRORS, ids=[e.__name__ for e, _ in USER_ERRORS])
def test_user_facing_errors_are_user_errors_and_keep_their_builtin(error, builtin):
    assert issubclass(error, UserError) and issubclass(error, builtin)


def run_cli(code):
    """(exit status, stderr) of `python -c code`, where code ends by running the CLI."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    return done.returncode, done.stderr


def test_a_user_error_is_one_line_and_a_bug_keeps_its_traceback(tmp_path):
    train = f"from nf_kernels.cli import main; sys.exit(main(['train', '--steps', '1', '--out', {str(tmp_path)!r}"
    status, err = run_cli(f"import sys; {train}, '--device', 'gpu']))")
    assert status == 1 and err == "nf-kernels train: error: --device 'gpu' is not a device: use 'auto', 'cpu', " \
                                  "'cuda' or 'cuda:N'\n"  # fmt: skip
    bug = ("import sys, nf_kernels.data.registry as registry\n"
           "def broken(*args, **kwargs): raise ValueError('a bug inside nf_kernels')\n"
           "registry.make_toy = broken\n")  # fmt: skip
    status, err = run_cli(f"{bug}{train}]))")
    assert status == 1 and "Traceback (most recent call last)" in err and "in load_dataset" in err
    assert err.rstrip().splitlines()[-1] == "ValueError: a bug inside nf_kernels" and "error:" not in err


def test_every_train_config_field_is_a_train_option_with_the_same_default():
    """TrainConfig is where a training option's default lives; the CLI's --steps default is its own."""
    fields = {option.config_field for option in SETTINGS if option.config_field}
    assert fields == {f.name for f in dataclasses.fields(TrainConfig)} - {"eval_batch_size", "progress"}
    assert train_config(default_settings(steps=7), progress=False) == TrainConfig(steps=7, progress=False)


def test_resume_keeps_the_saved_settings_unless_given_even_at_their_default(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", *TINY_MOONS, "--out", run, "--no-progress", "--plot-samples", 0, "--warmup", 0]
    assert cli(capsys, *argv, "--steps", 2, "--log-every", 2, "--lr", 5e-3)[0] == 0
    assert cli(capsys, "train", "--out", run, "--resume", "--steps", 3, "--lr", 1e-3)[0] == 0  # 1e-3: the default
    settings = load_checkpoint(run / "checkpoint.pt")["cli"]
    assert settings["lr"] == 1e-3 and settings["log_every"] == 2 and settings["steps"] == 3


def test_train_help_shows_the_declared_defaults(capsys):
    status, out, _ = cli(capsys, "train", "--help")
    text = " ".join(out.split())
    assert status == 0 and "peak learning rate (Adam) [0.001]" in text and "optimizer steps [2000]" in text
    assert "linear warm-up steps [100]" in text and "[None]" not in text and "NotGiven" not in text
