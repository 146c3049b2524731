"""A second Ctrl+C, at any moment after the first, ends `audiogate train` at once: exit 130,
"audiogate: aborted", no traceback, every file whole and no temporary file left (issue 12,
item 4).

The moments are hit exactly by a script that runs the real CLI and sends itself the signals
from inside the run (a callback, the test report's plot, an ``fsync``, the interpreter's
shutdown); a second test sends them from outside at several delays.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audiogate.training.checkpoint import load_checkpoint

from .conftest import TINY_FLAGS, make_toy_dataset

pytestmark = pytest.mark.slow

SCRIPT = r'''
import atexit, builtins, os, signal, sys
from audiogate import cli, files
from audiogate.reporting import plots
from audiogate.training import api, callbacks

moment, argv = sys.argv[1], sys.argv[2:]
first_sent = False


def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)


class Moments(callbacks.Callback):
    def on_epoch_begin(self, trainer, epoch):
        if moment == "rest_of_epoch" and epoch == 2:
            ctrl_c()
            ctrl_c()

    def on_epoch_end(self, trainer, record):
        global first_sent
        if record["epoch"] == 2 and moment != "rest_of_epoch":
            ctrl_c()  # the first Ctrl+C: stop at the next safe point
            first_sent = True
            if moment == "exit":
                atexit.register(ctrl_c)

    def on_stop(self, trainer, reason):
        if moment == "on_stop":
            ctrl_c()


real_run_callbacks = api.run_callbacks


def run_callbacks(*args, **kwargs):
    own = real_run_callbacks(*args, **kwargs)
    return [Moments(), *own] if moment == "checkpoint" else [*own[:-1], Moments(), own[-1]]


api.run_callbacks = run_callbacks
real_fsync, real_plot, real_print = os.fsync, plots.plot_confusion, builtins.print


def fsync(fd):  # "checkpoint": epoch 2's first checkpoint; "report_write": test_metrics.json
    if first_sent and moment in ("checkpoint", "report_write"):
        ctrl_c()
    real_fsync(fd)


def plot_confusion(*args, **kwargs):
    if moment == "test_report":
        ctrl_c()
    return real_plot(*args, **kwargs)


def printed(*args, **kwargs):
    if moment == "printing":
        ctrl_c()
    real_print(*args, **kwargs)


os.fsync, plots.plot_confusion, cli.print = fsync, plot_confusion, printed
raise SystemExit(cli.main(argv))
'''

MOMENTS = ("rest_of_epoch", "checkpoint", "on_stop", "test_report", "report_write",
           "printing", "exit")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_dataset(tmp_path_factory.mktemp("ctrl_c") / "data", n_per_class=10)


def _argv(data: Path, runs: Path) -> list[str]:
    return ["-q", "train", "--data", str(data), "--runs-dir", str(runs), "--name", "run",
            *TINY_FLAGS, "--max-epochs", "0"]


def assert_aborted_cleanly(rc: int, err: str, run: Path) -> None:
    assert rc == 130, err
    assert err.rstrip().endswith("audiogate: aborted"), err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    for path in run.rglob("*.json"):
        json.loads(path.read_text())
    for path in run.rglob("*.pt"):
        load_checkpoint(path)


@pytest.mark.parametrize("moment", MOMENTS)
def test_second_ctrl_c_at_every_moment(data: Path, tmp_path: Path, moment: str) -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, moment, *_argv(data, tmp_path)],
                          capture_output=True, text=True, timeout=300)
    run = tmp_path / "run"
    assert_aborted_cleanly(proc.returncode, proc.stderr, run)
    last = load_checkpoint(run / "models" / "last.pt")
    assert last.epoch == (1 if moment in ("rest_of_epoch", "checkpoint") else 2)
    if moment in ("test_report", "printing", "exit"):  # the report was written before
        assert json.loads((run / "test_metrics.json").read_text())["epoch"] >= 1


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no epoch finished in time"
        time.sleep(0.05)


@pytest.mark.parametrize("delay", [0.0, 0.5])
def test_second_ctrl_c_from_outside(data: Path, tmp_path: Path, delay: float) -> None:
    """The second SIGINT ``delay`` seconds after the first was received (two signals sent
    before the process runs its handler are one signal to the kernel)."""
    cmd = [sys.executable, "-m", "audiogate", *_argv(data, tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(tmp_path / "run" / "metrics.json", proc)
    proc.send_signal(signal.SIGINT)
    assert proc.stderr is not None
    err = ""
    while "stopping at the next safe point" not in err:
        line = proc.stderr.readline()
        assert line, f"no acknowledgement of the first Ctrl+C:\n{err}"
        err += line
    time.sleep(delay)
    assert proc.poll() is None, "the run ended before the second Ctrl+C"
    proc.send_signal(signal.SIGINT)
    err += proc.stderr.read()
    proc.wait(timeout=120)
    assert_aborted_cleanly(proc.returncode, err, tmp_path / "run")
