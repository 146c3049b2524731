"""A trained network's run: ``fit`` and ``resume`` of the ``network`` gate kind.

A run folder, its data, a :class:`~audiogate.training.trainer.Trainer` and its callbacks.
Both run unchanged in one process or in each process of a torchrun job
(:mod:`audiogate.training.distributed`): rank 0 fills the feature cache while the others wait,
then they open it read-only and take rank 0's split; rank 0 alone makes the run folder and
gets the callbacks (checkpoints, metrics, plots, logs, the operating point, the test report).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ...config import RESUME_FIELDS, Config
from ...core.runs import (
    RunPaths,
    StatusFile,
    TrainResult,
    check_run_name,
    new_run_id,
    read_status,
)
from ...data.prepare import PreparedData, prepare_data, resolve_window
from ...data.split import Split, read_split
from ...errors import CheckpointError, ConfigError
from ...models.checkpoint import (
    KIND,
    Checkpoint,
    ensure_compatible,
    load_checkpoint,
    save_checkpoint,
)
from ...reporting.evaluate import test_report
from ...reporting.metrics import choose_threshold, gate_report
from ...reporting.predictions import Scored, score_clips
from ...training.callbacks import (
    CheckpointSaver,
    CurvePlotter,
    EarlyStopping,
    EpochLogger,
    HtmlReport,
    MetricsWriter,
    RunStatus,
)
from ...training.device import resolve_device
from ...training.distributed import Dist, from_env, session
from ...training.tensorboard import TensorBoardLogger, tensorboard_enabled
from ...training.trainer import Callback, FitResult, Trainer
from ..runs import start_run, write_data_files
from .classifier import Classifier

log = logging.getLogger(__name__)



class OperatingPoint(Callback):
    """At the end, chooses a two-class gate's threshold on P(positive) on the validation split
    (``config.operating_point``: best F1, EER, or a target FAR/FRR), judging each validation
    clip as ``predict`` will (whole clips), and stores it in ``best.pt``."""

    def __init__(self, run: RunPaths) -> None:
        self.run = run
        self.gate: dict[str, Any] | None = None

    def on_train_end(self, trainer: Trainer, result: FitResult) -> None:
        if not self.run.best.exists() or len(trainer.classes) != 2:
            return
        best = load_checkpoint(self.run.best)
        model = Classifier(replace(best, gate=None), workers=trainer.config.workers)
        pos = model.decision.positive
        scored = score_clips(model, trainer.data.val.clips)
        y = (scored.y_true == pos).astype(np.int64)
        if pos is None or y.min() == y.max():
            return
        rule = trainer.config.operating_point
        threshold = choose_threshold(y, scored.scores(), rule=rule)
        self.gate = {"positive": trainer.classes[pos], "threshold": threshold,
                     "operating_point": rule,
                     "validation": gate_report(y, scored.scores(), threshold=threshold)}
        save_checkpoint(self.run.best, net=best.build_net(), spec=best.spec,
                        config=best.config, classes=best.classes, epoch=best.epoch,
                        metrics=best.metrics, gate=self.gate, run_id=best.run_id)
        log.info("operating point (%s on validation): threshold %.4f, FAR %.4f, FRR %.4f",
                 rule, threshold, self.gate["validation"]["far"],
                 self.gate["validation"]["frr"])


class TestReport(Callback):
    """At the end, evaluates ``best.pt`` (chosen on validation, with its threshold) once on
    the test split, judging clips as ``predict`` does: ``test_metrics.json``, every clip's
    verdict in ``test_predictions.csv``, and the confusion matrix, ROC and DET curves in
    ``outputs/``. ``report`` and ``scored`` keep the results for the callbacks after it."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, run: RunPaths) -> None:
        self.run = run
        self.report: dict[str, Any] | None = None
        self.scored: Scored | None = None

    def on_train_end(self, trainer: Trainer, result: FitResult) -> None:
        if not self.run.best.exists():
            return
        model = Classifier(load_checkpoint(self.run.best), workers=trainer.config.workers)
        self.report, self.scored = test_report(self.run, model, trainer.data.test.clips,
                                               title=f"Test set, best epoch {model.epoch}")


def run_callbacks(config: Config, run: RunPaths, *, status: StatusFile) -> list[Callback]:
    """The callbacks of a run folder, in order: checkpoints, metrics.json, curves, log, early
    stopping, then at the end the operating point (on validation), the test report, the
    TensorBoard summaries (when on), report.html, and the status (last: "finished" once all
    is written)."""
    test = TestReport(run)
    board = [TensorBoardLogger(run, test=test)] if tensorboard_enabled(config) else []
    return [CheckpointSaver(run, keep_epochs=config.keep_epoch_checkpoints,
                            run_id=status.run_id),
            MetricsWriter(run, kind=KIND), CurvePlotter(run), EpochLogger(),
            EarlyStopping(config.patience), OperatingPoint(run), test, *board, HtmlReport(run),
            RunStatus(status)]


def _fit(trainer: Trainer, run: RunPaths, status: StatusFile | None) -> TrainResult:
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


def warn_people_held_out(split: Split, classes: Sequence[str], *, group_by: str) -> bool:
    """Warn (and say so) when a class's groups belong to it alone and some are held out whole:
    with ``group_by`` naming people, a network is then validated and tested on people of that
    class it never trained on. Right for a word gate tested on unseen speakers (the speakers
    say both classes' words, so groups are shared); wrong for a *speaker* gate, whose allowed
    people must be heard in training: the voice gate splits within each allowed person."""
    if group_by == "none" or not split.test:
        return False
    groups = {s: {(c.label, c.group) for c in getattr(split, s)} for s in ("train", "val", "test")}
    every = groups["train"] | groups["val"] | groups["test"]
    warned = False
    for label, name in enumerate(classes):
        own = {g for k, g in every if k == label}
        if own & {g for k, g in every if k != label}:
            continue  # groups shared with another class: held-out groups are fair tests
        unheard = {g for k, g in groups["test"] | groups["val"] if k == label} - \
            {g for k, g in groups["train"] if k == label}
        if unheard:
            warned = True
            log.warning("group_by = %s: the groups of class %r appear in no other class, and "
                        "%d of them are held out whole for validation and test, so the "
                        "network is judged on %s groups it never trained on. If the groups "
                        "are people the gate should let in (a speaker gate), train with "
                        "--recipe voice, which enrols every allowed person and tests each "
                        "on held-out clips of their own", group_by, name, len(unheard), name)
    return warned


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
             status: StatusFile | None, *, progress: bool,
             callbacks: Sequence[Callback]) -> Trainer:
    """The run's trainer: rank 0 (which holds ``status``) gets the callbacks (every file and
    log line), the others none (they follow rank 0's decisions to stop)."""
    listeners = ([*run_callbacks(config, run, status=status), *callbacks]
                 if status is not None else [])
    return Trainer(config, data, callbacks=listeners, progress=progress and dist.is_main,
                   dist=dist)


def fit_network(config: Config, *, progress: bool = True,
                callbacks: Sequence[Callback] = ()) -> TrainResult:
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
        if dist.is_main:
            warn_people_held_out(data.split, data.classes, group_by=config.group_by)
        made = start_run(config) if dist.is_main else None
        run = dist.broadcast(made[0] if made else None)
        assert run is not None  # rank 0 always sends it
        status = made[1] if made else None
        try:
            if dist.is_main:
                write_data_files(run, split=data.split, classes=data.classes,
                                 skipped=data.skipped)
            trainer = _trainer(config, data, run, dist, status, progress=progress,
                               callbacks=callbacks)
        except BaseException as exc:
            if status is not None:
                status.failed(exc)
            raise
        return _fit(trainer, run, status)


def resume_network(run_dir: str | Path, *, progress: bool = True,
                   callbacks: Sequence[Callback] = (), **changes: Any) -> TrainResult:
    """Continue a run from ``run_dir/models/last.pt`` with its optimizer, RNG and history,
    with any number of processes and on any device.

    ``changes``: config fields to change, ``None`` meaning "keep"; only
    :data:`~audiogate.config.RESUME_FIELDS` may differ from the run's (see
    :func:`resume_config`). Refuses a ``last.pt`` that another run wrote.
    """
    run = RunPaths(Path(run_dir))
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


def _own_status(run: RunPaths, last: Checkpoint) -> StatusFile:
    """The run's status, after checking that ``last`` was written by this very run."""
    stored = read_status(run) or {}
    if stored.get("run_id") != last.run_id:
        raise CheckpointError(
            f"{run.last} belongs to another run (its run id is {last.run_id}, this folder's "
            f"is {stored.get('run_id')}): it was copied here, or the folder was reused; "
            "refusing to resume from it")
    return StatusFile(run, run_id=last.run_id or new_run_id(), started=stored.get("started"))


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
