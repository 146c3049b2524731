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
import os
import socket
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..files import write_json
from ..reporting import plots
from ..reporting.metrics import choose_threshold, gate_report
from .checkpoint import load_checkpoint, save_checkpoint
from .runs import RunPaths

if TYPE_CHECKING:
    from ..reporting.predictions import Scored
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

    def begin(self) -> None:
        """A run without a training loop (a voice gate) started: ``running``."""
        self._write(state="running")

    def finished(self, *, stop_reason: str, epochs_done: int) -> None:
        """A run without a training loop ended: ``finished``."""
        self._write(state="finished", stop_reason=stop_reason, ended=_now(),
                    epochs_done=epochs_done)

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


class OperatingPoint(Callback):
    """At the end, chooses a two-class gate's threshold on P(positive) on the validation split
    (``config.operating_point``: best F1, EER, or a target FAR/FRR), judging each validation
    clip as ``predict`` will (whole clips), and stores it in ``best.pt``."""

    def __init__(self, run: RunPaths) -> None:
        self.run = run
        self.gate: dict[str, Any] | None = None

    def on_train_end(self, trainer: Trainer, result: FitResult) -> None:
        from ..deploy.inference import Classifier
        from ..reporting.predictions import score_clips

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
        from ..deploy.inference import Classifier
        from ..reporting.evaluate import build_report, write_figures
        from ..reporting.predictions import score_clips, write_predictions

        if not self.run.best.exists():
            return
        model = Classifier(load_checkpoint(self.run.best), workers=trainer.config.workers)
        scored = score_clips(model, trainer.data.test.clips)
        report = build_report(scored, model)
        report["epoch"] = model.epoch
        write_json(self.run.test_report, report)
        write_predictions(scored, model.classes, self.run.test_predictions)
        write_figures(scored, model, report, confusion=self.run.confusion,
                      roc=self.run.outputs / "roc_test.png",
                      det=self.run.outputs / "det_test.png",
                      title=f"Test set, best epoch {model.epoch}")
        self.report, self.scored = report, scored


def stop_state(reason: str) -> str:
    """``interrupted`` for a run stopped by a signal, else ``finished``."""
    return "interrupted" if reason.startswith("interrupted") else "finished"


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
