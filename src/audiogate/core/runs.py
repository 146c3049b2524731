"""The run folder: where one training run keeps everything it produces.

::

    runs/<name>/
      run.lock             while a run is going: its pid, host and start (see run_lock)
      config.toml          the full Config (reload with --config)
      status.json          state (running, finished, interrupted, failed), why it stopped,
                           the error of a failed run, start/end times, epochs done, run id
      split.csv            subset,path,label,class for every clip used
      skipped.csv          path,reason for every file left out
      metrics.json         one record per finished epoch + best epoch
      test_metrics.json    final report of the best (validation) model on the test split
      test_predictions.csv its verdict on every test clip (path, true, predicted, p_<class>)
      report.html          the run on one self-contained page (audiogate report rewrites it)
      models/              model_epoch_NNN.pt, best.pt, last.pt (resumable)
      outputs/             curves.png, confusion_test.png, roc_test.png, det_test.png
      tensorboard/         TensorBoard event files (when tensorboard is on)
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import ConfigError
from ..files import write_json, write_text
from .run_lock import check_unlocked, lock_run, unlock_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPaths:
    """Paths inside one run folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def split(self) -> Path:
        return self.root / "split.csv"

    @property
    def skipped(self) -> Path:
        return self.root / "skipped.csv"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def test_report(self) -> Path:
        return self.root / "test_metrics.json"

    @property
    def test_predictions(self) -> Path:
        return self.root / "test_predictions.csv"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def best(self) -> Path:
        return self.models / "best.pt"

    @property
    def last(self) -> Path:
        return self.models / "last.pt"

    def epoch(self, n: int) -> Path:
        return self.models / f"model_epoch_{n:03d}.pt"

    @property
    def curves(self) -> Path:
        return self.outputs / "curves.png"

    @property
    def confusion(self) -> Path:
        return self.outputs / "confusion_test.png"


def check_run_name(config: Config) -> None:
    """Refuse a ``name`` whose run folder another run is using (:mod:`.run_lock`), or that
    already holds a finished epoch or a model, before any work."""
    root = Path(config.runs_dir) / config.name
    if config.name and root.is_dir():
        check_unlocked(root)
    if config.name and RunPaths(root).last.exists():
        raise ConfigError(f"run folder {root} already exists; pass --resume {root} to "
                          "continue it, or choose another --name")
    if config.name and RunPaths(root).best.exists():
        raise ConfigError(f"run folder {root} already holds a model; choose another --name")


def new_run(config: Config) -> RunPaths:
    """Create ``runs_dir/name`` (a timestamp when ``name`` is empty), take its lock
    (:func:`~audiogate.core.run_lock.lock_run`: released when the run's :class:`StatusFile`
    records its end) and save the config.

    A named folder is reused only if no other run holds it and it holds no finished epoch or
    model (``models/last.pt``, ``models/best.pt``), e.g. after a run that failed on its data;
    a run with trained epochs or a fitted gate is never overwritten.
    """
    base = Path(config.runs_dir)
    check_run_name(config)
    if config.name:
        root = base / config.name
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = _new_folder(base, datetime.now().strftime("%Y%m%d-%H%M%S"))
    lock_run(root)
    try:
        check_run_name(config)  # a run that ended between the first check and the lock
        paths = RunPaths(root)
        paths.models.mkdir(parents=True, exist_ok=True)
        paths.outputs.mkdir(parents=True, exist_ok=True)
        write_text(paths.config, config.to_toml())
    except BaseException:
        unlock_run(root)
        raise
    return paths


def _new_folder(base: Path, stamp: str) -> Path:
    """A folder made for this run alone: ``stamp``, else ``stamp-2``, ``stamp-3``..."""
    base.mkdir(parents=True, exist_ok=True)
    k = 1
    while True:
        root = base / (stamp if k == 1 else f"{stamp}-{k}")
        try:
            root.mkdir()
        except FileExistsError:
            k += 1
            continue
        return root


def new_run_id() -> str:
    """A random identifier for a new run: stored in ``status.json`` and in every checkpoint,
    so a checkpoint copied into another run's folder is recognised."""
    return secrets.token_hex(8)


def read_status(run: RunPaths) -> dict[str, Any] | None:
    """The run's ``status.json``, or None if it is missing or unreadable (a run folder made
    before audiogate wrote one)."""
    try:
        status = json.loads(run.status.read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def write_metrics(run: RunPaths, *, kind: str, classes: Sequence[str],
                  epochs: Sequence[dict[str, Any]], best_epoch: int | None, best_val_f1: float,
                  fit: dict[str, Any] | None = None) -> None:
    """``metrics.json``, one shape for every kind of gate::

        kind          the gate kind
        classes       class names in label order
        epochs        one record per finished training epoch (none for a gate fitted without
                      epochs)
        best_epoch    the epoch chosen on validation (null without epochs)
        best_val_f1   the validation macro-F1 of the chosen gate
        fit           what a fit without epochs did and measured (null otherwise)
    """
    write_json(run.metrics, {"kind": kind, "classes": list(classes), "epochs": list(epochs),
                             "best_epoch": best_epoch, "best_val_f1": best_val_f1, "fit": fit})


@dataclass
class TrainResult:
    """Where a run is and how it ended (``best_epoch`` None: a gate fitted without epochs)."""

    run: RunPaths
    best_epoch: int | None
    best_val_f1: float
    epochs_done: int
    stop_reason: str
    test_report: dict[str, Any] | None


class StatusFile:
    """Keeps ``status.json`` current: ``state`` (running, finished, interrupted, failed),
    ``stop_reason``, ``error``, ``started`` and ``ended`` (ISO times), ``epochs_done``,
    ``run_id``, and the ``pid`` and ``host`` of the process (a ``running`` run whose process
    is gone was killed).

    It holds the run folder's lock (:mod:`.run_lock`) from its creation (a
    :class:`ConfigError` if another live run holds it) until it records the run's end
    (:meth:`ended` or :meth:`failed`)."""

    def __init__(self, run: RunPaths, *, run_id: str, started: str | None = None) -> None:
        lock_run(run.root)
        self.run = run
        self.status: dict[str, Any] = {
            "state": "running", "stop_reason": None, "error": None,
            "started": started or now(), "ended": None, "epochs_done": 0, "run_id": run_id,
            "pid": os.getpid(), "host": socket.gethostname()}

    @property
    def run_id(self) -> str:
        return str(self.status["run_id"])

    def write(self, **changes: Any) -> None:
        """Update the given fields and rewrite the file (atomically)."""
        self.status.update(changes)
        write_json(self.run.status, self.status)

    def running(self, *, epochs_done: int = 0) -> None:
        self.write(state="running", stop_reason=None, error=None, ended=None,
                   epochs_done=epochs_done)

    def ended(self, *, stop_reason: str, epochs_done: int) -> None:
        """The run ended by itself: ``interrupted`` if a signal stopped it, else
        ``finished``."""
        try:
            self.write(state=stop_state(stop_reason), stop_reason=stop_reason, ended=now(),
                       epochs_done=epochs_done)
        finally:
            unlock_run(self.run.root)

    def failed(self, error: BaseException) -> None:
        """The run ended by an exception: ``interrupted`` for Ctrl+C, else ``failed``. If the
        file cannot be written either (the disk that failed the run is full), a warning says
        so and ``error`` stays the one the caller raises."""
        try:
            if isinstance(error, KeyboardInterrupt):
                self.write(state="interrupted", stop_reason="aborted (Ctrl+C)", ended=now())
            else:
                self.write(state="failed", error=str(error) or type(error).__name__,
                           ended=now())
        except OSError as exc:
            log.warning("could not record how the run ended in %s (%s)", self.run.status, exc)
        finally:
            unlock_run(self.run.root)


def stop_state(reason: str) -> str:
    """``interrupted`` for a run stopped by a signal, else ``finished``."""
    return "interrupted" if reason.startswith("interrupted") else "finished"


def now() -> str:
    """The local time, ISO 8601, to the second."""
    return datetime.now().astimezone().isoformat(timespec="seconds")
