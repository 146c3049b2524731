"""``train`` and ``resume``: a run folder, its data, a :class:`Trainer` and its callbacks.

Both run unchanged in one process or in each process of a torchrun job
(:mod:`.distributed`): rank 0 fills the feature cache while the others wait, then they open
it read-only and take rank 0's split; rank 0 alone makes the run folder and gets the callbacks
(checkpoints, metrics, plots, logs, the test report).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..config import RESUME_FIELDS, Config
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
    RunStatus,
    TestReport,
)
from .checkpoint import Checkpoint, ensure_compatible, load_checkpoint
from .device import resolve_device
from .distributed import Dist, from_env, session
from .runs import RunPaths, check_run_name, new_run, new_run_id, read_status
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


def run_callbacks(config: Config, run: RunPaths, *, status: RunStatus) -> list[Callback]:
    """The callbacks of a run folder, in order: checkpoints, metrics.json, curves, log, early
    stopping, then at the end the operating point (on validation), the test report, the
    TensorBoard summaries (when on), report.html, and ``status`` (last: "finished" once all
    is written)."""
    run_id = str(status.status["run_id"])
    test = TestReport(run)
    board = [TensorBoardLogger(run, test=test)] if tensorboard_enabled(config) else []
    return [CheckpointSaver(run, keep_epochs=config.keep_epoch_checkpoints, run_id=run_id),
            MetricsWriter(run), CurvePlotter(run), EpochLogger(), EarlyStopping(config.patience),
            OperatingPoint(run), test, *board, HtmlReport(run), status]


def _fit(trainer: Trainer, run: RunPaths, status: RunStatus | None) -> TrainResult:
    """Run the loop; ``status`` (rank 0's) records a failure before it is raised."""
    try:
        result = trainer.fit()
    except BaseException as exc:  # marked in status.json, then raised as it was
        if status is not None:
            status.failed(exc)
        raise
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


def _trainer(config: Config, data: PreparedData, run: RunPaths, dist: Dist,
             status: RunStatus | None, *, progress: bool,
             callbacks: tuple[Callback, ...]) -> Trainer:
    """The run's trainer: rank 0 (which holds ``status``) gets the callbacks (every file and
    log line), the others none (they follow rank 0's decisions to stop)."""
    listeners = ([*run_callbacks(config, run, status=status), *callbacks]
                 if status is not None else [])
    return Trainer(config, data, callbacks=listeners, progress=progress and dist.is_main,
                   dist=dist)


def train(config: Config, *, progress: bool = True,
          callbacks: tuple[Callback, ...] = ()) -> TrainResult:
    """Train a new run as described by ``config``; ``callbacks`` listen after the run's own
    (on rank 0 only, in a distributed run).

    The run folder is made once the data is ready, so a data set that cannot be used leaves
    nothing behind. A voice gate (``model = "ge2e"``) enrols instead of training
    (:func:`audiogate.voice.train.train_voice`; one process).
    """
    from ..voice.checkpoint import VOICE_MODELS  # local: the voice extra is optional

    if config.model in VOICE_MODELS:
        from ..voice.train import train_voice

        if callbacks:
            raise ConfigError("a voice gate run has no training loop to listen to; train it "
                              "without callbacks")
        return train_voice(config, progress=progress)
    config = replace(config, data=str(Path(config.data).resolve()))
    check_run_name(config)
    tensorboard_enabled(config)  # "on" without the package: refused before any work
    with _job(config) as dist:
        # fixed_length = "auto" reads the clips' headers: rank 0 does it, the others follow
        config = dist.broadcast(resolve_window(config) if dist.is_main else config)
        data = _shared_data(config, dist, progress=progress)
        run = dist.broadcast(new_run(config) if dist.is_main else None)
        assert run is not None  # rank 0 always sends it
        status = RunStatus(run, run_id=new_run_id()) if dist.is_main else None
        try:
            if dist.is_main:
                log.info("run folder: %s", run.root)
                _write_data_files(data, run)
            trainer = _trainer(config, data, run, dist, status, progress=progress,
                               callbacks=callbacks)
        except BaseException as exc:
            if status is not None:
                status.failed(exc)
            raise
        return _fit(trainer, run, status)


def resume(run_dir: str | Path, *, progress: bool = True, callbacks: tuple[Callback, ...] = (),
           **changes: Any) -> TrainResult:
    """Continue a run from ``run_dir/models/last.pt`` with its optimizer, RNG and history,
    with any number of processes and on any device.

    ``changes``: config fields to change, ``None`` meaning "keep"; only
    :data:`~audiogate.config.RESUME_FIELDS` may differ from the run's (see
    :func:`resume_config`). Refuses a ``last.pt`` that another run wrote.
    """
    run = RunPaths(Path(run_dir))
    _refuse_voice_run(run)
    last = load_checkpoint(run.last)
    if last.train_state is None:
        raise CheckpointError(f"{run.last} holds no training state; cannot resume")
    config = resume_config(last.config, changes)
    with _job(config) as dist:
        status = _own_status(run, last) if dist.is_main else None
        data = _shared_data(config, dist, split=read_split(run.split) if dist.is_main else None,
                            classes=last.classes, progress=progress)
        ensure_compatible(last, features=config.features(), classes=data.classes)
        trainer = _trainer(config, data, run, dist, status, progress=progress,
                           callbacks=callbacks)
        trainer.restore(last.weights, last.train_state)
        if dist.is_main:
            log.info("resuming %s after epoch %d (best so far: epoch %d, val-F1 %.4f)",
                     run.root, last.epoch, trainer.state.best_epoch, trainer.state.best_val_f1)
        return _fit(trainer, run, status)


def _refuse_voice_run(run: RunPaths) -> None:
    """A voice gate run has no epochs to continue: say so, rather than "no last.pt"."""
    try:
        model = Config.from_toml(run.config).model if run.config.is_file() else None
    except ConfigError:
        return
    from ..voice.checkpoint import VOICE_MODELS  # local: the voice extra is optional

    if model in VOICE_MODELS:
        raise ConfigError(f"{run.root} is a voice gate run: it trains no epochs, so there is "
                          "nothing to resume; enrol or remove voices with `audiogate enroll`, "
                          "or start a new run")


def _own_status(run: RunPaths, last: Checkpoint) -> RunStatus:
    """The run's status, after checking that ``last`` was written by this very run."""
    stored = read_status(run) or {}
    if stored.get("run_id") != last.run_id:
        raise CheckpointError(
            f"{run.last} belongs to another run (its run id is {last.run_id}, this folder's "
            f"is {stored.get('run_id')}): it was copied here, or the folder was reused; "
            "refusing to resume from it")
    return RunStatus(run, run_id=last.run_id or new_run_id(), started=stored.get("started"))


def resume_config(stored: Config, changes: Mapping[str, Any]) -> Config:
    """``stored`` with ``changes`` applied (``None`` values ignored).

    Only :data:`~audiogate.config.RESUME_FIELDS` may differ from ``stored``: every other field
    (features, model, data, split, seed, optimisation, augmentation, run folder) would make
    the resumed run differ from an uninterrupted one, so a changed value is refused with a
    :class:`ConfigError` naming each such flag.
    """
    known = {f.name for f in dataclasses.fields(Config)}
    given = {k: v for k, v in changes.items() if v is not None}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigError(f"resume: unknown field(s) {', '.join(unknown)}")
    refused = [k for k, v in given.items()
               if k not in RESUME_FIELDS and not _same(k, v, getattr(stored, k))]
    if refused:
        listed = "; ".join(f"--{k.replace('_', '-')} {given[k]!r} (the run has "
                           f"{getattr(stored, k)!r})" for k in refused)
        allowed = ", ".join(f"--{k.replace('_', '-')}" for k in RESUME_FIELDS)
        raise ConfigError(
            f"cannot change {listed} when resuming: a resumed run keeps the features, model, "
            f"data, split, seed and optimisation it was started with. Only {allowed} may "
            "change; start a new run (another --name) to train with other settings")
    return replace(stored, **{k: v for k, v in given.items() if k in RESUME_FIELDS})


def _same(name: str, value: Any, stored: Any) -> bool:
    if name == "data":  # stored resolved; the same folder may be given relative
        return bool(Path(str(value)).resolve() == Path(str(stored)).resolve())
    return bool(value == stored)
