"""Evaluate a checkpoint on held-out clips: a data folder or a subset of its run's split."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.discover import Clip, Skipped, discover, write_skipped
from ..data.split import read_split
from ..deploy.inference import Classifier
from ..errors import DataError
from ..files import write_json, write_text
from ..training.checkpoint import ensure_compatible, load_checkpoint
from ..training.runs import RunPaths
from . import plots
from .metrics import classification_report
from .tables import csv_text


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
             workers: int = 0, progress: bool = True) -> EvalResult:
    """Macro-F1, per-class precision/recall and confusion matrix of ``checkpoint``.

    Uses the class folders under ``data``, or else the ``subset`` of the checkpoint's run
    split. Writes ``report.json``, ``predictions.csv``, ``skipped.csv`` and ``confusion.png``
    into ``out``.
    """
    ckpt_path = Path(checkpoint)
    gate = Classifier(load_checkpoint(ckpt_path), workers=workers)
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
    results = gate.predict_many([c.path for c in clips], progress=progress)
    scored: list[tuple[Clip, int]] = []
    for clip, r in zip(clips, results, strict=True):
        if r.index is None:
            skipped.append(Skipped(clip.path, r.error or "failed"))
        else:
            scored.append((clip, r.index))
    if not scored:
        raise DataError(f"none of the {len(clips)} clips in {source} could be read")
    y_true = np.asarray([c.label for c, _ in scored])
    y_pred = np.asarray([p for _, p in scored])
    report = classification_report(y_true, y_pred, classes=gate.classes)
    report.update(source=source, checkpoint=str(ckpt_path), epoch=gate.checkpoint.epoch,
                  skipped=len(skipped))
    out_dir = Path(out) if out else (run.root / "evaluation" if run else Path("evaluation"))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "report.json", report)
    write_skipped(skipped, out_dir / "skipped.csv")
    rows = [[clip.path, gate.classes[clip.label], r.label or "ERROR", f"{r.confidence:.4f}"]
            for clip, r in zip(clips, results, strict=True)]
    write_text(out_dir / "predictions.csv",
               csv_text(["path", "true", "predicted", "confidence"], rows))
    plots.plot_confusion(report["confusion"], gate.classes, out_dir / "confusion.png",
                         title=f"{Path(source).name}: macro-F1 {report['macro_f1']:.3f}")
    return EvalResult(report, skipped, out_dir / "report.json", out_dir / "confusion.png")
