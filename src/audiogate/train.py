"""Training: decode once, balance, split, then epochs until a stop condition.

Stops: ``max_epochs`` reached, early stopping on validation macro-F1 (``patience``), or
SIGINT/SIGTERM (Ctrl+C): the epoch in progress is dropped at the next batch and everything of
the finished epochs is already on disk. A second Ctrl+C aborts at once; atomic writes keep
every file whole even then. The model is chosen on validation only; the test split is
monitored per epoch (as the specification asks) and reported once for the chosen model.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import plots
from .augment import AugmentedFrontEnd
from .cache import CacheSpec, FeatureCache
from .checkpoint import ensure_compatible, load_checkpoint, save_checkpoint
from .clips import ClipSet, cache_clips
from .config import Config
from .data import (
    Discovery,
    Split,
    balance,
    class_weights,
    discover,
    read_split,
    require_all_classes,
    stratified_split,
    write_skipped,
    write_split,
)
from .errors import CheckpointError, DataError
from .features import LogMel
from .metrics import classification_report, macro_f1
from .model import SimpleConvNet, build_net
from .prefetch import prefetch, split_threads
from .runs import RunPaths, new_run, write_json

log = logging.getLogger(__name__)

EVAL_BATCH = 256
"""Clips per forward pass when evaluating."""


@dataclass
class TrainResult:
    """Where the run is and how it ended."""

    run: RunPaths
    best_epoch: int
    best_val_f1: float
    epochs_done: int
    stop_reason: str
    test_report: dict[str, Any] | None


class StopFlag:
    """Turns the first SIGINT/SIGTERM into a request to stop at the next safe point."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = f"interrupted ({name})"
        log.warning("%s: stopping at the next safe point; finished epochs are saved "
                    "(Ctrl+C again to abort now)", name)


@contextlib.contextmanager
def graceful_stop() -> Iterator[StopFlag]:
    flag = StopFlag()
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in old:
            signal.signal(s, flag)
    except ValueError:  # not the main thread: cannot install handlers
        old = {}
    try:
        yield flag
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@dataclass
class _Data:
    classes: tuple[str, ...]
    train: ClipSet
    val: ClipSet
    test: ClipSet

    @classmethod
    def of(cls, classes: tuple[str, ...], arrays: ClipSet, split: Split) -> _Data:
        return cls(classes, arrays.subset(split.train), arrays.subset(split.val),
                   arrays.subset(split.test))


def _n_keep(config: Config) -> int:
    """Samples stored per clip: enough for the slowest-reading (fastest) time stretch."""
    feats = config.features()
    rate = config.stretch_max if config.augment and config.stretch_p > 0 else 1.0
    return math.ceil(feats.n_samples * rate) + feats.hop_length


def _open_cache(config: Config) -> FeatureCache:
    """The feature cache for this config: waveforms are kept only for augmentation."""
    spec = CacheSpec(features=config.features(), n_keep=_n_keep(config) if config.augment else 0)
    return FeatureCache(config.cache_path(), spec, temporary=not config.cache)


def _prepare_new(config: Config, found: Discovery, run: RunPaths, progress: bool) -> _Data:
    arrays, bad = cache_clips(found.clips, cache=_open_cache(config), workers=config.workers,
                              progress=progress)
    skipped = found.skipped + bad
    write_skipped(skipped, run.skipped)
    if skipped:
        log.warning("skipped %d file(s); reasons in %s", len(skipped), run.skipped)
        for s in skipped[:20]:
            log.warning("  skipped %s: %s", s.path, s.reason)
    usable = {name: int((arrays.labels == i).sum()) for i, name in enumerate(found.classes)}
    require_all_classes(usable, where=config.data, skipped=skipped)
    rng = np.random.default_rng(config.seed)
    kept = balance(arrays.clips, strategy=config.balance, rng=rng)
    split = stratified_split(kept, test_size=config.test_size, val_size=config.val_size,
                             seed=config.seed)
    write_split(split, run.split, classes=found.classes)
    log.info("classes %s, usable %s; split train %d / val %d / test %d", found.classes, usable,
             len(split.train), len(split.val), len(split.test))
    return _Data.of(found.classes, arrays, split)


def _prepare_resume(config: Config, run: RunPaths, classes: tuple[str, ...],
                    progress: bool) -> _Data:
    split: Split = read_split(run.split)
    every = split.train + split.val + split.test
    arrays, bad = cache_clips(every, cache=_open_cache(config), workers=config.workers,
                              progress=progress)
    if bad:
        listed = ", ".join(f"{s.path} ({s.reason})" for s in bad[:5])
        raise DataError(f"cannot resume: {len(bad)} file(s) of the saved split are no longer "
                        f"usable: {listed}")
    return _Data.of(classes, arrays, split)


def _evaluate(net: SimpleConvNet, feats: torch.Tensor, labels: np.ndarray,
              criterion: nn.Module) -> tuple[float, np.ndarray]:
    """Mean loss and predicted labels on precomputed features."""
    net.eval()
    losses, preds = [], []
    with torch.no_grad():
        for i in range(0, len(labels), EVAL_BATCH):
            logits = net(feats[i:i + EVAL_BATCH])
            target = torch.from_numpy(labels[i:i + EVAL_BATCH])
            losses.append(float(criterion(logits, target)) * len(target))
            preds.append(logits.argmax(1).numpy())
    return sum(losses) / max(len(labels), 1), np.concatenate(preds)


class _Trainer:
    """One run's mutable state: model, optimizer, RNG, history."""

    def __init__(self, config: Config, run: RunPaths, data: _Data, progress: bool) -> None:
        self.config, self.run, self.data, self.progress = config, run, data, progress
        self.frontend = LogMel(config.features())
        self.augment = AugmentedFrontEnd(self.frontend, config.augmentation())
        torch.manual_seed(config.seed)
        self.net = build_net(config.features(), n_classes=len(data.classes),
                             dropout=config.dropout)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr,
                                          weight_decay=config.weight_decay)
        weights = None
        if config.balance == "weighted":
            weights = torch.from_numpy(class_weights(data.train.labels,
                                                     n_classes=len(data.classes)))
        self.criterion = nn.CrossEntropyLoss(weight=weights)
        self.rng = np.random.default_rng(config.seed)
        self.history: list[dict[str, Any]] = []
        self.best_epoch, self.best_val_f1, self.bad_epochs = 0, -1.0, 0
        # clean features, (n, n_mels, fixed_length), memory-mapped from the cache
        self.val_feats = torch.from_numpy(data.val.feature_matrix())
        self.test_feats = torch.from_numpy(data.test.feature_matrix())

    # ----- state for resume -----
    def state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(),
                "numpy_rng": self.rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "history": self.history, "best_epoch": self.best_epoch,
                "best_val_f1": self.best_val_f1, "bad_epochs": self.bad_epochs}

    def restore(self, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        self.net.load_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        self.history = list(state["history"])
        self.best_epoch, self.best_val_f1 = state["best_epoch"], state["best_val_f1"]
        self.bad_epochs = state["bad_epochs"]

    # ----- one epoch -----
    def _batches(self, order: np.ndarray) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """``(rows, features)`` per training batch, in ``order``: augmented from the cached
        waveforms, or the cached clean features."""
        train, bs = self.data.train, self.config.batch_size
        for start in range(0, len(order), bs):
            rows = np.sort(order[start:start + bs])
            if self.config.augment:
                feats = self.augment(torch.from_numpy(train.waves(rows)),
                                     lengths=torch.from_numpy(train.lengths[rows]), rng=self.rng)
            else:
                feats = torch.from_numpy(train.features(rows))
            yield rows, feats

    def train_epoch(self, epoch: int, stop: StopFlag) -> tuple[float, float] | None:
        """Mean loss and macro-F1 on the (augmented) training data; None if interrupted.

        The next batch is read and featurised in a background thread while this one trains.
        """
        train, bs = self.data.train, self.config.batch_size
        order = self.rng.permutation(len(train.labels))
        self.net.train()
        total, preds, targets = 0.0, [], []
        with split_threads(), contextlib.closing(prefetch(self._batches(order))) as batches:
            bar = tqdm(batches, total=math.ceil(len(order) / bs), desc=f"epoch {epoch}",
                       unit="batch", disable=not self.progress, leave=False)
            for rows, feats in bar:
                if stop.reason:
                    bar.close()
                    return None
                target = torch.from_numpy(train.labels[rows])
                logits = self.net(feats)
                loss = self.criterion(logits, target)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                total += loss.item() * len(rows)
                preds.append(logits.argmax(1).detach().numpy())
                targets.append(train.labels[rows])
                bar.set_postfix(loss=f"{loss.item():.4f}")
            bar.close()
        f1 = macro_f1(np.concatenate(targets), np.concatenate(preds),
                      n_classes=len(self.data.classes))
        return total / len(order), f1

    def finish_epoch(self, epoch: int, train_loss: float, train_f1: float,
                     seconds: float) -> None:
        """Evaluate, record, checkpoint and plot one finished epoch."""
        n_classes = len(self.data.classes)
        val_loss, val_pred = _evaluate(self.net, self.val_feats, self.data.val.labels,
                                       self.criterion)
        test_loss, test_pred = _evaluate(self.net, self.test_feats, self.data.test.labels,
                                         self.criterion)
        row = {"epoch": epoch, "train_loss": train_loss, "train_f1": train_f1,
               "val_loss": val_loss, "val_f1": macro_f1(self.data.val.labels, val_pred,
                                                        n_classes=n_classes),
               "test_loss": test_loss, "test_f1": macro_f1(self.data.test.labels, test_pred,
                                                           n_classes=n_classes),
               "seconds": seconds}
        self.history.append(row)
        improved = row["val_f1"] > self.best_val_f1
        if improved:
            self.best_epoch, self.best_val_f1, self.bad_epochs = epoch, row["val_f1"], 0
        else:
            self.bad_epochs += 1
        targets = [self.run.epoch(epoch)] if self.config.keep_epoch_checkpoints else []
        targets += [self.run.best] if improved else []
        for path in [*targets, self.run.last]:
            save_checkpoint(path, net=self.net, config=self.config, classes=self.data.classes,
                            epoch=epoch, metrics=row,
                            train_state=self.state() if path == self.run.last else None)
        write_json(self.run.metrics, {"best_epoch": self.best_epoch,
                                      "best_val_f1": self.best_val_f1,
                                      "classes": list(self.data.classes),
                                      "epochs": self.history})
        plots.plot_curves(self.history, self.run.curves)
        log.info("epoch %d  loss %.4f  train-F1 %.4f  val-F1 %.4f  test-F1 %.4f  (%.1fs)%s",
                 epoch, train_loss, train_f1, row["val_f1"], row["test_f1"], seconds,
                 "  * best" if improved else "")

    def stop_reason(self, epoch: int) -> str | None:
        c = self.config
        if c.max_epochs and epoch >= c.max_epochs:
            return f"reached max_epochs={c.max_epochs}"
        if c.patience and self.bad_epochs >= c.patience:
            return f"early stop: no val-F1 gain for {c.patience} epochs"
        return None

    def final_test(self) -> dict[str, Any] | None:
        """Report of the best checkpoint on the test split (written once, at the end)."""
        if not self.run.best.exists():
            return None
        best = load_checkpoint(self.run.best)
        self.net.load_state_dict(best.weights)
        _, pred = _evaluate(self.net, self.test_feats, self.data.test.labels, self.criterion)
        report = classification_report(self.data.test.labels, pred, classes=self.data.classes)
        report["epoch"] = best.epoch
        write_json(self.run.test_report, report)
        plots.plot_confusion(report["confusion"], self.data.classes, self.run.confusion,
                             title=f"Test set, best epoch {best.epoch}")
        return report


def train(config: Config, *, progress: bool = True) -> TrainResult:
    """Train a new run as described by ``config``."""
    config = replace(config, data=str(Path(config.data).resolve()))
    found = discover(config.data)  # before the run folder: a bad --data leaves no trace
    run = new_run(config)
    log.info("run folder: %s", run.root)
    data = _prepare_new(config, found, run, progress)
    return _loop(_Trainer(config, run, data, progress), start_epoch=1)


def resume(run_dir: str | Path, *, max_epochs: int | None = None, patience: int | None = None,
           progress: bool = True) -> TrainResult:
    """Continue a run from ``run_dir/models/last.pt`` with its optimizer, RNG and history."""
    run = RunPaths(Path(run_dir))
    last = load_checkpoint(run.last)
    if last.train_state is None:
        raise CheckpointError(f"{run.last} holds no training state; cannot resume")
    config = replace(last.config,
                     max_epochs=last.config.max_epochs if max_epochs is None else max_epochs,
                     patience=last.config.patience if patience is None else patience)
    data = _prepare_resume(config, run, last.classes, progress)
    trainer = _Trainer(config, run, data, progress)
    ensure_compatible(last, features=config.features(), classes=data.classes)
    trainer.restore(last.weights, last.train_state)
    log.info("resuming %s after epoch %d (best so far: epoch %d, val-F1 %.4f)", run.root,
             last.epoch, trainer.best_epoch, trainer.best_val_f1)
    return _loop(trainer, start_epoch=last.epoch + 1)


def _loop(trainer: _Trainer, *, start_epoch: int) -> TrainResult:
    epoch, reason = start_epoch - 1, trainer.stop_reason(start_epoch - 1)
    with graceful_stop() as stop:
        while reason is None:
            began = time.perf_counter()
            done = trainer.train_epoch(epoch + 1, stop)
            if done is None:
                break
            epoch += 1
            trainer.finish_epoch(epoch, *done, seconds=time.perf_counter() - began)
            reason = stop.reason or trainer.stop_reason(epoch)
        reason = reason or stop.reason or "stopped"
        log.info("training stopped: %s; best epoch %d (val-F1 %.4f)", reason,
                 trainer.best_epoch, trainer.best_val_f1)
        report = trainer.final_test()
    return TrainResult(run=trainer.run, best_epoch=trainer.best_epoch,
                       best_val_f1=trainer.best_val_f1, epochs_done=len(trainer.history),
                       stop_reason=reason, test_report=report)

