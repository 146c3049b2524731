"""Evaluate a checkpoint on held-out clips: a data folder or a subset of its run's split."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import plots
from .checkpoint import ensure_compatible
from .data import Clip, Skipped, discover, read_split, write_skipped
from .errors import DataError
from .inference import load
from .metrics import classification_report
from .runs import RunPaths, write_json


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
    gate = load(ckpt_path, workers=workers)
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
    with open(out_dir / "predictions.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "true", "predicted", "confidence"])
        for clip, r in zip(clips, results, strict=True):
            writer.writerow([clip.path, gate.classes[clip.label], r.label or "ERROR",
                             f"{r.confidence:.4f}"])
    plots.plot_confusion(report["confusion"], gate.classes, out_dir / "confusion.png",
                         title=f"{Path(source).name}: macro-F1 {report['macro_f1']:.3f}")
    return EvalResult(report, skipped, out_dir / "report.json", out_dir / "confusion.png")
