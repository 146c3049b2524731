"""Run folders: created with the config, never overwriting trained epochs."""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from audiogate.config import RESUME_FIELDS, Config
from audiogate.core.runs import StatusFile, check_run_name, new_run
from audiogate.errors import ConfigError
from audiogate.gates.network.fit import resume_config


def test_named_run_is_reused_until_it_has_an_epoch(tmp_path: Path) -> None:
    config = Config(runs_dir=str(tmp_path), name="x", lr=0.01)
    run = new_run(config)
    assert Config.from_toml(run.config) == config
    assert new_run(config).root == run.root  # a failed start leaves nothing worth keeping
    run.last.write_bytes(b"trained")
    with pytest.raises(ConfigError, match="--resume"):
        new_run(config)
    assert run.last.read_bytes() == b"trained"


def test_unnamed_runs_get_distinct_folders(tmp_path: Path) -> None:
    config = Config(runs_dir=str(tmp_path))
    assert new_run(config).root != new_run(config).root


# ------------------------------------------------------------- what --resume may change
def test_resume_applies_only_the_fields_that_keep_the_run_the_same(tmp_path: Path) -> None:
    stored = Config(data=str(tmp_path.resolve()), n_mels=40, lr=0.01, max_epochs=3)
    assert resume_config(stored, {}) == stored
    changed = resume_config(stored, {"max_epochs": 9, "patience": 0, "workers": 1,
                                     "keep_epoch_checkpoints": False, "cache": False,
                                     "cache_dir": "elsewhere", "n_mels": None, "lr": None})
    assert (changed.max_epochs, changed.patience, changed.workers, changed.cache_dir) == (
        9, 0, 1, "elsewhere")
    assert changed.n_mels == 40 and changed.lr == 0.01
    # the run's own values may be repeated (a script that always passes them)
    assert resume_config(stored, {"n_mels": 40, "lr": 0.01, "data": str(tmp_path)}) == stored
    assert set(RESUME_FIELDS) == {"max_epochs", "patience", "workers",
                                  "keep_epoch_checkpoints", "cache", "cache_dir", "tensorboard",
                                  "report_errors", "device", "precision", "prefetch",
                                  "sync_batchnorm"}


@pytest.mark.parametrize(("changes", "flags"), [
    ({"n_mels": 64}, ["--n-mels 64 (the run has 40)"]),
    ({"lr": 0.5, "n_mels": 64}, ["--lr 0.5", "--n-mels 64"]),
    ({"seed": 3}, ["--seed 3"]),
    ({"batch_size": 8}, ["--batch-size"]),
    ({"weight_decay": 0.0}, ["--weight-decay"]),
    ({"augment": False}, ["--augment"]),
    ({"noise_p": 0.1}, ["--noise-p"]),
    ({"model": "simple", "dropout": 0.5}, ["--dropout"]),
    ({"test_size": 0.2}, ["--test-size"]),
    ({"balance": "none"}, ["--balance"]),
    ({"data": "/elsewhere"}, ["--data"]),
    ({"name": "other"}, ["--name"]),
])
def test_resume_refuses_fields_that_change_the_run(changes: dict[str, object],
                                                    flags: list[str]) -> None:
    """`train --resume RUN --n-mels 64 --lr 0.5` ignored both flags (issue 12, item 6)."""
    stored = Config(n_mels=40, lr=0.01)
    with pytest.raises(ConfigError, match="when resuming") as err:
        resume_config(stored, changes)
    for flag in flags:
        assert flag in str(err.value)
    assert "--max-epochs" in str(err.value)  # says what may change


def test_resume_validates_applied_values() -> None:
    with pytest.raises(ConfigError, match="'workers'"):
        resume_config(Config(), {"workers": -1})
    with pytest.raises(ConfigError, match="unknown"):
        resume_config(Config(), {"n_mel": 3})


# ------------------------------------------------------- one run per folder (issue 22, 6)
HOLDER = """
import sys
from audiogate.config import Config
from audiogate.core.runs import new_run
new_run(Config(runs_dir=sys.argv[1], name="x"))
print("locked", flush=True)
sys.stdin.read()  # hold the run folder until the test kills this process
"""


def test_a_run_folder_is_refused_while_its_run_lives_and_taken_over_once_it_died(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = Config(runs_dir=str(tmp_path), name="x")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        config_file = (tmp_path / "x" / "config.toml").read_bytes()
        for attempt in (check_run_name, new_run):  # refused before any work, and on making it
            with pytest.raises(ConfigError, match=rf"run folder {tmp_path / 'x'} is in use by "
                                                  rf"another run: pid {holder.pid} on host "):
                attempt(config)
        assert (tmp_path / "x" / "config.toml").read_bytes() == config_file
    finally:
        holder.kill()  # dies holding it: the kernel releases the lock, the file stays
        holder.wait()
    assert str(holder.pid) in (tmp_path / "x" / "run.lock").read_text()
    with caplog.at_level("WARNING", logger="audiogate.core.run_lock"):
        run = new_run(config)
    assert f"taking over the lock of pid {holder.pid} on host " in caplog.text
    status = StatusFile(run, run_id="abc")  # the same process: its own lock
    assert str(os.getpid()) in (tmp_path / "x" / "run.lock").read_text()
    status.ended(stop_reason="max_epochs", epochs_done=0)
    assert not (tmp_path / "x" / "run.lock").exists()


def test_two_trainings_with_one_name_at_once_refuse_the_second(tmp_path: Path) -> None:
    """Both exited 0 and shared one best.pt, one run silently lost (issue 22, item 6): a
    second `train --name same` started while the first trains (before its first epoch ends)
    is refused and touches nothing; so is a `--resume` of the run while it goes on."""
    from audiogate.gates import train
    from audiogate.models.checkpoint import load_checkpoint
    from audiogate.training import Callback

    from .conftest import TINY_FLAGS, make_toy_dataset

    data = make_toy_dataset(tmp_path / "data", n_per_class=12, seconds=0.4)
    run = tmp_path / "runs" / "same"
    cli = [sys.executable, "-m", "audiogate", "-q", "train"]
    again = [*cli, "--data", str(data), "--runs-dir", str(tmp_path / "runs"), "--name", "same",
             *TINY_FLAGS, "--max-epochs", "2"]

    def refused(argv: list[str]) -> str:
        """Run ``argv`` now, check it changed no file of the run; its stderr."""
        def files() -> dict[Path, bytes]:  # but the curves, which the live first run draws
            return {p: p.read_bytes() for p in run.rglob("*")  # in a thread of its own
                    if p.is_file() and p.name != "curves.png"}

        before = files()
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert files() == before
        assert result.returncode == 2, result.stderr
        return result.stderr

    class Intruders(Callback):
        def __init__(self) -> None:
            self.errors: list[str] = []

        def on_train_begin(self, trainer: object) -> None:  # folder made, no epoch yet
            self.errors.append(refused(again))

        def on_epoch_end(self, trainer: object, record: dict[str, object]) -> None:
            if record["epoch"] == 1:
                self.errors.append(refused([*cli, "--resume", str(run)]))

    intruders = Intruders()
    first = train(Config(data=str(data), runs_dir=str(tmp_path / "runs"), name="same",
                         max_epochs=2, fixed_length=32, batch_size=8, workers=1, n_fft=512,
                         patience=0), progress=False, callbacks=[intruders])
    in_use = (re.escape(f"audiogate: error: run folder {run} is in use by another run: pid "
                        f"{os.getpid()} on host {socket.gethostname()} (started ")
              + r"[-0-9T:+]+"
              + re.escape("); wait for it to end, or start a new run with another --name"))
    assert len(intruders.errors) == 2
    for err in intruders.errors:
        assert re.fullmatch(in_use, err.strip()), err
    assert first.epochs_done == 2
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["pid"] == os.getpid()
    assert load_checkpoint(run / "models" / "best.pt").run_id == status["run_id"]
    assert not (run / "run.lock").exists()


def test_a_file_system_without_locks_is_said_and_not_fatal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from audiogate.core import run_lock

    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(run_lock.fcntl, "flock", no_locks)
    with caplog.at_level("WARNING", logger="audiogate.core.run_lock"):
        run = new_run(Config(runs_dir=str(tmp_path), name="nfs"))
    assert "cannot lock run folder" in caplog.text and "No locks available" in caplog.text
    StatusFile(run, run_id="abc").ended(stop_reason="max_epochs", epochs_done=0)
    assert json.loads(run.status.read_text())["state"] == "finished"
