"""The windows that judge each validation and test clip every epoch, as ``predict`` judges
the clip (:class:`ClipWindows`), with their clean features kept in memory within a budget."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from ..core.decision import clip_windows, judged_samples
from ..data.decode import ClipSet
from ..features.frontend import LogMel
from .device import to_device

EVAL_BATCH = 256
"""Windows per forward pass when evaluating."""
WINDOW_BUDGET_BYTES = 512 * 2**20
"""Most bytes of window features :class:`ClipWindows` keeps in memory for the validation
set (and as much for the test set); past it, each evaluation computes them again from the
cache, a batch at a time."""

@dataclass(frozen=True, eq=False)
class ClipWindows:
    """The windows that judge each clip of a set, as ``predict`` judges it: ``owner`` int64
    ``[shape=(n_windows,)]``, the clip of each window (ascending), and ``starts``, the sample
    each window starts at. :meth:`feats` gives their clean features: from ``stored`` when
    :meth:`of` kept them (within its budget), else computed from the cache when asked."""

    clips: ClipSet
    cached: np.ndarray
    """The clips' cached features, memory-mapped (:meth:`ClipSet.feature_matrix`)."""
    owner: np.ndarray
    starts: np.ndarray
    single: np.ndarray
    """Per clip: it fits the model window, so its cached features are its one window."""
    frontend: LogMel
    device: torch.device
    stored: torch.Tensor | None = None

    @classmethod
    def of(cls, clips: ClipSet, *, frontend: LogMel, max_clip_s: float,
           device: torch.device, budget_bytes: int) -> ClipWindows:
        """A clip that fits the model window is its cached features; a longer one (over its
        first ``max_clip_s`` seconds) is every half window plus one at its end
        (:func:`~audiogate.core.decision.clip_windows`), from the cached samples. A cache of
        features only (neither ``augment`` nor ``random_crop``) gives first windows only.
        When some clip has several windows, the features of all windows are computed here
        and kept if they take at most ``budget_bytes``."""
        cfg = frontend.cfg
        lengths = np.minimum(clips.lengths, judged_samples(
            window=cfg.n_samples, sr=cfg.sr, max_clip_s=max_clip_s))
        if not clips.cache.spec.n_keep:
            lengths = np.minimum(lengths, cfg.n_samples)
        starts = [clip_windows(n=int(n), window=cfg.n_samples) for n in lengths]
        counts = np.asarray([len(w) for w in starts], dtype=np.int64)
        cached = clips.feature_matrix()
        windows = cls(clips=clips, cached=cached,
                      owner=np.repeat(np.arange(len(clips), dtype=np.int64), counts),
                      starts=np.concatenate([*starts, np.zeros(0, np.int64)]).astype(np.int64),
                      single=counts == 1, frontend=frontend, device=device)
        if windows.single.all():  # the memory map itself: nothing to compute or hold
            return dataclasses.replace(windows, stored=torch.from_numpy(cached))
        if len(windows.owner) * 4 * cfg.n_mels * cfg.fixed_length > budget_bytes:
            return windows
        return dataclasses.replace(windows, stored=windows.compute(np.arange(len(windows.owner))))

    def feats(self, rows: np.ndarray) -> torch.Tensor:
        """Clean features of the windows ``rows``, ``[shape=(len(rows), n_mels,
        fixed_length)]`` on the CPU."""
        return self.stored[rows] if self.stored is not None else self.compute(rows)

    def compute(self, rows: np.ndarray) -> torch.Tensor:
        """:meth:`feats` from the cache: the cached features of one-window clips, the
        front end on the cached samples of the others, :data:`EVAL_BATCH` windows at a time."""
        cfg = self.frontend.cfg
        out = torch.empty((len(rows), cfg.n_mels, cfg.fixed_length))
        owners = self.owner[rows]
        one = self.single[owners]
        if one.any():
            out[np.flatnonzero(one)] = torch.from_numpy(self.cached[owners[one]])
        many = np.flatnonzero(~one)
        with torch.no_grad():
            for i in range(0, len(many), EVAL_BATCH):
                part = many[i:i + EVAL_BATCH]
                waves = self.clips.waves(owners[part], starts=self.starts[rows[part]],
                                         span=cfg.n_samples)
                out[part] = self.frontend(to_device(waves, self.device)).cpu()
        return out
