"""The training loop: epochs of augmented mini-batches, validation, and events for callbacks.

The loop owns the model, the optimizer, the random state and the record of finished epochs
(:class:`TrainState`), and chooses the best epoch on validation macro-F1 only. It writes no
file and knows no format: checkpoints, ``metrics.json``, curves, logs, early stopping and the
final test report are :class:`~audiogate.training.callbacks.Callback` objects that listen to
its events. Stops: ``max_epochs``, a callback's :meth:`Trainer.request_stop` (e.g. early
stopping), or SIGINT/SIGTERM (the epoch in progress is dropped at the next batch).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import Config
from ..data.prepare import PreparedData, window_samples
from ..data.split import class_weights
from ..features.augment import AugmentedFrontEnd
from ..features.frontend import LogMel
from ..models import ModelSpec
from ..reporting.metrics import macro_f1
from .callbacks import Callback, CallbackList
from .prefetch import prefetch, split_threads
from .regularize import Mix, SpecAugment, lr_factor, mixed_loss, mixup
from .signals import StopFlag, graceful_stop

EVAL_BATCH = 256
"""Clips per forward pass when evaluating."""


@dataclass
class TrainState:
    """What the loop has done so far: one record per finished epoch and the best epoch on
    validation. Saved in ``last.pt`` so a resumed run goes on exactly where it stopped."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_f1: float = -1.0
    bad_epochs: int = 0
    improved: bool = False
    """Whether the last finished epoch is the new best (not saved)."""

    @property
    def epoch(self) -> int:
        """The last finished epoch (0 before the first)."""
        return int(self.history[-1]["epoch"]) if self.history else 0


@dataclass(frozen=True)
class FitResult:
    """How :meth:`Trainer.fit` ended."""

    best_epoch: int
    best_val_f1: float
    epochs_done: int
    stop_reason: str


class Trainer:
    """One run's model, optimizer, random state and loop.

    ``data`` gives the clips; ``callbacks`` listen to the loop's events. Everything random
    (initialisation, shuffling, augmentation) derives from ``config.seed``.
    """

    def __init__(self, config: Config, data: PreparedData, *,
                 callbacks: Sequence[Callback] = (), progress: bool = True) -> None:
        self.config, self.data, self.progress = config, data, progress
        self.classes = data.classes
        self.frontend = LogMel(config.features())
        self.augment = AugmentedFrontEnd(self.frontend, config.augmentation())
        torch.manual_seed(config.seed)
        self.spec = ModelSpec.of(config, n_classes=len(data.classes))
        self.net = self.spec.build()
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr,
                                          weight_decay=config.weight_decay)
        weights = None
        if config.balance == "weighted":
            weights = torch.from_numpy(class_weights(data.train.labels,
                                                     n_classes=len(data.classes)))
        self.criterion = nn.CrossEntropyLoss(weight=weights,
                                             label_smoothing=config.label_smoothing)
        self.eval_criterion = nn.CrossEntropyLoss(weight=weights)
        self.specaug = SpecAugment(freq_masks=config.specaug_freq_masks,
                                   freq_width=config.specaug_freq_width,
                                   time_masks=config.specaug_time_masks,
                                   time_width=config.specaug_time_width)
        self.scheduler = self._scheduler(steps_per_epoch=math.ceil(len(data.train)
                                                                   / config.batch_size))
        self.rng = np.random.default_rng(config.seed)
        self.state = TrainState()
        self.callbacks = CallbackList(callbacks)
        self._stop_request: str | None = None
        # clean features, (n, n_mels, fixed_length), memory-mapped from the cache
        self.val_feats = torch.from_numpy(data.val.feature_matrix())
        self.test_feats = torch.from_numpy(data.test.feature_matrix())

    def _scheduler(self, *, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR | None:
        """Per-step learning-rate schedule (:func:`~.regularize.lr_factor`); None when the
        rate is constant (no schedule, no warm-up)."""
        c = self.config
        warmup = round(c.warmup_epochs * steps_per_epoch)
        if c.lr_schedule == "none" and warmup == 0:
            return None
        total = c.max_epochs * steps_per_epoch
        return torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, schedule=c.lr_schedule, total=total,
                                                   warmup=warmup))

    # ----- control -----
    def request_stop(self, reason: str) -> None:
        """Ask the loop to stop after the current epoch (callbacks call this)."""
        if self._stop_request is None:
            self._stop_request = reason

    # ----- state for resume -----
    def train_state(self) -> dict[str, Any]:
        """Optimizer, RNG and progress, as plain data for ``last.pt``."""
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "numpy_rng": self.rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "history": self.state.history, "best_epoch": self.state.best_epoch,
                "best_val_f1": self.state.best_val_f1, "bad_epochs": self.state.bad_epochs}

    def restore(self, weights: dict[str, torch.Tensor], train_state: dict[str, Any]) -> None:
        """Continue from a :meth:`train_state` and the weights saved with it."""
        self.net.load_state_dict(weights)
        self.optimizer.load_state_dict(train_state["optimizer"])
        if self.scheduler is not None and train_state.get("scheduler"):
            self.scheduler.load_state_dict(train_state["scheduler"])
        self.rng.bit_generator.state = train_state["numpy_rng"]
        torch.set_rng_state(train_state["torch_rng"])
        self.state = TrainState(history=list(train_state["history"]),
                                best_epoch=train_state["best_epoch"],
                                best_val_f1=train_state["best_val_f1"],
                                bad_epochs=train_state["bad_epochs"])

    # ----- one epoch -----
    def crops(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Training windows of clips ``rows``: float32 ``[shape=(len(rows), window_samples)]``
        and their real lengths. With ``random_crop``, each clip longer than the model window
        starts at a random sample (uniform over the positions that keep the window inside the
        stored clip), else at 0."""
        train, span = self.data.train, window_samples(self.config)
        waves, lengths = train.waves(rows), train.lengths[rows]
        n_samples = self.frontend.cfg.n_samples
        room = np.clip(np.minimum(lengths, waves.shape[1]) - n_samples, 0, None)
        starts = ((self.rng.random(len(rows)) * (room + 1)).astype(np.int64)
                  if self.config.random_crop else np.zeros(len(rows), np.int64))
        out = np.zeros((len(rows), span), np.float32)
        for i, s in enumerate(starts.tolist()):
            piece = waves[i, s:s + span]
            out[i, :piece.size] = piece
        return out, np.clip(lengths - starts, 0, span)

    def batches(self, order: np.ndarray) -> Iterator[tuple[np.ndarray, torch.Tensor, Mix | None]]:
        """``(rows, features, mix)`` per training batch, in ``order``: features from (cropped)
        cached waveforms, augmented when ``augment`` is on, or the cached clean features of
        each clip's first window when neither crops nor augmentation are on; then SpecAugment
        and mixup when configured."""
        train, bs = self.data.train, self.config.batch_size
        for start in range(0, len(order), bs):
            rows = np.sort(order[start:start + bs])
            if self.config.augment:
                waves, lengths = self.crops(rows)
                feats = self.augment(torch.from_numpy(waves), lengths=torch.from_numpy(lengths),
                                     rng=self.rng)
            elif self.config.random_crop:
                feats = self.frontend(torch.from_numpy(self.crops(rows)[0]))
            else:
                feats = torch.from_numpy(train.features(rows))
            feats, mix = mixup(self.specaug(feats, self.rng), alpha=self.config.mixup_alpha,
                               rng=self.rng)
            yield rows, feats, mix

    def train_epoch(self, epoch: int, stop: StopFlag) -> tuple[float, float] | None:
        """Mean loss and macro-F1 on the (augmented) training data; None if interrupted.

        The next batch is read and featurised in a background thread while this one trains.
        """
        train, bs = self.data.train, self.config.batch_size
        order = self.rng.permutation(len(train.labels))
        self.net.train()
        total, preds, targets = 0.0, [], []
        with split_threads(), contextlib.closing(prefetch(self.batches(order))) as batches:
            bar = tqdm(batches, total=math.ceil(len(order) / bs), desc=f"epoch {epoch}",
                       unit="batch", disable=not self.progress, leave=False)
            for rows, feats, mix in bar:
                if stop.reason:
                    bar.close()
                    return None
                target = torch.from_numpy(train.labels[rows])
                logits = self.net(feats)
                loss = mixed_loss(self.criterion, logits, target, mix)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                if self.scheduler is not None:
                    self.scheduler.step()
                total += loss.item() * len(rows)
                preds.append(logits.argmax(1).detach().numpy())
                targets.append(train.labels[rows])
                bar.set_postfix(loss=f"{loss.item():.4f}")
            bar.close()
        f1 = macro_f1(np.concatenate(targets), np.concatenate(preds),
                      n_classes=len(self.classes))
        return total / len(order), f1

    def evaluate(self, feats: torch.Tensor, labels: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean loss and predicted labels of the network on precomputed features
        ``[shape=(n, n_mels, fixed_length)]``."""
        self.net.eval()
        losses, preds = [], []
        with torch.no_grad():
            for i in range(0, len(labels), EVAL_BATCH):
                logits = self.net(feats[i:i + EVAL_BATCH])
                target = torch.from_numpy(labels[i:i + EVAL_BATCH])
                losses.append(float(self.eval_criterion(logits, target)) * len(target))
                preds.append(logits.argmax(1).numpy())
        return sum(losses) / max(len(labels), 1), np.concatenate(preds)

    def record_epoch(self, epoch: int, train_loss: float, train_f1: float,
                     seconds: float) -> dict[str, Any]:
        """Evaluate validation and test (monitor only), append the epoch's record and update
        the best epoch, chosen on validation macro-F1 alone."""
        n_classes = len(self.classes)
        val_loss, val_pred = self.evaluate(self.val_feats, self.data.val.labels)
        test_loss, test_pred = self.evaluate(self.test_feats, self.data.test.labels)
        row = {"epoch": epoch, "train_loss": train_loss, "train_f1": train_f1,
               "val_loss": val_loss, "val_f1": macro_f1(self.data.val.labels, val_pred,
                                                        n_classes=n_classes),
               "test_loss": test_loss, "test_f1": macro_f1(self.data.test.labels, test_pred,
                                                           n_classes=n_classes),
               "lr": float(self.optimizer.param_groups[0]["lr"]), "seconds": seconds}
        state = self.state
        state.history.append(row)
        state.improved = row["val_f1"] > state.best_val_f1
        if state.improved:
            state.best_epoch, state.best_val_f1, state.bad_epochs = epoch, row["val_f1"], 0
        else:
            state.bad_epochs += 1
        return row

    def _limit_reason(self) -> str | None:
        c = self.config
        if c.max_epochs and self.state.epoch >= c.max_epochs:
            return f"reached max_epochs={c.max_epochs}"
        return self._stop_request

    # ----- the loop -----
    def fit(self) -> FitResult:
        """Train from the epoch after :attr:`state` until a stop; emit the events."""
        self._stop_request = None
        with graceful_stop() as stop:
            self.callbacks.on_train_begin(self)
            reason = self._limit_reason()
            while reason is None:
                epoch = self.state.epoch + 1
                self.callbacks.on_epoch_begin(self, epoch)
                began = time.perf_counter()
                done = self.train_epoch(epoch, stop)
                if done is None:
                    break
                row = self.record_epoch(epoch, *done, seconds=time.perf_counter() - began)
                self.callbacks.on_epoch_end(self, row)
                reason = stop.reason or self._limit_reason()
            reason = reason or stop.reason or "stopped"
            self.callbacks.on_stop(self, reason)
            result = FitResult(best_epoch=self.state.best_epoch,
                               best_val_f1=self.state.best_val_f1,
                               epochs_done=len(self.state.history), stop_reason=reason)
            self.callbacks.on_train_end(self, result)
        return result
