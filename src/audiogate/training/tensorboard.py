"""TensorBoard event files for a run: ``RUN_DIR/tensorboard/``.

``tensorboard --logdir runs`` then shows every run side by side: per-epoch losses, macro-F1s,
learning rate and epoch time (Scalars), a few clean validation spectrograms (Images), the
test precision-recall curves of the best model (PR Curves) and the run's config fields with
its final metrics (HParams).

``torch.utils.tensorboard`` needs the ``tensorboard`` package (``pip install
'audiogate[tensorboard]'``); it is imported only when a run logs.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..config import Config
from ..core.runs import RunPaths
from ..errors import ConfigError
from ..reporting.plots import colorize
from ..reporting.predictions import Scored
from .trainer import Callback

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from .trainer import FitResult, Trainer

log = logging.getLogger(__name__)

SCALARS = {"loss/train": "train_loss", "loss/val": "val_loss", "loss/test": "test_loss",
           "macro_f1/train": "train_f1", "macro_f1/val": "val_f1", "macro_f1/test": "test_f1",
           "lr": "lr", "epoch_seconds": "seconds"}
"""TensorBoard tag -> field of the epoch's record in ``metrics.json``."""
EXAMPLES_PER_CLASS = 2
"""Validation spectrograms logged per class."""
IMAGE_SCALE = 3
"""Each spectrogram pixel is drawn as a square this many pixels wide."""


class TestResults(Protocol):
    """What the logger reads of the run's test report, once it is written (the callback that
    writes it comes before the logger)."""

    report: dict[str, Any] | None
    scored: Scored | None


def tensorboard_enabled(config: Config) -> bool:
    """Whether a run with ``config`` writes event files: ``on``, or ``auto`` with the
    ``tensorboard`` package installed. ``on`` without it is a :class:`ConfigError`."""
    if config.tensorboard == "off":
        return False
    found = importlib.util.find_spec("tensorboard") is not None
    if config.tensorboard == "on" and not found:
        raise ConfigError("config field 'tensorboard' is 'on' but the tensorboard package is "
                          "not installed: pip install 'audiogate[tensorboard]' (or set "
                          "tensorboard = \"off\")")
    return found


def final_metrics(test: dict[str, Any] | None, best_val_f1: float,
                  epochs: int) -> dict[str, float]:
    """The numbers the HParams dashboard sets beside the config: best validation macro-F1,
    epochs, and the test report's macro-F1, accuracy and (for a gate) FAR, FRR, EER and
    threshold; values that are missing or not finite are left out."""
    values: dict[str, Any] = {"epochs": epochs, "best_val_f1": best_val_f1 if epochs else None}
    if test:
        values.update(test_f1=test.get("macro_f1"), test_accuracy=test.get("accuracy"))
        gate = test.get("gate") or {}
        values.update({f"test_{k}": gate.get(k) for k in ("far", "frr", "eer")},
                      threshold=gate.get("threshold"))
    return {f"hparam/{k}": float(v) for k, v in values.items()
            if isinstance(v, int | float) and math.isfinite(v)}


class TensorBoardLogger(Callback):
    """Writes the run's event files. ``test``: the run's test report (:class:`TestResults`),
    whose verdicts give the precision-recall curves and whose report the final metrics (it
    must run before this callback)."""

    def __init__(self, run: RunPaths, *, test: TestResults | None = None) -> None:
        self.run, self.test = run, test
        self.writer: SummaryWriter | None = None

    def on_train_begin(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        done = trainer.state.epoch
        # a resumed run drops whatever a killed process logged after its last checkpoint
        self.writer = SummaryWriter(log_dir=str(self.run.tensorboard),
                                    purge_step=done + 1 if done else None)
        if not done:
            self._examples(trainer)

    def _examples(self, trainer: Trainer) -> None:
        """The first clean validation spectrograms of each class (what the network sees)."""
        assert self.writer is not None
        val = trainer.data.val
        for label, name in enumerate(trainer.classes):
            rows = np.flatnonzero(val.labels == label)[:EXAMPLES_PER_CLASS]
            for i, feats in enumerate(val.features(rows) if rows.size else ()):
                img = colorize(feats).repeat(IMAGE_SCALE, axis=0).repeat(IMAGE_SCALE, axis=1)
                self.writer.add_image(f"spectrogram/{name}/{i}", img, 0, dataformats="HWC")

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        assert self.writer is not None
        for tag, key in SCALARS.items():
            self.writer.add_scalar(tag, record[key], record["epoch"])
        self.writer.flush()

    def on_train_end(self, trainer: Trainer, result: FitResult) -> None:
        assert self.writer is not None
        try:
            self._final(trainer, result)
        except Exception:  # the run is saved; only part of its event files is missing
            log.exception("could not write the final TensorBoard summaries of %s",
                          self.run.root)
        finally:
            self.writer.close()

    def _final(self, trainer: Trainer, result: FitResult) -> None:
        """PR curves of the best model on the test split, and the HParams summary."""
        assert self.writer is not None
        scored = self.test.scored if self.test else None
        if scored is not None and scored.clips:
            probs = np.asarray([[p.probabilities[c] for c in trainer.classes]
                                for p in scored.predictions])
            for label, name in enumerate(trainer.classes):
                self.writer.add_pr_curve(f"pr_test/{name}", scored.y_true == label,
                                         probs[:, label], global_step=result.best_epoch)
        hparams = {k: v for k, v in trainer.config.to_dict().items()
                   if isinstance(v, bool | int | float | str)}
        metrics = final_metrics(self.test.report if self.test else None, result.best_val_f1,
                                result.epochs_done)
        # run_name ".": the HParams session is this run's own folder, beside its scalars
        self.writer.add_hparams(hparams, metrics, run_name=".",
                                global_step=result.best_epoch)
