"""``train`` and ``resume``: a run folder, its data, a :class:`Trainer` and its callbacks.

Both run unchanged in one process or in each process of a torchrun job
(:mod:`.distributed`): rank 0 fills the feature cache while the others wait, then they open
it read-only and take rank 0's split; rank 0 alone makes the run folder and gets the callbacks
(checkpoints, metrics, plots, logs, the test report).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..config import Config
from ..data.discover import write_skipped
from ..data.prepare import PreparedData, prepare_data, resolve_window
from ..data.split import Split, read_split, write_split
from ..errors import CheckpointError, ConfigError
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
from .device import resolve_device
from .distributed import Dist, from_env, session
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


@contextlib.contextmanager
def _job(config: Config) -> Iterator[Dist]:
    """This process's part of the job torchrun describes (a job of one without torchrun)."""
    env = from_env()
    if env.active and not config.cache:
        raise ConfigError("config field 'cache' is off, but the processes of a distributed run "
                          "share the on-disk feature cache; drop --no-cache")
    device = resolve_device(config.device, local_rank=env.local_rank,
                            local_world_size=env.local_world_size)
    with session(device) as dist:
        yield dist


def _shared_data(config: Config, dist: Dist, *, split: Split | None = None,
                 classes: tuple[str, ...] | None = None, progress: bool) -> PreparedData:
    """Rank 0 decodes what the cache lacks (in parallel worker processes) while the others
    wait; then they open the same cache read-only and take rank 0's split."""
    data = None
    if dist.is_main:
        data = prepare_data(config, split=split, classes=classes, progress=progress)
    dist.barrier()
    shared = dist.broadcast((data.split, data.classes) if data is not None else None)
    if data is None:
        assert shared is not None  # rank 0 always sends its split
        data = prepare_data(config, split=shared[0], classes=shared[1], progress=False,
                            read_only=True)
    return data


def _trainer(config: Config, data: PreparedData, run: RunPaths, dist: Dist, *,
             progress: bool, callbacks: tuple[Callback, ...]) -> Trainer:
    """The run's trainer: rank 0 gets the callbacks (every file and log line), the others
    none (they follow rank 0's decisions to stop)."""
    listeners = [*run_callbacks(config, run), *callbacks] if dist.is_main else []
    return Trainer(config, data, callbacks=listeners, progress=progress and dist.is_main,
                   dist=dist)


def train(config: Config, *, progress: bool = True,
          callbacks: tuple[Callback, ...] = ()) -> TrainResult:
    """Train a new run as described by ``config``; ``callbacks`` listen after the run's own
    (on rank 0 only, in a distributed run).

    The run folder is made once the data is ready, so a data set that cannot be used leaves
    nothing behind.
    """
    config = replace(config, data=str(Path(config.data).resolve()))
    check_run_name(config)
    tensorboard_enabled(config)  # "on" without the package: refused before any work
    with _job(config) as dist:
        # fixed_length = "auto" reads the clips' headers: rank 0 does it, the others follow
        config = dist.broadcast(resolve_window(config) if dist.is_main else config)
        data = _shared_data(config, dist, progress=progress)
        run = dist.broadcast(new_run(config) if dist.is_main else None)
        assert run is not None  # rank 0 always sends it
        if dist.is_main:
            log.info("run folder: %s", run.root)
            _write_data_files(data, run)
        trainer = _trainer(config, data, run, dist, progress=progress, callbacks=callbacks)
        return _fit(trainer, run)


def resume(run_dir: str | Path, *, max_epochs: int | None = None, patience: int | None = None,
           device: str | None = None, precision: str | None = None, progress: bool = True,
           callbacks: tuple[Callback, ...] = ()) -> TrainResult:
    """Continue a run from ``run_dir/models/last.pt`` with its optimizer, RNG and history,
    with any number of processes and on any device (``device``/``precision`` override the
    run's own)."""
    run = RunPaths(Path(run_dir))
    last = load_checkpoint(run.last)
    if last.train_state is None:
        raise CheckpointError(f"{run.last} holds no training state; cannot resume")
    overrides: dict[str, Any] = {"max_epochs": max_epochs, "patience": patience,
                                 "device": device, "precision": precision}
    config = replace(last.config, **{k: v for k, v in overrides.items() if v is not None})
    with _job(config) as dist:
        data = _shared_data(config, dist, split=read_split(run.split) if dist.is_main else None,
                            classes=last.classes, progress=progress)
        ensure_compatible(last, features=config.features(), classes=data.classes)
        trainer = _trainer(config, data, run, dist, progress=progress, callbacks=callbacks)
        trainer.restore(last.weights, last.train_state)
        if dist.is_main:
            log.info("resuming %s after epoch %d (best so far: epoch %d, val-F1 %.4f)",
                     run.root, last.epoch, trainer.state.best_epoch, trainer.state.best_val_f1)
        return _fit(trainer, run)
