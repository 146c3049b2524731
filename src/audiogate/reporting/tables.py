"""Text renderings of results: aligned tables, CSV and JSON, for people and for programs.

Every command that prints rows (``predict``, ``scan``, ``evaluate``) goes through
:func:`render_rows`, so the three formats look and behave the same everywhere.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any, Protocol

from ..errors import ConfigError
from ..files import to_json

FORMATS = ("table", "csv", "json")
"""Output formats of the commands that print rows."""


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """CSV text (RFC 4180 quoting, ``\\r\\n`` line ends) of ``header`` and ``rows``."""
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    return buf.getvalue()


def aligned_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell, two spaces apart, trailing blanks trimmed."""
    cells = [[str(x) for x in row] for row in [header, *rows]]
    widths = [max(len(x) for x in col) for col in zip(*cells, strict=True)]
    return "".join("  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip()
                   + "\n" for row in cells)


def render_rows(header: Sequence[str], rows: Sequence[Sequence[Any]], *, fmt: str) -> str:
    """``rows`` as an aligned table or CSV (``fmt`` ``"table"`` or ``"csv"``)."""
    if fmt == "csv":
        return csv_text(header, rows)
    if fmt == "table":
        return aligned_table(header, rows)
    raise ConfigError(f"format must be 'table' or 'csv' here, got {fmt!r}")


def check_format(fmt: str) -> None:
    """Refuse an unknown output format with the list of known ones."""
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, got {fmt!r}")


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
                       fmt: str) -> str:
    """Verdicts as an aligned table, CSV (one row per input) or JSON (a list of objects)."""
    check_format(fmt)
    if fmt == "json":
        return to_json([r.as_dict() for r in results]) + "\n"
    header = ["file", "label", "confidence", *(f"p_{c}" for c in classes), "error"]
    rows = [[r.source, r.label or "ERROR", f"{r.confidence:.4f}",
             *(f"{r.probabilities.get(c, math.nan):.4f}" for c in classes), r.error or ""]
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
                  f"  false-accept rate {_rate(gate['far'])}   false-reject rate "
                  f"{_rate(gate['frr'])}",
                  f"  ROC-AUC {_rate(gate['roc_auc'])}   PR-AUC {_rate(gate['pr_auc'])}   "
                  f"EER {_rate(gate['eer'])}"]
    return "\n".join(lines)


def _rate(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"
