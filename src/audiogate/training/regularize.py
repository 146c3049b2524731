"""Training-time regularisers on feature batches, and the learning-rate schedule.

* :class:`SpecAugment` (Park et al., 2019): zero (the z-scored mean) random bands of mel
  channels and random stretches of frames;
* :func:`mixup` (Zhang et al., 2018): train on convex mixtures of pairs of clips and of their
  labels;
* :func:`lr_factor`: linear warm-up, then constant, cosine decay, or one-cycle.

All randomness comes from an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError

SCHEDULES = ("none", "cosine", "onecycle")
ONECYCLE_START = 0.04
"""One-cycle starts (and cosine ends) at this fraction of the peak learning rate."""


@dataclass(frozen=True)
class SpecAugment:
    """``freq_masks`` bands of up to ``freq_width`` mel channels and ``time_masks`` stretches
    of up to ``time_width`` frames per clip, each width drawn uniformly from 0..max."""

    freq_masks: int = 0
    freq_width: int = 8
    time_masks: int = 0
    time_width: int = 20

    def __post_init__(self) -> None:
        for name in ("freq_masks", "freq_width", "time_masks", "time_width"):
            if getattr(self, name) < 0:
                raise ConfigError(f"SpecAugment {name} must be >= 0")

    @property
    def active(self) -> bool:
        return (self.freq_masks > 0 and self.freq_width > 0) or (
            self.time_masks > 0 and self.time_width > 0)

    def mask(self, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
        """Boolean mask ``[shape=shape]`` (batch, n_mels, frames), True where zeroed."""
        n, n_mels, frames = shape
        out = np.zeros(shape, dtype=bool)
        for axis, count, width, size in ((1, self.freq_masks, self.freq_width, n_mels),
                                         (2, self.time_masks, self.time_width, frames)):
            for _ in range(count):
                widths = rng.integers(0, min(width, size) + 1, size=n)
                starts = (rng.random(n) * (size - widths + 1)).astype(np.int64)
                idx = np.arange(size)[None, :]
                band = (idx >= starts[:, None]) & (idx < (starts + widths)[:, None])
                out |= band[:, :, None] if axis == 1 else band[:, None, :]
        return out

    def per_clip(self, feats: torch.Tensor, *, seeds: np.ndarray) -> torch.Tensor:
        """Like :meth:`__call__`, but clip ``i``'s masks come from its own seed ``seeds[i]``,
        whatever batch (or training process) it is in."""
        if not self.active or len(feats) == 0:
            return feats
        shape = (1, *feats.shape[1:])
        mask = np.concatenate([self.mask(shape, np.random.default_rng(s))
                               for s in np.asarray(seeds, np.uint64).tolist()])
        return feats.masked_fill(torch.from_numpy(mask).to(feats.device), 0.0)

    def __call__(self, feats: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """``feats`` ``[shape=(batch, n_mels, frames)]`` with the masked cells set to 0."""
        if not self.active:
            return feats
        mask = torch.from_numpy(self.mask(tuple(feats.shape), rng))  # type: ignore[arg-type]
        return feats.masked_fill(mask, 0.0)


@dataclass(frozen=True)
class Mix:
    """One mixup draw for a batch: clip ``i`` becomes ``lam * x[i] + (1 - lam) *
    x[partner[i]]`` and its loss is weighted the same way."""

    partner: np.ndarray
    lam: float


def mixup(feats: torch.Tensor, *, alpha: float,
          rng: np.random.Generator) -> tuple[torch.Tensor, Mix | None]:
    """Mix a batch with a permutation of itself, ``lam ~ Beta(alpha, alpha)``; ``alpha = 0``
    returns the batch unchanged and no mix."""
    if alpha <= 0 or len(feats) < 2:
        return feats, None
    lam = float(rng.beta(alpha, alpha))
    partner = rng.permutation(len(feats))
    mixed = lam * feats + (1.0 - lam) * feats[torch.from_numpy(partner)]
    return mixed, Mix(partner=partner, lam=lam)


def mixed_loss(criterion: torch.nn.Module, logits: torch.Tensor, target: torch.Tensor,
               mix: Mix | None) -> torch.Tensor:
    """``criterion`` on the targets, or on both targets of a mix, weighted by ``lam``."""
    if mix is None:
        return criterion(logits, target)
    other = target[torch.from_numpy(mix.partner)]
    return mix.lam * criterion(logits, target) + (1.0 - mix.lam) * criterion(logits, other)


def lr_factor(step: int, *, schedule: str, total: int, warmup: int) -> float:
    """Multiplier of the peak learning rate at optimizer ``step`` (0-based) of ``total``
    (0: unknown, the run goes on until stopped).

    Linear warm-up over ``warmup`` steps (from ``ONECYCLE_START`` for one-cycle), then
    ``none``: 1; ``cosine``: half a cosine down to ``ONECYCLE_START``; ``onecycle``: warm-up
    to the peak at 30% of the steps (or ``warmup``, if set) and cosine down to 0.
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"lr_schedule must be one of {SCHEDULES}, got {schedule!r}")
    if total <= 0:  # no known length (run until Ctrl+C): warm up, then stay at the peak
        return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    if schedule == "onecycle":
        peak = warmup if warmup > 0 else max(1, round(0.3 * total))
        if step < peak:
            return ONECYCLE_START + (1 - ONECYCLE_START) * step / peak
        progress = min(1.0, (step - peak) / max(1, total - peak))
        return 0.5 * (1 + math.cos(math.pi * progress))
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "none":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return ONECYCLE_START + (1 - ONECYCLE_START) * 0.5 * (1 + math.cos(math.pi * progress))
