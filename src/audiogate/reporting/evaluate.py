"""Evaluate a model on held-out clips: a data folder or a subset of its run's split.

Clips are judged exactly as ``predict`` judges them (whole clips, the gate's threshold), so a
report says what the deployed model will do. For a two-class gate the report adds ROC-AUC,
PR-AUC, the EER, and the false-accept / false-reject rates at the threshold, with ROC and DET
curves.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.discover import Clip, Skipped, discover, write_skipped
from ..data.split import read_split
from ..deploy.inference import BaseClassifier, Classifier, Prediction
from ..errors import DataError
from ..files import write_json, write_text
from ..training.checkpoint import ensure_compatible, load_checkpoint
from ..training.runs import RunPaths
from . import plots
from .metrics import classification_report, gate_report
from .tables import csv_text


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


def score_clips(gate: BaseClassifier, clips: Sequence[Clip], *,
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


def _run_of(checkpoint: Path) -> RunPaths | None:
    """The run folder a checkpoint lives in (``<run>/models/x.pt``), if it is one."""
    run = RunPaths(checkpoint.resolve().parent.parent)
    return run if run.split.exists() else None


def evaluate(checkpoint: str | os.PathLike[str], *, data: str | None = None,
             subset: str = "test", out: str | os.PathLike[str] | None = None,
             threshold: float | None = None, workers: int = 0,
             progress: bool = True) -> EvalResult:
    """Metrics of ``checkpoint`` on the class folders under ``data``, or else on the
    ``subset`` of the checkpoint's run split. ``threshold`` replaces the gate's own.

    Writes ``report.json``, ``predictions.csv``, ``skipped.csv``, ``confusion.png`` and, for
    a gate, ``roc.png`` and ``det.png`` into ``out``.
    """
    ckpt_path = Path(checkpoint)
    gate = Classifier(load_checkpoint(ckpt_path), workers=workers)
    if threshold is not None:
        gate.with_threshold(threshold)
    run = _run_of(ckpt_path)
    skipped: list[Skipped] = []
    if data is not None:
        found = discover(data)
        ensure_compatible(gate.checkpoint, classes=found.classes, what=data)
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
    write_predictions(scored, gate, out_dir / "predictions.csv")
    write_figures(scored, gate, report, confusion=out_dir / "confusion.png",
                  roc=out_dir / "roc.png", det=out_dir / "det.png", title=Path(source).name)
    return EvalResult(report, skipped, out_dir / "report.json", out_dir / "confusion.png")


def write_predictions(scored: Scored, gate: BaseClassifier, path: Path) -> None:
    """``path,true,predicted,confidence,score`` per judged clip (score: P(positive) of a
    gate, empty otherwise)."""
    rows = [[c.path, gate.classes[c.label], p.label, f"{p.confidence:.4f}",
             "" if p.score is None else f"{p.score:.6f}"]
            for c, p in zip(scored.clips, scored.predictions, strict=True)]
    write_text(path, csv_text(["path", "true", "predicted", "confidence", "score"], rows))
