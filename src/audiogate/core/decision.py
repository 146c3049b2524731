"""From class probabilities to a verdict: the gate's threshold, and pooling over a clip's
windows. Pure functions of arrays, shared by every backend, ``scan`` and the service.

A model with two classes is a *gate*: its score is ``P(positive)`` (the ``allowed`` class in
the specification's layout, else the class with label 1), and a clip is positive when the
score reaches the threshold chosen on validation (the operating point). Without a threshold,
and for more than two classes, the verdict is the most probable class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

POOLING = ("mean", "max")
"""How the window probabilities of a clip longer than the model window become one."""
POSITIVE_NAME = "allowed"
"""The positive class of a gate, when the classes have it."""


def positive_index(classes: tuple[str, ...]) -> int | None:
    """Label of a gate's positive class (``allowed``, else label 1); None unless two classes."""
    if len(classes) != 2:
        return None
    return classes.index(POSITIVE_NAME) if POSITIVE_NAME in classes else 1


@dataclass(frozen=True)
class Decision:
    """How probabilities ``[shape=(n, n_classes)]`` become labels.

    ``threshold``: the gate's threshold on ``P(positive)`` (None: argmax); ``pooling``:
    ``mean`` or ``max`` of a clip's window probabilities (``max`` takes the window with the
    highest positive score for a gate, the most confident window otherwise).
    """

    classes: tuple[str, ...]
    threshold: float | None = None
    pooling: str = "mean"

    def __post_init__(self) -> None:
        if self.pooling not in POOLING:
            raise ConfigError(f"clip pooling must be one of {POOLING}, got {self.pooling!r}")
        if self.threshold is not None:
            if self.positive is None:
                raise ConfigError(f"a threshold needs a two-class model; this one has "
                                  f"{len(self.classes)} classes")
            if not 0.0 <= self.threshold <= 1.0:
                raise ConfigError(f"threshold must be in [0, 1], got {self.threshold}")

    @property
    def positive(self) -> int | None:
        return positive_index(self.classes)

    def labels(self, probs: np.ndarray) -> np.ndarray:
        """Label per row: ``P(positive) >= threshold`` for a gate with a threshold, else
        argmax. ``[shape=(n, n_classes)]`` -> int64 ``[shape=(n,)]``."""
        probs = np.asarray(probs)
        pos = self.positive
        if self.threshold is None or pos is None:
            return probs.argmax(axis=1).astype(np.int64)
        accept = probs[:, pos] >= self.threshold
        return np.where(accept, pos, 1 - pos).astype(np.int64)

    def pool(self, windows: np.ndarray) -> np.ndarray:
        """One clip's window probabilities ``[shape=(k, n_classes)]`` -> pooled
        ``[shape=(n_classes,)]``."""
        if self.pooling == "mean" or len(windows) == 1:
            return np.asarray(windows.mean(axis=0), dtype=np.float32)
        pos = self.positive
        key = windows[:, pos] if pos is not None else windows.max(axis=1)
        return np.asarray(windows[int(np.argmax(key))], dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        pos = self.positive
        return {"threshold": self.threshold, "pooling": self.pooling,
                "positive": None if pos is None else self.classes[pos]}


def window_starts(*, n: int, window: int, hop: int) -> np.ndarray:
    """Start samples of the windows over ``n`` samples: ``0, hop, 2*hop, ...`` while a window
    fits, plus one window ending at ``n`` if the last one stops short. ``[0]`` if
    ``n <= window``. Returns int64 ``[shape=(n_windows,)]``."""
    if window <= 0 or hop <= 0:
        raise ConfigError(f"window and hop must be > 0 samples, got {window} and {hop}")
    if n <= window:
        return np.zeros(1, np.int64)
    starts = np.arange(0, n - window + 1, hop, dtype=np.int64)
    if starts[-1] + window < n:
        starts = np.append(starts, n - window)
    return starts


def judged_samples(*, window: int, sr: int, max_clip_s: float) -> int:
    """How many of a clip's first samples judge it: ``max_clip_s`` seconds at ``sr`` Hz, and
    at least one model ``window``."""
    return max(window, round(max_clip_s * sr))


def clip_windows(*, n: int, window: int) -> np.ndarray:
    """The windows that judge a whole clip of ``n`` samples: every half window, plus one
    aligned to the end (:func:`window_starts`)."""
    return window_starts(n=n, window=window, hop=max(1, window // 2))
