"""Text renderings of results for people and programs: verdicts and evaluation reports
(the row formats themselves are :mod:`audiogate.core.tables`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

from ..core.tables import check_format, render_rows
from ..files import to_json


class Verdict(Protocol):
    """What :func:`format_predictions` needs of a prediction."""

    source: str
    label: str | None
    probabilities: dict[str, float]
    error: str | None

    @property
    def confidence(self) -> float: ...

    def as_dict(self) -> dict[str, Any]: ...


def format_predictions(results: Sequence[Verdict], classes: Sequence[str], *,
                       fmt: str, positive: str | None = None) -> str:
    """Verdicts as an aligned table, CSV (one row per input) or JSON (a list of objects, each
    with its gate's ``positive`` class). ``positive``: the class a two-class gate accepts,
    shown in a column of its own (none for more classes)."""
    check_format(fmt)
    if fmt == "json":
        return to_json([r.as_dict() for r in results]) + "\n"
    gate = [positive] if positive else []
    header = ["file", "label", "confidence", *(f"p_{c}" for c in classes),
              *(["positive"] if positive else []), "error"]
    rows = [[r.source, r.label or "ERROR", f"{r.confidence:.4f}",
             *(f"{r.probabilities.get(c, math.nan):.4f}" for c in classes), *gate,
             r.error or ""]
            for r in results]
    return render_rows(header, rows, fmt=fmt)


def format_report(report: dict[str, Any]) -> str:
    """Human-readable text of :func:`~audiogate.reporting.metrics.classification_report`."""
    classes = report["classes"]
    width = max(12, *(len(c) for c in classes))
    lines = [f"clips: {report['n']}   macro-F1: {report['macro_f1']:.4f}   "
             f"accuracy: {report['accuracy']:.4f}", "",
             f"{'class':<{width}}  precision  recall     f1  support"]
    for name in classes:
        row = report["per_class"][name]
        lines.append(f"{name:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  "
                     f"{row['f1']:5.4f}  {row['support']:7d}")
    lines += ["", "confusion (rows = true, columns = predicted):",
              " " * (width + 2) + "  ".join(f"{c:>{width}}" for c in classes)]
    for name, row in zip(classes, report["confusion"], strict=True):
        lines.append(f"{name:<{width}}  " + "  ".join(f"{v:>{width}d}" for v in row))
    gate = report.get("gate")
    if gate:
        lines += ["", f"gate: accept as {gate['positive']} when P({gate['positive']}) >= "
                      f"{gate['threshold']:.4f}",
                  f"  false-accept rate {_rate(gate['far'])}{_target(gate, 'far')}   "
                  f"false-reject rate {_rate(gate['frr'])}{_target(gate, 'frr')}",
                  f"  ROC-AUC {_rate(gate['roc_auc'])}   PR-AUC {_rate(gate['pr_auc'])}   "
                  f"EER {_rate(gate['eer'])}"]
        lines += _people(gate.get("people"))
    return "\n".join(lines)


PEOPLE_SHOWN = 20
"""People listed per side by :func:`format_report` (all are in the report's JSON)."""


def _target(gate: dict[str, Any], rate: str) -> str:
    target = gate.get("target") or {}
    return f" (target {target[rate]:g}, {target['rule']})" if rate in target else ""


def _people(people: dict[str, Any] | None) -> list[str]:
    """Per-person lines: each person's false-reject rate (positive class) and false-accept
    rate (the other), worst first."""
    if not people:
        return []
    lines = []
    for side, verb, title in (("frr", "rejected", "false-reject rate"),
                              ("far", "accepted", "false-accept rate: who gets in")):
        rows = people[side]
        if not rows:
            continue
        width = max(12, *(len(r["person"]) for r in rows[:PEOPLE_SHOWN]))
        lines += ["", f"per person of {rows[0]['class']} ({title}, worst first):"]
        lines += [f"  {r['person']:<{width}}  {r[side]:.4f}  ({r['errors']} of {r['n']} "
                  f"{verb})" for r in rows[:PEOPLE_SHOWN]]
        if len(rows) > PEOPLE_SHOWN:
            lines.append(f"  ... {len(rows) - PEOPLE_SHOWN} more in the report's JSON")
    return lines


def _rate(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"
