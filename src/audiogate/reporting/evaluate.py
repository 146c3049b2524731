"""What a gate's verdicts on held-out clips show: the report (macro-F1, per class, confusion;
for a two-class gate ROC-AUC, PR-AUC, the EER and the false-accept / false-reject rates at its
threshold), its figures, and a run's test report.

Clips are judged exactly as ``predict`` judges them (whole clips, the gate's threshold), so a
report says what the deployed gate will do. ``audiogate evaluate`` is
:func:`audiogate.gates.api.evaluate`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.gate import Gate
from ..core.runs import RunPaths
from ..data.discover import Clip
from ..files import write_json
from . import plots
from .metrics import classification_report, gate_report
from .predictions import Scored, score_clips, write_predictions

log = logging.getLogger(__name__)


def build_report(scored: Scored, gate: Gate) -> dict[str, Any]:
    """Macro-F1, accuracy, per-class figures, confusion matrix; for a gate also its threshold,
    FAR/FRR there, ROC-AUC, PR-AUC and EER (:func:`~audiogate.reporting.metrics.gate_report`)."""
    report = classification_report(scored.y_true, scored.y_pred, classes=gate.classes)
    pos = gate.decision.positive
    if pos is not None:
        y = (scored.y_true == pos).astype(np.int64)
        threshold = 0.5 if gate.threshold is None else gate.threshold
        report["gate"] = {"positive": gate.classes[pos], "pooling": gate.decision.pooling,
                          **gate_report(y, scored.scores(), threshold=threshold)}
    return report


def write_figures(scored: Scored, gate: Gate, report: dict[str, Any], *,
                  confusion: Path, roc: Path, det: Path, title: str) -> None:
    """The confusion matrix, and for a gate with both classes present, ROC and DET curves
    with the operating point marked."""
    plots.plot_confusion(report["confusion"], gate.classes, confusion,
                         title=f"{title}: macro-F1 {report['macro_f1']:.3f}")
    pos = gate.decision.positive
    summary = report.get("gate")
    if pos is None or not summary or not (summary["n_positive"] and summary["n_negative"]):
        return
    y = (scored.y_true == pos).astype(np.int64)
    plots.plot_roc(y, scored.scores(), path=roc, summary=summary, title=title)
    plots.plot_det(y, scored.scores(), path=det, summary=summary, title=title)


def test_report(run: RunPaths, gate: Gate, clips: Sequence[Clip], *,
                title: str) -> tuple[dict[str, Any], Scored]:
    """Judge a run's test ``clips`` with ``gate`` (its ``best.pt``) as ``predict`` does, once:
    ``test_metrics.json``, every clip's verdict in ``test_predictions.csv``, and the confusion
    matrix, ROC and DET curves in ``outputs/``. Returns the report and the verdicts."""
    scored = score_clips(gate, clips)
    report = build_report(scored, gate)
    report["epoch"] = gate.epoch
    write_json(run.test_report, report)
    write_predictions(scored, gate.classes, run.test_predictions)
    write_figures(scored, gate, report, confusion=run.confusion,
                  roc=run.outputs / "roc_test.png", det=run.outputs / "det_test.png",
                  title=title)
    return report, scored
