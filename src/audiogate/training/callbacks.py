"""Everything that reacts to the training loop: files, figures, logs, early stopping.

The :class:`~audiogate.training.trainer.Trainer` emits events; a :class:`Callback` overrides
the ones it needs:

* ``on_train_begin(trainer)``: before the first epoch of this call to ``fit`` (also on resume);
* ``on_epoch_begin(trainer, epoch)``;
* ``on_epoch_end(trainer, record)``: an epoch finished and was evaluated; ``record`` is its row
  of ``metrics.json`` and ``trainer.state`` is up to date (``state.improved``: a new best);
* ``on_stop(trainer, reason)``: the loop decided to stop (max epochs, early stop, a signal);
* ``on_train_end(trainer, result)``: after ``on_stop``, with the
  :class:`~audiogate.training.trainer.FitResult`.

Callbacks run in the order given. The TensorBoard logger is in :mod:`.tensorboard`.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Any

from ..core.runs import RunPaths, StatusFile, stop_state, write_metrics
from ..models.checkpoint import save_checkpoint
from ..reporting import plots
from .trainer import Callback, FitResult, Trainer

log = logging.getLogger(__name__)


class CheckpointSaver(Callback):
    """Writes ``model_epoch_NNN.pt`` (if ``keep_epochs``), ``best.pt`` when validation
    improves, and ``last.pt`` with the optimizer and RNG state for ``--resume``."""

    def __init__(self, run: RunPaths, *, keep_epochs: bool = True,
                 run_id: str | None = None) -> None:
        self.run, self.keep_epochs, self.run_id = run, keep_epochs, run_id

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        epoch = record["epoch"]
        targets = [self.run.epoch(epoch)] if self.keep_epochs else []
        targets += [self.run.best] if trainer.state.improved else []
        for paths, state in ((targets, None), ([self.run.last], trainer.train_state())):
            if paths:  # the same bytes to the epoch's file and best.pt, serialised once
                save_checkpoint(paths, net=trainer.net, spec=trainer.spec,
                                config=trainer.config, classes=trainer.classes, epoch=epoch,
                                metrics=record, train_state=state, run_id=self.run_id)


class RunStatus(Callback):
    """Keeps the run's ``status.json`` (:class:`~audiogate.core.runs.StatusFile`) current with
    the loop: running, epochs done, and how it ended. A run that raises is marked by
    ``status.failed`` (the run's code calls it)."""

    def __init__(self, status: StatusFile) -> None:
        self.status = status

    def on_train_begin(self, trainer: Trainer) -> None:
        self.status.running(epochs_done=len(trainer.state.history))

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.status.write(epochs_done=len(trainer.state.history))

    def on_stop(self, trainer: Trainer, reason: str) -> None:
        self.status.status["stop_reason"] = reason

    def on_train_end(self, trainer: Trainer, result: FitResult) -> None:
        self.status.ended(stop_reason=result.stop_reason, epochs_done=result.epochs_done)


class MetricsWriter(Callback):
    """Rewrites ``metrics.json`` (:func:`~audiogate.core.runs.write_metrics`) after every
    epoch: all epochs so far and the best one."""

    def __init__(self, run: RunPaths, *, kind: str) -> None:
        self.run, self.kind = run, kind

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        state = trainer.state
        write_metrics(self.run, kind=self.kind, classes=trainer.classes, epochs=state.history,
                      best_epoch=state.best_epoch, best_val_f1=state.best_val_f1)


class CurvePlotter(Callback):
    """Redraws ``outputs/curves.png`` (loss and train/val/test macro-F1) after every epoch, in
    a background thread, so the next epoch trains while it draws (a drawing takes about as
    long as a short epoch). The latest epoch wins: a drawing not begun is replaced by the
    newer one. When training stops, the figure of every finished epoch is drawn before the
    run goes on; a drawing that failed raises there."""

    def __init__(self, run: RunPaths) -> None:
        self.run = run
        self._lock = threading.Lock()
        self._latest: tuple[list[dict[str, Any]], int] | None = None
        self._drawing: threading.Thread | None = None
        self._error: BaseException | None = None

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        with self._lock:
            self._latest = ([dict(h) for h in trainer.state.history], trainer.state.best_epoch)
            if self._drawing is None:
                self._drawing = threading.Thread(target=self._draw, name="curves", daemon=True)
                self._drawing.start()

    def _draw(self) -> None:
        while True:
            with self._lock:
                job, self._latest = self._latest, None
                if job is None:
                    self._drawing = None
                    return
            try:
                plots.plot_curves(job[0], self.run.curves, best_epoch=job[1])
            except BaseException as exc:  # raised in the training thread by on_stop
                self._error = exc

    def on_stop(self, trainer: Trainer, reason: str) -> None:
        with self._lock:
            drawing = self._drawing
        if drawing is not None:
            drawing.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error


class EpochLogger(Callback):
    """One log line per epoch, and why training stopped."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        tuned = math.isfinite(record.get("val_f1_tuned", math.nan)) \
            and trainer.config.select_on != "f1"
        log.info("epoch %d  loss %.4f  train-F1 %.4f  val-F1 %.4f  test-F1 %.4f%s  (%.1fs)%s",
                 record["epoch"], record["train_loss"], record["train_f1"], record["val_f1"],
                 record["test_f1"],
                 (f"  at val's threshold: val-F1 {record['val_f1_tuned']:.4f}  test-F1 "
                  f"{record['test_f1_tuned']:.4f}  val-AUC {record['val_auc']:.4f}")
                 if tuned else "", record["seconds"],
                 "  * best" if trainer.state.improved else "")

    def on_stop(self, trainer: Trainer, reason: str) -> None:
        log.info("training stopped: %s; best epoch %d on %s (val-F1 %.4f)", reason,
                 trainer.state.best_epoch, trainer.config.select_on,
                 trainer.state.best_val_f1)


class EarlyStopping(Callback):
    """Stops the run after ``patience`` epochs without a validation gain in the measure
    ``select_on`` names."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def _check(self, trainer: Trainer) -> None:
        if self.patience and trainer.state.bad_epochs >= self.patience:
            trainer.request_stop(f"early stop: no gain in validation "
                                 f"{trainer.config.select_on} for {self.patience} epochs")

    def on_train_begin(self, trainer: Trainer) -> None:
        self._check(trainer)  # a resumed run may have run out of patience already

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._check(trainer)


class HtmlReport(Callback):
    """At the end, writes ``report.html`` (:func:`~audiogate.reporting.report.write_report`),
    also for a stopped run. A failure is logged and never loses the run: everything else is
    written already, and ``audiogate report RUN_DIR`` can write the page later."""

    def __init__(self, run: RunPaths) -> None:
        self.run = run
        self.path: Path | None = None

    def on_train_end(self, trainer: Trainer, result: FitResult) -> None:
        from ..reporting.report import write_report

        live = {"state": stop_state(result.stop_reason), "stop_reason": result.stop_reason,
                "epochs_done": result.epochs_done}
        try:
            self.path = write_report(self.run.root, errors=trainer.config.report_errors,
                                     live=live)
        except Exception:  # the run is saved; only its page is missing
            log.exception("could not write %s; the run itself is complete (write the page "
                          "later with: audiogate report %s)", self.run.report, self.run.root)
            return
        log.info("report: %s", self.path)
