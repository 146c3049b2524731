"""What a gate's verdicts on held-out clips show: the report (macro-F1, per class, confusion;
for a two-class gate ROC-AUC, PR-AUC, the EER and the false-accept / false-reject rates at its
threshold, the rate its operating point targets, and per person when the clips lie in one
sub-folder per person: :mod:`~audiogate.reporting.people`), its figures, and a run's test
report.

Clips are judged exactly as ``predict`` judges them (whole clips, the gate's threshold), so a
report says what the deployed gate will do. ``audiogate evaluate`` is
:func:`audiogate.gates.api.evaluate`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config
from ..core.gate import Gate
from ..core.runs import RunPaths
from ..data.discover import Clip
from ..errors import AudiogateError
from ..files import write_json
from . import plots
from .metrics import classification_report, gate_report
from .people import people_report, target_rates
from .predictions import Scored, score_clips, write_predictions

log = logging.getLogger(__name__)


def build_report(scored: Scored, gate: Gate, *,
                 root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Macro-F1, accuracy, per-class figures, confusion matrix; for a gate also its threshold,
    FAR/FRR there, ROC-AUC, PR-AUC and EER (:func:`~audiogate.reporting.metrics.gate_report`),
    the rate its operating point targets (``target``) and, when the clips under the data
    folder ``root`` lie in per-person sub-folders, the FRR / FAR of each person (``people``)."""
    report = classification_report(scored.y_true, scored.y_pred, classes=gate.classes)
    pos = gate.decision.positive
    if pos is not None:
        y = (scored.y_true == pos).astype(np.int64)
        threshold = 0.5 if gate.threshold is None else gate.threshold
        report["gate"] = {"positive": gate.classes[pos], "pooling": gate.decision.pooling,
                          **gate_report(y, scored.scores(), threshold=threshold),
                          "target": target_rates(gate.operating_point),
                          "people": people_report([c.path for c in scored.clips],
                                                  scored.y_true, scored.y_pred,
                                                  classes=gate.classes, positive=pos,
                                                  root=root)}
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


def run_data_root(run: RunPaths) -> str | None:
    """The data folder a run was made from (its ``config.toml``), if it can be read."""
    try:
        return Config.from_toml(run.config).data
    except (AudiogateError, OSError):
        return None


def test_report(run: RunPaths, gate: Gate, clips: Sequence[Clip], *, title: str,
                root: str | os.PathLike[str] | None = None) -> tuple[dict[str, Any], Scored]:
    """Judge a run's test ``clips`` with ``gate`` (its ``best.pt``) as ``predict`` does, once:
    ``test_metrics.json``, every clip's verdict in ``test_predictions.csv``, and the confusion
    matrix, ROC and DET curves in ``outputs/``. Returns the report and the verdicts.
    ``root``: the data folder (for the per-person figures; default: the run's own)."""
    scored = score_clips(gate, clips)
    report = build_report(scored, gate, root=run_data_root(run) if root is None else root)
    report["epoch"] = gate.epoch
    write_json(run.test_report, report)
    write_predictions(scored, gate.classes, run.test_predictions)
    write_figures(scored, gate, report, confusion=run.confusion,
                  roc=run.outputs / "roc_test.png", det=run.outputs / "det_test.png",
                  title=title)
    return report, scored
