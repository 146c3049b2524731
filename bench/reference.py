"""The specified pipeline, as the specification writes it: librosa per sample, every epoch.

``SpectrogramDataset.__getitem__`` does ``librosa.load(sr=16000)``, then (training only) random
noise / ``librosa.effects.pitch_shift`` / ``librosa.effects.time_stretch``, then
``librosa.feature.melspectrogram`` -> ``power_to_db(ref=np.max)`` -> pad/truncate to
``fixed_length`` frames -> per-sample z-score. A ``DataLoader`` with ``num_workers`` worker
processes feeds the same :class:`~audiogate.models.SimpleConvNet` that audiogate trains.

This is the baseline of ``bench/pipeline.py`` (speed) and ``bench/speech.py`` (accuracy:
:func:`fit` trains until validation macro-F1 stops improving and keeps the best epoch, as the
notebook does). It is kept honest, not slow on purpose: every librosa call uses its defaults,
and librosa's lazily compiled code is warmed up in the parent before the workers fork, so no
worker pays that one-time cost.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import librosa
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from audiogate.config import Config
from audiogate.models import ModelSpec
from audiogate.reporting.metrics import macro_f1

Z_EPS = 1e-9
"""The specification's ``S.std() + 1e-9``."""


class SpectrogramDataset(Dataset[tuple[torch.Tensor, int]]):
    """``(path, label)`` pairs -> ``([shape=(n_mels, fixed_length)]`` float32, label)``."""

    def __init__(self, pairs: Sequence[tuple[str, int]], *, config: Config, augment: bool,
                 seed: int = 0) -> None:
        self.pairs = list(pairs)
        self.config = config
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def _augment(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        if rng.random() < c.noise_p:
            snr_db = rng.uniform(c.noise_snr_min, c.noise_snr_max)
            rms = float(np.sqrt(np.mean(y**2)))
            y = y + rng.standard_normal(y.size).astype(np.float32) * rms * 10 ** (-snr_db / 20)
        if rng.random() < c.pitch_p:
            steps = rng.uniform(-c.pitch_semitones, c.pitch_semitones)
            y = librosa.effects.pitch_shift(y, sr=c.sr, n_steps=steps)
        if rng.random() < c.stretch_p:
            rate = np.exp(rng.uniform(np.log(c.stretch_min), np.log(c.stretch_max)))
            y = librosa.effects.time_stretch(y, rate=rate)
        return y

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        c = self.config
        path, label = self.pairs[index]
        y, _ = librosa.load(path, sr=c.sr)
        if self.augment:
            y = self._augment(y, np.random.default_rng([self.seed, self.epoch, index]))
        mel = librosa.feature.melspectrogram(y=y, sr=c.sr, n_fft=c.n_fft,
                                             hop_length=c.hop_length, win_length=c.win_length,
                                             n_mels=c.n_mels)
        spec = librosa.power_to_db(mel, ref=np.max)
        spec = librosa.util.fix_length(spec, size=c.fixed_length, axis=1,
                                       constant_values=float(spec.min()))
        spec = (spec - spec.mean()) / (spec.std() + Z_EPS)
        return torch.from_numpy(spec.astype(np.float32)), label


def warm_up(config: Config, path: str) -> None:
    """Run every librosa step once in this process, so forked workers start compiled."""
    data = SpectrogramDataset([(path, 0)], config=config, augment=False)
    data[0]
    y, _ = librosa.load(path, sr=config.sr)
    librosa.effects.pitch_shift(y, sr=config.sr, n_steps=1.0)
    librosa.effects.time_stretch(y, rate=1.1)


def loader(data: SpectrogramDataset, *, batch_size: int, workers: int, shuffle: bool,
           seed: int = 0) -> DataLoader[tuple[torch.Tensor, int]]:
    """A plain ``DataLoader``, as a user of the specification would write it."""
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      generator=torch.Generator().manual_seed(seed))


def train_epoch(net: nn.Module, batches: DataLoader[tuple[torch.Tensor, int]],
                optimizer: torch.optim.Optimizer) -> int:
    """One pass of the specification's training loop; returns the number of clips seen."""
    criterion = nn.CrossEntropyLoss()
    net.train()
    seen = 0
    for x, y in batches:
        loss = criterion(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
    return seen


def predict(net: nn.Module, batches: DataLoader[tuple[torch.Tensor, int]]) -> np.ndarray:
    """Class probabilities ``[shape=(n, n_classes)]``, in loader order."""
    net.eval()
    out = []
    with torch.no_grad():
        for x, _ in batches:
            out.append(torch.softmax(net(x), dim=1).numpy())
    return np.concatenate(out)


@dataclass
class Fitted:
    """How :func:`fit` ended: the network with its best-on-validation weights, the epoch
    they come from (1-based), the epochs run, and one ``{"epoch", "val_f1", "seconds"}``
    record per epoch."""

    net: nn.Module
    best_epoch: int
    epochs: int
    history: list[dict[str, float]]


def fit(train: Sequence[tuple[str, int]], val: Sequence[tuple[str, int]], *, config: Config,
        n_classes: int, workers: int,
        on_epoch: Callable[[dict[str, float]], None] | None = None) -> Fitted:
    """The notebook's training: Adam on :class:`SpectrogramDataset` batches, validation
    macro-F1 (argmax) after every epoch, the best epoch's weights kept, stopped after
    ``config.patience`` epochs without a gain (0: never) or ``config.max_epochs`` epochs.
    ``on_epoch`` is called with each epoch's record once its validation is done."""
    torch.manual_seed(config.seed)
    net = ModelSpec.of(config, n_classes=n_classes).build()
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    train_data = SpectrogramDataset(train, config=config, augment=config.augment,
                                    seed=config.seed)
    val_batches = loader(SpectrogramDataset(val, config=config, augment=False),
                         batch_size=config.batch_size, workers=workers, shuffle=False)
    val_labels = np.array([label for _, label in val])
    best_f1, best_epoch, best_state = -1.0, 0, copy.deepcopy(net.state_dict())
    history: list[dict[str, float]] = []
    epoch = 0
    while epoch < config.max_epochs and (not config.patience
                                         or epoch - best_epoch < config.patience):
        epoch += 1
        began = time.perf_counter()
        train_data.epoch = epoch
        train_epoch(net, loader(train_data, batch_size=config.batch_size, workers=workers,
                                shuffle=True, seed=config.seed + epoch), optimizer)
        pred = predict(net, val_batches).argmax(axis=1)
        f1 = macro_f1(val_labels, pred, n_classes=n_classes)
        history.append({"epoch": epoch, "val_f1": f1, "seconds": time.perf_counter() - began})
        if on_epoch is not None:
            on_epoch(history[-1])
        if f1 > best_f1:
            best_f1, best_epoch, best_state = f1, epoch, copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    return Fitted(net=net, best_epoch=best_epoch, epochs=epoch, history=history)


def scores(net: nn.Module, pairs: Sequence[tuple[str, int]], *, config: Config,
           workers: int) -> np.ndarray:
    """Class probabilities ``[shape=(len(pairs), n_classes)]`` of clean clips, in order."""
    data = SpectrogramDataset(pairs, config=config, augment=False)
    return predict(net, loader(data, batch_size=config.batch_size, workers=workers,
                               shuffle=False))
