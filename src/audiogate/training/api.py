"""``train`` and ``resume``: a run folder, its data, a :class:`Trainer` and its callbacks."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..config import Config
from ..data.discover import write_skipped
from ..data.prepare import PreparedData, prepare_data, resolve_window
from ..data.split import read_split, write_split
from ..errors import CheckpointError
from .callbacks import (
    Callback,
    CheckpointSaver,
    CurvePlotter,
    EarlyStopping,
    EpochLogger,
    HtmlReport,
    MetricsWriter,
    OperatingPoint,
    TestReport,
)
from .checkpoint import ensure_compatible, load_checkpoint
from .runs import RunPaths, check_run_name, new_run
from .tensorboard import TensorBoardLogger, tensorboard_enabled
from .trainer import Trainer

log = logging.getLogger(__name__)

SKIPPED_SHOWN = 20
"""Skipped files listed in the log (all of them are in ``skipped.csv``)."""


@dataclass
class TrainResult:
    """Where the run is and how it ended."""

    run: RunPaths
    best_epoch: int
    best_val_f1: float
    epochs_done: int
    stop_reason: str
    test_report: dict[str, Any] | None


def run_callbacks(config: Config, run: RunPaths) -> list[Callback]:
    """The callbacks of a run folder, in order: checkpoints, metrics.json, curves, log, early
    stopping, then at the end the operating point (on validation), the test report, the
    TensorBoard summaries (when on) and report.html."""
    test = TestReport(run)
    board = [TensorBoardLogger(run, test=test)] if tensorboard_enabled(config) else []
    return [CheckpointSaver(run, keep_epochs=config.keep_epoch_checkpoints), MetricsWriter(run),
            CurvePlotter(run), EpochLogger(), EarlyStopping(config.patience),
            OperatingPoint(run), test, *board, HtmlReport(run)]


def _fit(trainer: Trainer, run: RunPaths) -> TrainResult:
    result = trainer.fit()
    report = next((cb.report for cb in trainer.callbacks.callbacks
                   if isinstance(cb, TestReport)), None)
    return TrainResult(run=run, best_epoch=result.best_epoch, best_val_f1=result.best_val_f1,
                       epochs_done=result.epochs_done, stop_reason=result.stop_reason,
                       test_report=report)


def _write_data_files(data: PreparedData, run: RunPaths) -> None:
    write_skipped(data.skipped, run.skipped)
    write_split(data.split, run.split, classes=data.classes)
    if data.skipped:
        log.warning("skipped %d file(s); reasons in %s", len(data.skipped), run.skipped)
        for s in data.skipped[:SKIPPED_SHOWN]:
            log.warning("  skipped %s: %s", s.path, s.reason)


def train(config: Config, *, progress: bool = True,
          callbacks: tuple[Callback, ...] = ()) -> TrainResult:
    """Train a new run as described by ``config``; ``callbacks`` listen after the run's own.

    The run folder is made once the data is ready, so a data set that cannot be used leaves
    nothing behind.
    """
    config = resolve_window(replace(config, data=str(Path(config.data).resolve())))
    check_run_name(config)
    tensorboard_enabled(config)  # "on" without the package: refused before any work
    data = prepare_data(config, progress=progress)
    run = new_run(config)
    log.info("run folder: %s", run.root)
    _write_data_files(data, run)
    trainer = Trainer(config, data, callbacks=[*run_callbacks(config, run), *callbacks],
                      progress=progress)
    return _fit(trainer, run)


def resume(run_dir: str | Path, *, max_epochs: int | None = None, patience: int | None = None,
           progress: bool = True, callbacks: tuple[Callback, ...] = ()) -> TrainResult:
    """Continue a run from ``run_dir/models/last.pt`` with its optimizer, RNG and history."""
    run = RunPaths(Path(run_dir))
    last = load_checkpoint(run.last)
    if last.train_state is None:
        raise CheckpointError(f"{run.last} holds no training state; cannot resume")
    config = replace(last.config,
                     max_epochs=last.config.max_epochs if max_epochs is None else max_epochs,
                     patience=last.config.patience if patience is None else patience)
    data = prepare_data(config, split=read_split(run.split), classes=last.classes,
                        progress=progress)
    ensure_compatible(last, features=config.features(), classes=data.classes)
    trainer = Trainer(config, data, callbacks=[*run_callbacks(config, run), *callbacks],
                      progress=progress)
    trainer.restore(last.weights, last.train_state)
    log.info("resuming %s after epoch %d (best so far: epoch %d, val-F1 %.4f)", run.root,
             last.epoch, trainer.state.best_epoch, trainer.state.best_val_f1)
    return _fit(trainer, run)
