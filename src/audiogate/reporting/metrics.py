"""Classification and gate metrics: pure functions of label and score arrays.

A *gate* is a two-class model judged on one score per clip, ``P(positive)`` (positive =
``allowed``): a clip is accepted when ``score >= threshold``. The false-accept rate (FAR) is
the fraction of negative clips accepted, the false-reject rate (FRR) the fraction of positive
clips rejected; the equal error rate (EER) is where the two meet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from ..config import parse_operating_point

OPERATING_POINT_RULES = ("f1", "eer", "far=", "frr=")
"""How a gate's threshold is chosen on validation: best F1, EER, or a target FAR or FRR
(``"far=0.01"``, ``"frr=0.05"``)."""


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, *, n_classes: int) -> float:
    """Macro-averaged F1 over all ``n_classes`` labels (absent classes count as 0)."""
    if len(y_true) == 0:
        return float("nan")
    return float(f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro",
                          zero_division=0))


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, *,
                          classes: Sequence[str]) -> dict[str, Any]:
    """Macro-F1, accuracy, per-class precision/recall/F1/support and the confusion matrix.

    ``confusion[i][j]`` counts clips of true class ``i`` predicted as ``j``.
    """
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    return {
        "n": len(y_true),
        "macro_f1": macro_f1(y_true, y_pred, n_classes=len(classes)),
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else float("nan"),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(classes)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": list(classes),
    }


def _binary(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{y.size} labels but {p.size} scores")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("gate labels must be 0 (negative) or 1 (positive)")
    return y, p


def error_rates(y_true: np.ndarray, scores: np.ndarray, *,
                threshold: float) -> tuple[float, float]:
    """``(FAR, FRR)`` when clips with ``score >= threshold`` are accepted (NaN for a class
    with no clip)."""
    y, p = _binary(y_true, scores)
    accept = p >= threshold
    far = float(accept[y == 0].mean()) if (y == 0).any() else math.nan
    frr = float((~accept[y == 1]).mean()) if (y == 1).any() else math.nan
    return far, frr


def _sweep(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every distinct threshold (each score, and one above the largest) with its FAR and
    FRR, thresholds ascending (FAR falls, FRR rises)."""
    thresholds = np.unique(np.append(p, np.nextafter(p.max(initial=0.0), np.inf)))
    neg, pos = np.sort(p[y == 0]), np.sort(p[y == 1])
    far = 1.0 - np.searchsorted(neg, thresholds, side="left") / max(neg.size, 1)
    frr = np.searchsorted(pos, thresholds, side="left") / max(pos.size, 1)
    return thresholds, far, frr


def _middle(thresholds: np.ndarray, first: int, last: int) -> float:
    """A threshold inside the range where indices ``first..last`` of the sweep give the same
    (best) result: every ``t`` in ``(thresholds[first - 1], thresholds[last]]`` does, and the
    middle of that range moves least with the next data (a maximum-margin choice)."""
    low = thresholds[first - 1] if first > 0 else thresholds[first]
    return float((low + thresholds[last]) / 2.0)


def _run_around(ok: np.ndarray, i: int) -> tuple[int, int]:
    """The run of consecutive True values of ``ok`` that contains index ``i``."""
    first, last = i, i
    while first > 0 and ok[first - 1]:
        first -= 1
    while last + 1 < len(ok) and ok[last + 1]:
        last += 1
    return first, last


def _need_both(y: np.ndarray) -> None:
    if not ((y == 0).any() and (y == 1).any()):
        raise ValueError("a gate metric needs clips of both classes")


def equal_error_rate(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """``(EER, threshold)``: the threshold where FAR and FRR are closest, and their mean
    there. ``y_true``: 1 = positive (allowed); ``scores``: higher = more positive."""
    y, p = _binary(y_true, scores)
    _need_both(y)
    thresholds, far, frr = _sweep(y, p)
    i = int(np.argmin(np.abs(far - frr)))
    return float((far[i] + frr[i]) / 2.0), _middle(thresholds, i, i)


def threshold_at_far(y_true: np.ndarray, scores: np.ndarray, *, far: float) -> float:
    """A threshold of the lowest range whose false-accept rate is at most ``far`` (so the FRR
    is as low as that FAR allows), in the middle of that range."""
    y, p = _binary(y_true, scores)
    _need_both(y)
    thresholds, fars, _ = _sweep(y, p)
    i = int(np.flatnonzero(fars <= far)[0])
    return _middle(thresholds, i, i)


def threshold_at_frr(y_true: np.ndarray, scores: np.ndarray, *, frr: float) -> float:
    """A threshold of the highest range whose false-reject rate is at most ``frr`` (so the FAR
    is as low as that FRR allows), in the middle of that range."""
    y, p = _binary(y_true, scores)
    _need_both(y)
    thresholds, _, frrs = _sweep(y, p)
    i = int(np.flatnonzero(frrs <= frr)[-1])
    return _middle(thresholds, i, i)


def best_f1_threshold(y_true: np.ndarray, scores: np.ndarray) -> float:
    """A threshold with the best macro-F1: the middle of the range of thresholds that reach it
    (the widest such range when there are several)."""
    y, p = _binary(y_true, scores)
    _need_both(y)
    thresholds, far, frr = _sweep(y, p)
    n_pos, n_neg = float((y == 1).sum()), float((y == 0).sum())
    tp, fn = n_pos * (1.0 - frr), n_pos * frr
    fp, tn = n_neg * far, n_neg * (1.0 - far)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1_pos = np.nan_to_num(2 * tp / (2 * tp + fp + fn))
        f1_neg = np.nan_to_num(2 * tn / (2 * tn + fn + fp))
    f1s = (f1_pos + f1_neg) / 2.0
    ok = f1s >= f1s.max() - 1e-12
    runs = {_run_around(ok, int(i)) for i in np.flatnonzero(ok)}
    first, last = max(runs, key=lambda r: (thresholds[r[1]] - (thresholds[r[0] - 1]
                                                               if r[0] else thresholds[r[0]]),
                                           -r[0]))
    return _middle(thresholds, first, last)


def choose_threshold(y_true: np.ndarray, scores: np.ndarray, *, rule: str) -> float:
    """The decision threshold on ``scores`` that ``rule`` (:func:`parse_operating_point`)
    picks on these (validation) labels."""
    kind, target = parse_operating_point(rule)
    if kind == "f1":
        return best_f1_threshold(y_true, scores)
    if kind == "eer":
        return equal_error_rate(y_true, scores)[1]
    rate = 0.0 if target is None else target
    if kind == "far":
        return threshold_at_far(y_true, scores, far=rate)
    return threshold_at_frr(y_true, scores, frr=rate)


def gate_report(y_true: np.ndarray, scores: np.ndarray, *, threshold: float) -> dict[str, Any]:
    """ROC-AUC, PR-AUC (average precision), EER (and its threshold), and FAR/FRR at
    ``threshold``; NaN where a class is missing."""
    y, p = _binary(y_true, scores)
    far, frr = error_rates(y, p, threshold=threshold)
    out: dict[str, Any] = {"threshold": float(threshold), "far": far, "frr": frr,
                           "roc_auc": math.nan, "pr_auc": math.nan, "eer": math.nan,
                           "eer_threshold": math.nan,
                           "n_positive": int((y == 1).sum()), "n_negative": int((y == 0).sum())}
    if out["n_positive"] and out["n_negative"]:
        out["roc_auc"] = float(roc_auc_score(y, p))
        out["pr_auc"] = float(average_precision_score(y, p))
        out["eer"], out["eer_threshold"] = equal_error_rate(y, p)
    return out


def epoch_scores(y_true: np.ndarray, probs: np.ndarray, *, positive: int | None,
                 threshold: float | None = None) -> dict[str, float]:
    """What one epoch's predictions ``probs`` ``[shape=(n, n_classes)]`` on labelled clips show
    of the model: ``f1`` (macro-F1 at argmax), ``f1_tuned`` and ``auc``. For a gate
    (``positive``: the column of its positive class), ``f1_tuned`` is the macro-F1 at a
    threshold on P(positive), ``threshold`` or else the best one on these labels
    (:func:`best_f1_threshold`, returned as ``threshold``): what the operating point will
    make of the model whatever its calibration; ``auc`` the ROC-AUC of P(positive). For more
    classes ``f1_tuned`` is ``f1`` and ``auc`` the macro one-vs-rest ROC-AUC. NaN where a
    class is missing."""
    y = np.asarray(y_true, np.int64)
    n_classes = probs.shape[1]
    out = {"f1": macro_f1(y, probs.argmax(axis=1), n_classes=n_classes),
           "f1_tuned": math.nan, "auc": math.nan, "threshold": math.nan}
    present = set(np.unique(y).tolist())
    if positive is None:
        out["f1_tuned"] = out["f1"]
        if len(present) == n_classes and n_classes > 2:
            out["auc"] = float(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
        return out
    yb, p = (y == positive).astype(np.int64), probs[:, positive]
    if len(set(yb.tolist())) < 2:
        return out
    t = best_f1_threshold(yb, p) if threshold is None or not math.isfinite(threshold) \
        else threshold
    out.update(f1_tuned=macro_f1(yb, (p >= t).astype(np.int64), n_classes=2),
               auc=float(roc_auc_score(yb, p)), threshold=float(t))
    return out


def error_tradeoff(y_true: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    """The whole FAR/FRR trade-off, for ROC and DET curves: ``thresholds``, ``far``, ``frr``
    (each ``[shape=(k,)]``, thresholds ascending)."""
    y, p = _binary(y_true, scores)
    _need_both(y)
    thresholds, far, frr = _sweep(y, p)
    return {"thresholds": thresholds, "far": far, "frr": frr}
