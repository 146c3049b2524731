"""From class probabilities to a verdict: the gate's threshold, and pooling over a clip's
windows. Pure functions of arrays, shared by every backend, ``scan`` and the service.

A model with two classes is a *gate*: its score is ``P(positive)``, the probability of the
class it accepts, and a clip is accepted when the score reaches the threshold chosen on
validation (the operating point). The positive class is given, never guessed from the names:
a new gate's comes from ``Config.positive_class`` (:func:`choose_positive`: the folder named
``allowed`` when there is one, and a two-class data set without one must name it), a stored
gate's from its checkpoint or export (:func:`stored_positive`). Without a threshold, and for
more than two classes, the verdict is the most probable class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

POOLING = ("mean", "max")
"""How the window probabilities of a clip longer than the model window become one."""
POSITIVE_NAME = "allowed"
"""The class a two-class gate accepts when ``positive_class`` is not set (the specification's
layout, and every voice gate)."""


def positive_index(classes: Sequence[str]) -> int | None:
    """The rule of gates made before ``positive_class`` existed: ``allowed`` when one of two
    classes, else label 1 (the later name in sorted order); None unless two classes. Only a
    checkpoint or export that stores no positive class is read by it (:func:`stored_positive`)."""
    if len(classes) != 2:
        return None
    return list(classes).index(POSITIVE_NAME) if POSITIVE_NAME in classes else 1


def choose_positive(classes: Sequence[str], chosen: str = "") -> str | None:
    """The class a new gate over ``classes`` accepts, ``chosen`` being
    ``Config.positive_class``: ``chosen`` when set, else ``allowed`` when it is one of the two
    classes; None for more than two classes (``chosen`` must be empty then).

    Raises :class:`ConfigError` naming the setting and the classes for a two-class data set
    with neither (the sorted-name rule of old made ``accept/`` + ``reject/`` accept
    ``reject``), and for a ``chosen`` that is not one of them.
    """
    names = ", ".join(repr(c) for c in classes)
    if len(classes) != 2:
        if chosen:
            raise ConfigError(f"config field 'positive_class' must be empty for a model of "
                              f"{len(classes)} classes ({names}): only a two-class gate "
                              f"accepts one class; got {chosen!r}")
        return None
    if chosen:
        if chosen not in classes:
            raise ConfigError(f"config field 'positive_class' is {chosen!r}, which is not one "
                              f"of the two classes {names}")
        return chosen
    if POSITIVE_NAME in classes:
        return POSITIVE_NAME
    raise ConfigError(f"the data has two classes, {names}, and neither is named "
                      f"{POSITIVE_NAME!r}: say which one the gate accepts with config field "
                      f"'positive_class' (--positive-class NAME, or positive_class = \"NAME\" "
                      "in the config file)")


def stored_positive(classes: Sequence[str], *, chosen: str = "",
                    gate: Mapping[str, Any] | None = None) -> str | None:
    """The class a stored gate accepts: its operating point's ``positive``, else ``chosen``
    (its config's ``positive_class``), else the rule of gates made before either was stored
    (:func:`positive_index`); None unless two classes."""
    if len(classes) != 2:
        return None
    if gate and gate.get("positive") in classes:
        return str(gate["positive"])
    if chosen in classes:
        return chosen
    return classes[positive_index(classes) or 0]


@dataclass(frozen=True)
class Decision:
    """How probabilities ``[shape=(n, n_classes)]`` become labels.

    ``positive_class``: the class a two-class gate accepts (None: not a gate, the most
    probable class wins); ``threshold``: the gate's threshold on ``P(positive)`` (None:
    argmax); ``pooling``: ``mean`` or ``max`` of a clip's window probabilities (``max`` takes
    the window with the highest positive score for a gate, the most confident window
    otherwise).
    """

    classes: tuple[str, ...]
    positive_class: str | None = None
    threshold: float | None = None
    pooling: str = "mean"

    def __post_init__(self) -> None:
        if self.pooling not in POOLING:
            raise ConfigError(f"clip pooling must be one of {POOLING}, got {self.pooling!r}")
        if self.positive_class is not None and (len(self.classes) != 2
                                                or self.positive_class not in self.classes):
            raise ConfigError(f"a gate's positive class must be one of its two classes; got "
                              f"{self.positive_class!r} for classes {list(self.classes)}")
        if self.threshold is not None:
            if self.positive is None:
                raise ConfigError(f"a threshold needs a two-class gate that names the class "
                                  f"it accepts; this model has {len(self.classes)} classes"
                                  + (" and names none" if len(self.classes) == 2 else ""))
            if not 0.0 <= self.threshold <= 1.0:
                raise ConfigError(f"threshold must be in [0, 1], got {self.threshold}")

    @property
    def positive(self) -> int | None:
        """Label of the positive class (None: not a gate)."""
        return None if self.positive_class is None else self.classes.index(self.positive_class)

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
        return {"threshold": self.threshold, "pooling": self.pooling,
                "positive": self.positive_class}


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
