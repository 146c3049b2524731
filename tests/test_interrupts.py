"""A second Ctrl+C, at any moment after the first, ends `audiogate train` at once: exit 130,
"audiogate: aborted", no traceback, every file whole and no temporary file left (issue 12,
item 4).

The moments are hit exactly by a script that runs the real CLI and sends itself the signals
from inside the run (a callback, the test report's plot, an ``fsync``, the interpreter's
shutdown); a second test sends them from outside, each after an event the run reports.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from audiogate.models.checkpoint import load_checkpoint

from .conftest import TINY_FLAGS, make_toy_dataset

pytestmark = pytest.mark.slow

SCRIPT = r'''
import atexit, builtins, os, signal, sys
from audiogate import cli, files
from audiogate.reporting import plots
from audiogate.gates.network import fit as api
from audiogate.training import callbacks

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


OUTSIDE = r'''
import os, signal, sys
from audiogate import cli
from audiogate.reporting import plots
from audiogate.gates.network import fit as api
from audiogate.training import callbacks

hold_at, argv = sys.argv[1], sys.argv[2:]
wake_r, wake_w = os.pipe()
os.set_blocking(wake_w, False)
signal.set_wakeup_fd(wake_w)  # each signal that reaches a Python handler writes its number


def say(moment):  # on stdout: the signal handler logs to stderr, which must not be busy
    print(f"moment: {moment}", flush=True)


def hold(moment):  # say where the run is, then wait there until the second SIGINT has come
    say(moment)
    sigints = 0
    while sigints < 2:
        sigints += os.read(wake_r, 1) == bytes([signal.SIGINT])
    # the handler of the second one has run by now (before this line): it should have ended
    # the process
    say("still running after the second Ctrl+C")
    os._exit(99)


class EpochSaid(callbacks.Callback):
    def on_epoch_end(self, trainer, record):
        if record["epoch"] == 1:
            say("epoch 1")


real_run_callbacks, real_plot = api.run_callbacks, plots.plot_confusion
api.run_callbacks = lambda *args, **kwargs: [EpochSaid(), *real_run_callbacks(*args, **kwargs)]


def plot_confusion(*args, **kwargs):
    if hold_at == "test_report":
        hold("test_report")
    return real_plot(*args, **kwargs)


plots.plot_confusion = plot_confusion
rc = cli.main(argv)
hold("end")  # the process cannot end before the second Ctrl+C has come
raise SystemExit(rc)
'''


def _read_until(proc: subprocess.Popen[str], text: str, seen: str = "") -> str:
    """``seen`` plus the process's output up to the line holding ``text``; fails, rather than
    waiting for ever, once the process ends, or says it waits somewhere, without writing it."""
    assert proc.stdout is not None
    while text not in seen:
        line = proc.stdout.readline()
        assert line and (text in line or not line.startswith("moment: ")), \
            f"no {text!r} in:\n{seen}{line}"
        seen += line
    return seen


@pytest.mark.parametrize("second", ["soon", "test_report", "end"])
def test_second_ctrl_c_from_outside(data: Path, tmp_path: Path, second: str) -> None:
    """Both SIGINTs come from outside, each after an event the run reports: the first once
    epoch 1 has ended (it lands wherever epoch 2 then is), the second once the first was
    acknowledged: at once ("soon": wherever the run then is), or once the run says it has
    reached the test report or the end of the command and waits there for it. The run
    always waits at its end, so it cannot finish before the second signal, however fast."""
    proc = subprocess.Popen([sys.executable, "-c", OUTSIDE, second, *_argv(data, tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = _read_until(proc, "moment: epoch 1")
        proc.send_signal(signal.SIGINT)
        out = _read_until(proc, "stopping at the next safe point", out)
        if second != "soon":
            out = _read_until(proc, f"moment: {second}", out)
        proc.send_signal(signal.SIGINT)
        out += proc.communicate()[0]
    finally:
        proc.kill()  # only if a check above failed: it has ended by now otherwise
        proc.wait()
    assert "still running" not in out, out
    assert_aborted_cleanly(proc.returncode, out, tmp_path / "run")
    if second != "soon":  # it waited there: the test report was written before
        assert json.loads((tmp_path / "run" / "test_metrics.json").read_text())["epoch"] >= 1


def test_the_first_signal_is_announced_without_the_buffered_stream(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler may interrupt a write to stderr (a progress bar, a log line): writing to
    the buffered stream again there raises "reentrant call inside BufferedWriter", so it
    announces itself with one os.write, and only where warnings are shown."""
    import logging
    import os
    import signal as signals_mod

    from audiogate.training import signals

    written: list[bytes] = []
    monkeypatch.setattr(os, "write", lambda fd, data: written.append(data) or len(data))
    monkeypatch.setattr(signals, "mark_interrupted", lambda: None)

    class Broken:
        def fileno(self) -> int:
            return 2

        def write(self, text: str) -> int:
            raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stderr>'>")

    monkeypatch.setattr(sys, "stderr", Broken())
    flag = signals.StopFlag()
    flag(signals_mod.SIGTERM, None)
    assert flag.reason == "interrupted (SIGTERM)"
    assert len(written) == 1 and b"SIGTERM: stopping at the next safe point" in written[0]
    monkeypatch.setattr(signals.log, "isEnabledFor", lambda level: level > logging.WARNING)
    signals.StopFlag()(signals_mod.SIGTERM, None)  # another rank: it logs errors only
    assert len(written) == 1
