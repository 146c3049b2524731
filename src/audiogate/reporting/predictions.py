"""Clips judged by a model, one verdict each: scoring a list of clips as ``predict`` does, and
the ``predictions.csv`` file that keeps the verdicts (``evaluate``'s, and the run's
``test_predictions.csv``) for reports.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.gate import Gate, Prediction
from ..core.tables import csv_text
from ..data.discover import Clip, Skipped
from ..errors import DataError
from ..files import write_text

BASE_COLUMNS = ("path", "true", "predicted", "confidence", "score")
PROB_PREFIX = "p_"
"""``p_<class>``: the probability of each class, after the base columns."""


@dataclass
class Scored:
    """Clips judged by a model: the usable ones with their verdicts, and the skipped ones."""

    clips: list[Clip]
    predictions: list[Prediction]
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def y_true(self) -> np.ndarray:
        return np.asarray([c.label for c in self.clips], dtype=np.int64)

    @property
    def y_pred(self) -> np.ndarray:
        return np.asarray([p.index for p in self.predictions], dtype=np.int64)

    def scores(self) -> np.ndarray:
        """A gate's ``P(positive)`` per clip ``[shape=(n,)]``."""
        return np.asarray([np.nan if p.score is None else p.score for p in self.predictions])


def score_clips(gate: Gate, clips: Sequence[Clip], *,
                progress: bool = False) -> Scored:
    """Judge every clip with ``gate`` (as ``predict`` does); unreadable ones are skipped."""
    results = gate.predict_many([c.path for c in clips], progress=progress)
    kept, preds, skipped = [], [], []
    for clip, r in zip(clips, results, strict=True):
        if r.index is None:
            skipped.append(Skipped(clip.path, r.error or "failed"))
        else:
            kept.append(clip)
            preds.append(r)
    return Scored(kept, preds, skipped)


def write_predictions(scored: Scored, classes: Sequence[str], path: Path) -> None:
    """``path,true,predicted,confidence,score,p_<class>...`` per judged clip (score: P(positive)
    of a gate, empty otherwise)."""
    rows = [[c.path, classes[c.label], p.label, f"{p.confidence:.4f}",
             "" if p.score is None else f"{p.score:.6f}",
             *(f"{p.probabilities[name]:.6f}" for name in classes)]
            for c, p in zip(scored.clips, scored.predictions, strict=True)]
    write_text(path, csv_text([*BASE_COLUMNS, *(PROB_PREFIX + c for c in classes)], rows))


@dataclass(frozen=True)
class Verdict:
    """One row of ``predictions.csv``. ``probabilities`` is empty in files written before
    audiogate kept them."""

    path: str
    true: str
    predicted: str
    confidence: float
    score: float | None
    probabilities: dict[str, float]

    @property
    def wrong(self) -> bool:
        return self.true != self.predicted

    @property
    def p_true(self) -> float | None:
        """The probability the model gave the true class."""
        return self.probabilities.get(self.true)


def _float(text: str | None) -> float | None:
    value = float(text) if text else None
    return value if value is None or math.isfinite(value) else None


def read_predictions(path: Path) -> list[Verdict]:
    """The rows of a file written by :func:`write_predictions`."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            probs = [c for c in reader.fieldnames or () if c.startswith(PROB_PREFIX)]
            return [Verdict(path=row["path"], true=row["true"], predicted=row["predicted"],
                            confidence=float(row["confidence"]), score=_float(row["score"]),
                            probabilities={c[len(PROB_PREFIX):]: float(row[c]) for c in probs})
                    for row in reader]
    except (OSError, KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read predictions file {path}: {exc}") from None


def worst_errors(verdicts: Sequence[Verdict], *, n: int,
                 threshold: float | None = None) -> list[Verdict]:
    """The ``n`` wrong verdicts the model was surest of. For a gate that decides by
    ``threshold`` on its score: the scores furthest on the wrong side of it; otherwise the
    lowest probability of the true class (the highest confidence where probabilities were
    not kept)."""
    def badness(v: Verdict) -> float:
        if threshold is not None and v.score is not None:
            return -abs(v.score - threshold)
        return v.p_true if v.p_true is not None else 1.0 - v.confidence

    wrong = sorted((v for v in verdicts if v.wrong), key=lambda v: (badness(v), v.path))
    return wrong[:max(n, 0)]
