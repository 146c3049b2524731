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

Callbacks run in the order given. A TensorBoard logger or an HTML report is one more class here.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..files import write_json
from ..reporting import plots
from ..reporting.metrics import classification_report
from .checkpoint import load_checkpoint, save_checkpoint
from .runs import RunPaths

if TYPE_CHECKING:
    from .trainer import FitResult, Trainer

log = logging.getLogger(__name__)


class Callback:
    """Base class: every event is a no-op until overridden."""

    def on_train_begin(self, trainer: Trainer) -> None:
        """Before the first epoch of this call to ``fit``."""

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        """Before epoch ``epoch`` trains."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After an epoch was trained and evaluated."""

    def on_stop(self, trainer: Trainer, reason: str) -> None:
        """The loop stops, for ``reason``."""

    def on_train_end(self, trainer: Trainer, result: FitResult) -> None:
        """After the loop, with its result."""


class CallbackList(Callback):
    """Several callbacks as one, called in order."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)

    def on_train_begin(self, trainer: Trainer) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(trainer)

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(trainer, epoch)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(trainer, record)

    def on_stop(self, trainer: Trainer, reason: str) -> None:
        for cb in self.callbacks:
            cb.on_stop(trainer, reason)

    def on_train_end(self, trainer: Trainer, result: FitResult) -> None:
        for cb in self.callbacks:
            cb.on_train_end(trainer, result)


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
        for path in [*targets, self.run.last]:
            save_checkpoint(path, net=trainer.net, spec=trainer.spec, config=trainer.config,
                            classes=trainer.classes, epoch=epoch, metrics=record,
                            train_state=trainer.train_state() if path == self.run.last else None,
                            run_id=self.run_id)


class RunStatus(Callback):
    """Keeps ``status.json`` current: ``state`` (running, finished, interrupted, failed),
    ``stop_reason``, ``error``, ``started`` and ``ended`` (ISO times), ``epochs_done``,
    ``run_id``, and the ``pid`` and ``host`` of the process (a ``running`` run whose process
    is gone was killed). A run that raises is marked by :meth:`failed` (``train``/``resume``
    call it)."""

    def __init__(self, run: RunPaths, *, run_id: str, started: str | None = None) -> None:
        self.run = run
        self.status: dict[str, Any] = {
            "state": "running", "stop_reason": None, "error": None,
            "started": started or _now(), "ended": None, "epochs_done": 0, "run_id": run_id,
            "pid": os.getpid(), "host": socket.gethostname()}

    def _write(self, **changes: Any) -> None:
        self.status.update(changes)
        write_json(self.run.status, self.status)

    def on_train_begin(self, trainer: Trainer) -> None:
        self._write(state="running", stop_reason=None, error=None, ended=None,
                    epochs_done=len(trainer.state.history))

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._write(epochs_done=len(trainer.state.history))

    def on_stop(self, trainer: Trainer, reason: str) -> None:
        self.status["stop_reason"] = reason

    def on_train_end(self, trainer: Trainer, result: FitResult) -> None:
        state = "interrupted" if result.stop_reason.startswith("interrupted") else "finished"
        self._write(state=state, stop_reason=result.stop_reason, ended=_now(),
                    epochs_done=result.epochs_done)

    def failed(self, error: BaseException) -> None:
        """The run ended by an exception: ``interrupted`` for Ctrl+C, else ``failed``."""
        if isinstance(error, KeyboardInterrupt):
            self._write(state="interrupted", stop_reason="aborted (Ctrl+C)", ended=_now())
        else:
            self._write(state="failed", error=str(error) or type(error).__name__,
                        ended=_now())


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


class MetricsWriter(Callback):
    """Rewrites ``metrics.json`` after every epoch: all epochs so far and the best one."""

    def __init__(self, run: RunPaths) -> None:
        self.run = run

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        state = trainer.state
        write_json(self.run.metrics, {"best_epoch": state.best_epoch,
                                      "best_val_f1": state.best_val_f1,
                                      "classes": list(trainer.classes),
                                      "epochs": state.history})


class CurvePlotter(Callback):
    """Redraws ``outputs/curves.png`` (loss and train/val/test macro-F1) after every epoch."""

    def __init__(self, run: RunPaths) -> None:
        self.run = run

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        plots.plot_curves(trainer.state.history, self.run.curves)


class EpochLogger(Callback):
    """One log line per epoch, and why training stopped."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        log.info("epoch %d  loss %.4f  train-F1 %.4f  val-F1 %.4f  test-F1 %.4f  (%.1fs)%s",
                 record["epoch"], record["train_loss"], record["train_f1"], record["val_f1"],
                 record["test_f1"], record["seconds"],
                 "  * best" if trainer.state.improved else "")

    def on_stop(self, trainer: Trainer, reason: str) -> None:
        log.info("training stopped: %s; best epoch %d (val-F1 %.4f)", reason,
                 trainer.state.best_epoch, trainer.state.best_val_f1)


class EarlyStopping(Callback):
    """Stops the run after ``patience`` epochs without a validation macro-F1 gain."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def _check(self, trainer: Trainer) -> None:
        if self.patience and trainer.state.bad_epochs >= self.patience:
            trainer.request_stop(f"early stop: no val-F1 gain for {self.patience} epochs")

    def on_train_begin(self, trainer: Trainer) -> None:
        self._check(trainer)  # a resumed run may have run out of patience already

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._check(trainer)


class TestReport(Callback):
    """At the end, evaluates ``best.pt`` (chosen on validation) once on the test split:
    ``test_metrics.json`` and ``outputs/confusion_test.png``."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, run: RunPaths) -> None:
        self.run = run
        self.report: dict[str, Any] | None = None

    def on_train_end(self, trainer: Trainer, result: FitResult) -> None:
        if not self.run.best.exists():
            return
        best = load_checkpoint(self.run.best)
        trainer.net.load_state_dict(best.weights)
        _, pred = trainer.evaluate(trainer.test_feats, trainer.data.test.labels)
        report = classification_report(trainer.data.test.labels, pred, classes=trainer.classes)
        report["epoch"] = best.epoch
        write_json(self.run.test_report, report)
        plots.plot_confusion(report["confusion"], trainer.classes, self.run.confusion,
                             title=f"Test set, best epoch {best.epoch}")
        self.report = report
