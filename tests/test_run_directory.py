"""One run per directory: the lock on --out, an --overwrite that never mixes two runs, and --out mistakes."""

import json
import os
import signal
import subprocess
import sys

import pytest

from nf_kernels.cli import run_directory
from nf_kernels.cli.run_directory import LOCK_NAME, RunInUse, claim_run_directory
from test_cli import QUIET, TINY_MOONS, cli, one_line_error
from test_training import crash_at_step

needs_flock = pytest.mark.skipif(sys.platform == "win32", reason="no flock on Windows: runs there are not locked")
TINY = ["train", *TINY_MOONS, *QUIET, "--plot-samples", 0, "--warmup", 0]

# Another training's side of the lock, without importing torch (fast): flock the lock file, write the pid, sleep.
HOLD_THE_LOCK = """
import fcntl, os, sys, time
handle = os.open(os.path.join(sys.argv[1], sys.argv[2]), os.O_RDWR | os.O_CREAT)
fcntl.flock(handle, fcntl.LOCK_EX)
os.write(handle, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
time.sleep(120)
"""


@needs_flock
def test_a_second_training_on_the_same_out_is_refused_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "run"
    with claim_run_directory(run):  # a training in progress, as far as the lock is concerned
        err = one_line_error(capsys, *TINY, "--steps", 2, "--out", run, status=1)
        assert f"{run} is in use by another training run (pid {os.getpid()})" in err
        assert "in use" in one_line_error(capsys, *TINY, "--steps", 2, "--out", run, "--overwrite", status=1)
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # nothing of either refused run was written
    assert cli(capsys, *TINY, "--steps", 2, "--out", run)[0] == 0


@needs_flock
def test_a_killed_run_releases_its_lock(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    command = [sys.executable, "-c", HOLD_THE_LOCK, str(run), LOCK_NAME]
    holder = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(RunInUse, match=f"pid {holder.pid}"):
            with claim_run_directory(run):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with claim_run_directory(run):  # the operating system dropped the dead process's lock
        assert (run / LOCK_NAME).read_text() == f"{os.getpid()}\n"


def test_an_interrupted_overwrite_leaves_only_the_new_run(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert cli(capsys, *TINY, "--steps", 4, "--out", run)[0] == 0
    crash_at_step(monkeypatch, 2)  # killed before the new run's first checkpoint (at step 3)
    assert cli(capsys, *TINY, "--steps", 6, "--checkpoint-every", 3, "--out", run, "--overwrite")[0] == 130
    monkeypatch.undo()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1] and not (run / "checkpoint.pt").exists()  # the new run's metrics, none of the old run
    assert "nothing to resume" in one_line_error(capsys, "train", "--out", run, "--resume")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the old run is gone, not parked beside it


def test_an_old_run_set_aside_is_restored_if_the_new_run_never_started(tmp_path, capsys, monkeypatch):
    """Killed between moving the old run aside and locking the fresh directory (or beaten to it by another run):
    --out is empty and the old run lies beside it. The next claim puts the old run back instead of deleting it."""
    run = tmp_path / "run"
    assert cli(capsys, *TINY, "--steps", 4, "--out", run)[0] == 0
    before = sorted(p.name for p in run.iterdir())
    monkeypatch.setattr(run_directory, "_lock", _fail_after(run_directory._lock, 1))
    with pytest.raises(KeyboardInterrupt):
        with run_directory.claim_run_directory(run, overwrite=True):
            pass
    monkeypatch.undo()
    assert [p.name for p in run.iterdir() if p.name != ".lock"] == []  # the kill window: --out empty
    with run_directory.claim_run_directory(run):
        pass
    assert sorted(p.name for p in run.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert "complete (4 of 4 steps)" in cli(capsys, "train", "--out", run, "--resume")[1]


def _fail_after(function, calls):
    """`function`, but raising KeyboardInterrupt (a kill) once it has been called `calls` times."""
    count = 0

    def wrapped(*args, **kwargs):
        nonlocal count
        count += 1
        if count > calls:
            raise KeyboardInterrupt
        return function(*args, **kwargs)

    return wrapped


def test_overwrite_replaces_a_run_and_never_deletes_other_files(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert cli(capsys, *TINY, "--steps", 2, "--out", run)[0] == 0
    assert cli(capsys, *TINY, "--steps", 3, "--out", run, "--overwrite")[0] == 0
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 3]
    (run / "notes.txt").write_text("mine")
    err = one_line_error(capsys, *TINY, "--steps", 2, "--out", run, "--overwrite", status=1)
    assert "--overwrite would delete" in err and "(notes.txt)" in err and (run / "notes.txt").is_file()
    (run / "notes.txt").unlink()
    monkeypatch.chdir(run)  # renaming the current directory away would strand the new run in the old one
    assert "it is (or holds) the current directory" in one_line_error(capsys, *TINY, "--out", ".", "--overwrite")


def test_out_naming_a_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    err = one_line_error(capsys, *TINY, "--steps", 1, "--out", tmp_path / "file", status=1)
    assert f"--out {tmp_path / 'file'} is a file; it must name a directory" in err


def test_a_refused_command_leaves_no_directory_behind(tmp_path, capsys):
    assert "nothing to resume" in one_line_error(capsys, "train", "--out", tmp_path / "typo", "--resume")
    assert not (tmp_path / "typo").exists()
