"""The training loop: epochs of augmented mini-batches, validation, and events for callbacks.

The loop owns the model, the optimizer, the random state and the record of finished epochs
(:class:`TrainState`), and chooses the best epoch on validation macro-F1 only, judging
each clip over all its windows as ``predict`` does (:class:`ClipWindows`). It writes no
file and knows no format: checkpoints, ``metrics.json``, curves, logs, early stopping and the
final test report are :class:`Callback` objects that listen to
its events. Stops: ``max_epochs``, a callback's :meth:`Trainer.request_stop` (e.g. early
stopping), or SIGINT/SIGTERM (the epoch in progress is dropped at the next batch).

Data-parallel (:mod:`.distributed`): every process draws the same global batch order and
trains on its own slice of each global batch of ``batch_size`` clips, through
DistributedDataParallel; each clip's loss is weighted so that the gradient averaged over the
processes is the one-process gradient of the whole batch, and the metrics are computed on the
predictions of every process. Every random choice made for a clip (augmentation, dropout)
(crop, augmentation, SpecAugment masks, dropout) comes from a seed of ``(seed, epoch, clip)``
(:func:`clip_seed_array`), so the per-epoch results do not depend on the number of processes.
Exceptions: mixup pairs clips within each process's share of a batch, and a network's own
batch-norm statistics (on the CPU) and ``Dropout2d`` are per process. The processes agree at
every batch boundary whether to stop, and at every epoch end on the stop reason; only rank 0
should be given callbacks that write.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import Config
from ..core.decision import Decision
from ..data.prepare import PreparedData, window_samples
from ..data.split import balanced_draw, balanced_size, class_weights
from ..features.augment import AugmentedFrontEnd
from ..features.frontend import LogMel
from ..models import ModelSpec
from ..models.dropout import clip_seeds
from ..reporting.metrics import epoch_scores, macro_f1
from .device import Precision, resolve_device, to_cpu, to_device
from .distributed import Dist
from .prefetch import prefetch, split_threads
from .regularize import Mix, SpecAugment, lr_factor, mixed_loss, mixup
from .signals import StopFlag, graceful_stop
from .windows import EVAL_BATCH, WINDOW_BUDGET_BYTES, ClipWindows

AUGMENT_STREAM, DROPOUT_STREAM, CROP_STREAM, SPECAUG_STREAM, MIXUP_STREAM = range(5)
"""Independent random streams (:func:`clip_seed_array`)."""


def clip_seed_array(*, seed: int, epoch: int, rows: np.ndarray, stream: int) -> np.ndarray:
    """One 64-bit seed per training clip ``rows`` ``[shape=(k,)]`` for ``(seed, epoch, row,
    stream)``: what a clip's augmentation or dropout draws from in that epoch, whichever batch
    or process it is in."""
    return np.asarray([np.random.SeedSequence([seed, epoch, int(r), stream]).generate_state(
        1, np.uint64)[0] for r in rows], dtype=np.uint64)


@dataclass(frozen=True)
class Batch:
    """This process's part of one global training batch.

    ``rows`` (training-set rows) and ``feats`` ``[shape=(len(rows), n_mels, fixed_length)]``
    (on the device) are this process's clips, ``mix`` their mixup draw (None without);
    ``size`` and ``weight`` are those of the global batch (clips, and the sum of the clips'
    class weights: the loss denominator).
    """

    rows: np.ndarray
    feats: torch.Tensor
    mix: Mix | None
    size: int
    weight: float


SELECTED_F1 = {"f1": "val_f1", "f1_tuned": "val_f1_tuned", "auc": "val_f1_tuned",
               "loss": "val_f1_tuned"}
"""The validation macro-F1 a run reports as its best (``best_val_f1``) for each
``select_on``: at argmax when it chooses on that, else at the best threshold, which is what
the operating point will make of the chosen epoch."""


def selection_score(row: dict[str, Any], select_on: str) -> tuple[float, float]:
    """How ``select_on`` ranks an epoch's record (higher is better; NaN ranks last): its
    measure, then, for epochs equal on it (a small validation set's F1 takes few values), the
    lower validation loss, or for ``loss`` the higher F1 at the best threshold."""
    def finite(value: float) -> float:
        return float(value) if math.isfinite(value) else -math.inf

    if select_on == "loss":
        return finite(-row["val_loss"]), finite(row["val_f1_tuned"])
    measure = {"f1": "val_f1", "f1_tuned": "val_f1_tuned", "auc": "val_auc"}[select_on]
    return finite(row[measure]), finite(-row["val_loss"])


def _best_score(train_state: dict[str, Any]) -> tuple[float, float]:
    """The saved :attr:`TrainState.best_score`; a run saved before select_on chose on
    val_f1 alone."""
    saved = train_state.get("best_score")
    if saved is None:
        return float(train_state["best_val_f1"]), -math.inf
    first, second = saved
    return float(first), float(second)


@dataclass
class TrainState:
    """What the loop has done so far: one record per finished epoch and the best epoch on
    validation. Saved in ``last.pt`` so a resumed run goes on exactly where it stopped."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_f1: float = -1.0
    """The validation macro-F1 of the best epoch, as :data:`SELECTED_F1` of ``select_on``
    names it."""
    best_score: tuple[float, float] = (-math.inf, -math.inf)
    """The best epoch's :func:`selection_score`."""
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


class Trainer:
    """One run's model, optimizer, random state and loop.

    ``data`` gives the clips; ``callbacks`` listen to the loop's events. Everything random
    (initialisation, shuffling, augmentation) derives from ``config.seed``.
    """

    def __init__(self, config: Config, data: PreparedData, *,
                 callbacks: Sequence[Callback] = (), progress: bool = True,
                 dist: Dist | None = None) -> None:
        self.config, self.data, self.progress = config, data, progress
        self.dist = dist or Dist()
        self.device = resolve_device(config.device, local_rank=self.dist.local_rank,
                                     local_world_size=self.dist.local_world_size)
        self.precision = Precision(config.precision, self.device)
        self.classes = data.classes
        self.frontend = LogMel(config.features()).to(self.device)
        self.augment = AugmentedFrontEnd(self.frontend, config.augmentation())
        torch.manual_seed(config.seed)
        self.spec = ModelSpec.of(config, n_classes=len(data.classes))
        self.net = self.spec.build().to(self.device)
        """The network itself (what checkpoints store); :attr:`model` trains it."""
        self.model = self.dist.wrap(self.net, self.device,
                                    sync_batchnorm=config.sync_batchnorm)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr,
                                          weight_decay=config.weight_decay)
        self.class_weight = np.ones(len(data.classes), np.float32)
        if config.balance == "weighted":
            self.class_weight = class_weights(data.train.labels, n_classes=len(data.classes))
        weights = torch.from_numpy(self.class_weight).to(self.device)
        self.criterion = nn.CrossEntropyLoss(weight=weights, reduction="none",
                                             label_smoothing=config.label_smoothing)
        """Per-clip training losses, times the clip's class weight."""
        self.specaug = SpecAugment(freq_masks=config.specaug_freq_masks,
                                   freq_width=config.specaug_freq_width,
                                   time_masks=config.specaug_time_masks,
                                   time_width=config.specaug_time_width)
        self.scheduler = self._scheduler(steps_per_epoch=math.ceil(
            self.epoch_size / config.batch_size))
        self.rng = np.random.default_rng(config.seed)
        self.state = TrainState()
        self.callbacks = CallbackList(callbacks)
        self._stop_request: str | None = None
        self.decision = Decision(tuple(data.classes), positive_class=data.positive,
                                 pooling=config.clip_pooling)
        """How a clip's window probabilities are pooled (argmax, no threshold: the gate's
        threshold is chosen after training)."""
        self.val_windows, self.test_windows = (
            ClipWindows.of(part, frontend=self.frontend, max_clip_s=config.max_clip_s,
                           device=self.device, budget_bytes=WINDOW_BUDGET_BYTES)
            for part in (data.val, data.test))

    @property
    def epoch_size(self) -> int:
        """Training clips per epoch: all of them, or one balanced draw's with
        ``balance="resample"``."""
        labels = self.data.train.labels
        return balanced_size(labels) if self.config.balance == "resample" else len(labels)

    def _scheduler(self, *, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR | None:
        """Per-step learning-rate schedule (:func:`~.regularize.lr_factor`); None when the
        rate is constant (no schedule, no warm-up). Steps are global batches: the same in
        every process."""
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
        return {"optimizer": to_cpu(self.optimizer.state_dict()),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "grad_scaler": self.precision.state_dict(),
                "numpy_rng": self.rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "history": self.state.history, "best_epoch": self.state.best_epoch,
                "best_val_f1": self.state.best_val_f1,
                "best_score": list(self.state.best_score),
                "bad_epochs": self.state.bad_epochs}

    def restore(self, weights: dict[str, torch.Tensor], train_state: dict[str, Any]) -> None:
        """Continue from a :meth:`train_state` and the weights saved with it."""
        self.net.load_state_dict(weights)
        self.optimizer.load_state_dict(train_state["optimizer"])
        if self.scheduler is not None and train_state.get("scheduler"):
            self.scheduler.load_state_dict(train_state["scheduler"])
        self.precision.load_state_dict(train_state.get("grad_scaler", {}))
        self.rng.bit_generator.state = train_state["numpy_rng"]
        torch.set_rng_state(train_state["torch_rng"])
        self.state = TrainState(history=list(train_state["history"]),
                                best_epoch=train_state["best_epoch"],
                                best_val_f1=train_state["best_val_f1"],
                                # runs saved before select_on chose on val_f1
                                best_score=_best_score(train_state),
                                bad_epochs=train_state["bad_epochs"])

    # ----- one epoch -----
    def _seeds(self, epoch: int, rows: np.ndarray, stream: int) -> np.ndarray:
        return clip_seed_array(seed=self.config.seed, epoch=epoch, rows=rows, stream=stream)

    def crops(self, rows: np.ndarray, *, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Training windows of clips ``rows``: float32 ``[shape=(len(rows), window_samples)]``
        and their real lengths. With ``random_crop``, each clip longer than the model window
        starts at a random sample (uniform over the positions that keep the window inside the
        stored clip; drawn from the clip's own seed), else at 0."""
        train, span = self.data.train, window_samples(self.config)
        lengths, stored = train.lengths[rows], train.cache.spec.n_keep
        room = np.clip(np.minimum(lengths, stored) - self.frontend.cfg.n_samples, 0, None)
        draws = np.asarray([np.random.default_rng(s).random() for s in
                            self._seeds(epoch, rows, CROP_STREAM).tolist()], np.float64)
        starts = ((draws * (room + 1)).astype(np.int64) if self.config.random_crop
                  else np.zeros(len(rows), np.int64))
        # only the windows are read from the cache, not the whole stored clips
        return (train.waves(rows, starts=starts, span=span),
                np.clip(lengths - starts, 0, span))

    def batches(self, order: np.ndarray, *, epoch: int) -> Generator[Batch, None, None]:
        """This process's :class:`Batch` of each global batch of ``order``, in order
        (:meth:`make_batch`)."""
        for start in range(0, len(order), self.config.batch_size):
            yield self.make_batch(order[start:start + self.config.batch_size], start=start,
                                  epoch=epoch)

    def make_batch(self, batch: np.ndarray, *, start: int, epoch: int) -> Batch:
        """This process's :class:`Batch` of the global batch ``batch`` (training-set rows; it
        starts at position ``start`` of the epoch's order): features from (cropped) cached
        waveforms, augmented when ``augment`` is on, or the cached clean features of each
        clip's first window when neither crops nor augmentation are on; then SpecAugment and
        mixup when configured. Each clip draws from its own seeds."""
        train = self.data.train
        batch = np.sort(batch)
        rows = self.dist.shard(batch)
        if self.config.augment:
            waves, lengths = self.crops(rows, epoch=epoch)
            feats = self.augment(to_device(waves, self.device),
                                 lengths=torch.from_numpy(lengths),
                                 seeds=self._seeds(epoch, rows, AUGMENT_STREAM))
        elif self.config.random_crop:
            feats = self.frontend(to_device(self.crops(rows, epoch=epoch)[0], self.device))
        else:
            feats = to_device(train.features(rows), self.device)
        feats = self.specaug.per_clip(feats, seeds=self._seeds(epoch, rows, SPECAUG_STREAM))
        # mixup pairs clips of this process's share; lam and pairs from the batch's seed
        mix_rng = np.random.default_rng([self.config.seed, epoch, start, MIXUP_STREAM,
                                         self.dist.rank])
        feats, mix = mixup(feats, alpha=self.config.mixup_alpha, rng=mix_rng)
        return Batch(rows=rows, feats=feats, mix=mix, size=len(batch),
                     weight=float(self.class_weight[train.labels[batch]].sum()))

    def train_epoch(self, epoch: int, stop: StopFlag) -> tuple[float, float] | None:
        """Mean loss and macro-F1 on the (augmented) training data; None if interrupted.

        With ``prefetch``, the next batch is read and featurised in a background thread while
        this one trains.
        """
        train, bs = self.data.train, self.config.batch_size
        order = (balanced_draw(train.labels, rng=self.rng) if self.config.balance == "resample"
                 else self.rng.permutation(len(train.labels)))
        self.model.train()
        total = torch.zeros((), device=self.device,  # MPS has no float64
                            dtype=torch.float32 if self.device.type == "mps" else torch.float64)
        preds: list[torch.Tensor] = []
        targets: list[np.ndarray] = []
        batches = self.batches(order, epoch=epoch)
        ahead = prefetch(batches) if self.config.prefetch else batches
        with (split_threads() if self.config.prefetch else contextlib.nullcontext()), \
                contextlib.closing(ahead):
            bar = tqdm(ahead, total=math.ceil(len(order) / bs), desc=f"epoch {epoch}",
                       unit="batch", disable=not self.progress, leave=False)
            for b in bar:
                if self.dist.any(stop.reason is not None):  # every process stops here
                    stop.reason = stop.reason or "interrupted (another process was stopped)"
                    bar.close()
                    return None
                target = to_device(train.labels[b.rows], self.device)
                seeds = self._seeds(epoch, b.rows, DROPOUT_STREAM)
                with self.precision.autocast(), clip_seeds(seeds):
                    logits = self.model(b.feats)
                # this process's share of the global batch's mean loss; DDP averages the
                # gradients over the processes, hence the world size
                share = mixed_loss(self.criterion, logits.float(), target, b.mix).sum() / b.weight
                self.precision.step(share * self.dist.world_size, self.optimizer)
                if self.scheduler is not None:
                    self.scheduler.step()
                total += share.detach() * b.size
                preds.append(logits.detach().argmax(1))
                targets.append(train.labels[b.rows])
                if self.progress:
                    bar.set_postfix(loss=f"{share.item() * self.dist.world_size:.4f}")
            bar.close()
        parts = self.dist.gather((float(total), torch.cat(preds).cpu().numpy(),
                                  np.concatenate(targets)))
        f1 = macro_f1(np.concatenate([t for _, _, t in parts]),
                      np.concatenate([p for _, p, _ in parts]), n_classes=len(self.classes))
        return sum(loss for loss, _, _ in parts) / len(order), f1

    def evaluate(self, windows: ClipWindows, labels: np.ndarray, *,
                 shard: bool = False) -> tuple[float, np.ndarray]:
        """Mean loss (class-weighted, as in training) and pooled probabilities
        ``[shape=(n_clips, n_classes)]`` of the network on the clips of ``windows``, each
        judged as ``predict`` judges it: its windows' probabilities pooled by
        ``clip_pooling``. The loss is the negative log of the pooled probability of the
        clip's class (cross entropy for a one-window clip).

        ``shard``: every process evaluates its contiguous slice of the clips and the results
        are gathered (call it on every process then); otherwise this process evaluates all.
        """
        clips = self.dist.shard(np.arange(len(labels))) if shard else np.arange(len(labels))
        rows = np.flatnonzero(np.isin(windows.owner, clips))
        net = self.net.eval()
        probs = [np.zeros((0, len(self.classes)), np.float32)]
        with torch.no_grad():
            for i in range(0, len(rows), EVAL_BATCH):
                part = rows[i:i + EVAL_BATCH]
                with self.precision.autocast():
                    logits = net(windows.feats(part).to(self.device))
                probs.append(torch.softmax(logits.float(), 1).cpu().numpy())
        window_probs, owner = np.concatenate(probs), windows.owner[rows]
        per_clip = np.split(window_probs, np.flatnonzero(np.diff(owner)) + 1) if len(clips) else []
        pooled = np.stack([self.decision.pool(w) for w in per_clip]) if per_clip else np.zeros(
            (0, len(self.classes)), np.float32)
        truth = labels[clips]
        loss = float(-(self.class_weight[truth] * np.log(np.maximum(
            pooled[np.arange(len(clips)), truth], np.finfo(np.float32).tiny))).sum())
        parts = self.dist.gather((loss, pooled)) if shard else [(loss, pooled)]
        weight = float(self.class_weight[labels].sum())
        return sum(p[0] for p in parts) / max(weight, 1e-12), np.concatenate(
            [p[1] for p in parts]).astype(np.float32)

    def record_epoch(self, epoch: int, train_loss: float, train_f1: float,
                     seconds: float) -> dict[str, Any]:
        """Evaluate validation and test (monitor only), append the epoch's record and update
        the best epoch, chosen on validation alone by ``select_on``.

        Recorded for both (:func:`~audiogate.reporting.metrics.epoch_scores`): the loss,
        macro-F1 at argmax (``*_f1``), macro-F1 at the best threshold on validation
        (``*_f1_tuned``; the test's at the validation's threshold, as the operating point will
        set it) and ROC-AUC (``*_auc``)."""
        pos = self.decision.positive
        val_loss, val_probs = self.evaluate(self.val_windows, self.data.val.labels, shard=True)
        test_loss, test_probs = self.evaluate(self.test_windows, self.data.test.labels,
                                              shard=True)
        val = epoch_scores(self.data.val.labels, val_probs, positive=pos)
        test = epoch_scores(self.data.test.labels, test_probs, positive=pos,
                            threshold=val["threshold"])
        row = {"epoch": epoch, "train_loss": train_loss, "train_f1": train_f1,
               "val_loss": val_loss, "val_f1": val["f1"], "val_f1_tuned": val["f1_tuned"],
               "val_auc": val["auc"], "test_loss": test_loss, "test_f1": test["f1"],
               "test_f1_tuned": test["f1_tuned"], "test_auc": test["auc"],
               "lr": float(self.optimizer.param_groups[0]["lr"]), "seconds": seconds}
        state = self.state
        state.history.append(row)
        score = selection_score(row, self.config.select_on)
        state.improved = score > state.best_score
        if state.improved:
            state.best_epoch, state.best_score, state.bad_epochs = epoch, score, 0
            state.best_val_f1 = row[SELECTED_F1[self.config.select_on]]
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
            reason = self.dist.first(self._limit_reason())
            while reason is None:
                epoch = self.state.epoch + 1
                self.callbacks.on_epoch_begin(self, epoch)
                began = time.perf_counter()
                done = self.train_epoch(epoch, stop)
                if done is None:
                    break
                row = self.record_epoch(epoch, *done, seconds=time.perf_counter() - began)
                self.callbacks.on_epoch_end(self, row)
                reason = self.dist.first(stop.reason or self._limit_reason())
            reason = reason or stop.reason or "stopped"
            self.callbacks.on_stop(self, reason)
            result = FitResult(best_epoch=self.state.best_epoch,
                               best_val_f1=self.state.best_val_f1,
                               epochs_done=len(self.state.history), stop_reason=reason)
            self.callbacks.on_train_end(self, result)
        return result
