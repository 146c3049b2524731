"""Evaluate a model on held-out clips: a data folder or a subset of its run's split.

Clips are judged exactly as ``predict`` judges them (whole clips, the gate's threshold), so a
report says what the deployed model will do. For a two-class gate the report adds ROC-AUC,
PR-AUC, the EER, and the false-accept / false-reject rates at the threshold, with ROC and DET
curves.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.discover import Skipped, discover, write_skipped
from ..data.split import read_split
from ..deploy.inference import BaseClassifier, Classifier
from ..errors import CheckpointError, DataError
from ..files import write_json
from ..training.checkpoint import ensure_compatible, load_checkpoint
from ..training.runs import RunPaths
from . import plots
from .metrics import classification_report, gate_report
from .predictions import Scored, score_clips, write_predictions
from .report import write_report

log = logging.getLogger(__name__)


def build_report(scored: Scored, gate: BaseClassifier) -> dict[str, Any]:
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


def write_figures(scored: Scored, gate: BaseClassifier, report: dict[str, Any], *,
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


@dataclass
class EvalResult:
    report: dict[str, Any]
    skipped: list[Skipped]
    report_path: Path
    confusion_path: Path
    page_path: Path | None = None
    """``report.html`` (None if it could not be written; the error is logged)."""


def _run_of(checkpoint: Path) -> RunPaths | None:
    """The run folder a checkpoint lives in (``<run>/models/x.pt``), if it is one."""
    run = RunPaths(checkpoint.resolve().parent.parent)
    return run if run.split.exists() else None


def evaluate(checkpoint: str | os.PathLike[str], *, data: str | None = None,
             subset: str = "test", out: str | os.PathLike[str] | None = None,
             threshold: float | None = None, workers: int = 0,
             report_errors: int | None = None, progress: bool = True) -> EvalResult:
    """Metrics of ``checkpoint`` on the class folders under ``data``, or else on the
    ``subset`` of the checkpoint's run split. ``threshold`` replaces the gate's own.

    Writes ``report.json``, ``predictions.csv``, ``skipped.csv``, ``confusion.png``, for a
    gate ``roc.png`` and ``det.png``, and ``report.html`` (with the ``report_errors`` worst
    errors; default: the checkpoint's ``report_errors``) into ``out``.
    """
    ckpt_path = Path(checkpoint)
    gate = _load_gate(ckpt_path, workers=workers)
    if threshold is not None:
        gate.with_threshold(threshold)
    run = _run_of(ckpt_path)
    skipped: list[Skipped] = []
    if data is not None:
        found = discover(data)
        if isinstance(gate, Classifier):
            ensure_compatible(gate.checkpoint, classes=found.classes, what=data)
        elif tuple(found.classes) != gate.classes:
            raise CheckpointError(f"checkpoint classes {list(gate.classes)} do not match the "
                                  f"classes of {data} {list(found.classes)}")
        clips, skipped, source = found.clips, list(found.skipped), data
    elif run is not None:
        clips, source = getattr(read_split(run.split), subset), f"{run.split} [{subset}]"
    else:
        raise DataError(f"{ckpt_path} is not inside a run folder with split.csv; "
                        "pass --data DIR")
    if not clips:
        raise DataError(f"no clips to evaluate in {source}")
    scored = score_clips(gate, clips, progress=progress)
    skipped += scored.skipped
    if not scored.clips:
        raise DataError(f"none of the {len(clips)} clips in {source} could be read")
    report = build_report(scored, gate)
    report.update(source=source, checkpoint=str(ckpt_path), epoch=gate.epoch,
                  skipped=len(skipped))
    out_dir = Path(out) if out else (run.root / "evaluation" if run else Path("evaluation"))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "report.json", report)
    write_skipped(skipped, out_dir / "skipped.csv")
    write_predictions(scored, gate.classes, out_dir / "predictions.csv")
    write_figures(scored, gate, report, confusion=out_dir / "confusion.png",
                  roc=out_dir / "roc.png", det=out_dir / "det.png", title=Path(source).name)
    return EvalResult(report, skipped, out_dir / "report.json", out_dir / "confusion.png",
                      page_path=_write_page(out_dir, errors=report_errors))


def _load_gate(path: Path, *, workers: int) -> BaseClassifier:
    """A checkpoint's classifier: a trained network, or a voice gate."""
    from ..voice.checkpoint import is_voice_checkpoint  # local: voice gates load on demand

    if is_voice_checkpoint(path):
        from ..voice.classifier import VoiceClassifier

        return VoiceClassifier.load(path, workers=workers)
    return Classifier(load_checkpoint(path), workers=workers)


def _write_page(out_dir: Path, *, errors: int | None) -> Path | None:
    """``report.html``; a failure is logged, the evaluation's files are written already."""
    try:
        return write_report(out_dir, errors=errors)
    except Exception:
        log.exception("could not write %s (the evaluation itself is complete; retry with: "
                      "audiogate report %s)", out_dir / "report.html", out_dir)
        return None
