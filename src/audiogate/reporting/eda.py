"""Exploratory data analysis: class counts and the duration histogram behind ``fixed_length``.

Every file is decoded once, block by block (memory stays small for long files), so eda skips
exactly what training would skip (corrupt data, NaN/inf samples, clips too short) and reports
the duration of the samples that really decode.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import FeatureConfig
from ..data.audio_io import verify
from ..data.discover import Skipped, discover, require_all_classes, write_skipped
from ..data.prepare import suggest_fixed_length
from ..errors import AudioError
from ..features.frontend import mel_filterbank
from ..files import write_json
from . import plots


@dataclass
class EdaReport:
    """Counts, durations and the window suggestion for one data folder."""

    classes: tuple[str, ...]
    durations: dict[str, np.ndarray]
    skipped: list[Skipped] = field(default_factory=list)
    fixed_length: int = 0
    window_s: float = 0.0
    suggested_fixed_length: int = 0
    suggested_s: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        return {name: len(d) for name, d in self.durations.items()}

    def covered(self) -> float:
        """Fraction of clips that fit in the current window without truncation."""
        every = np.concatenate(list(self.durations.values()))
        return float(np.mean(every <= self.window_s)) if every.size else float("nan")

    def summary(self) -> dict[str, Any]:
        every = np.concatenate(list(self.durations.values()))
        stats = ({k: float(f(every)) for k, f in (("min", np.min), ("median", np.median),
                                                  ("p90", lambda d: np.quantile(d, 0.9)),
                                                  ("max", np.max))} if every.size else {})
        return {"classes": list(self.classes), "counts": self.counts,
                "duration_s": stats, "fixed_length": self.fixed_length,
                "window_s": self.window_s, "fraction_within_window": self.covered(),
                "suggested_fixed_length": self.suggested_fixed_length,
                "suggested_window_s": self.suggested_s, "skipped": len(self.skipped)}


def analyse(data: str | os.PathLike[str], *, features: FeatureConfig) -> EdaReport:
    """Discover the clips under ``data``, check each decodes to usable audio at
    ``features.sr`` and read its duration; unusable files go to ``skipped`` with the reason.
    A front end that training would refuse (empty mel bands) is refused first."""
    mel_filterbank(features)
    found = discover(data)
    per_class: dict[str, list[float]] = {name: [] for name in found.classes}
    skipped = list(found.skipped)
    for clip in found.clips:
        try:
            per_class[found.classes[clip.label]].append(
                verify(clip.path, sr=features.sr).duration)
        except AudioError as exc:
            skipped.append(Skipped(clip.path, exc.reason))
    require_all_classes({k: len(v) for k, v in per_class.items()}, where=str(data),
                        skipped=skipped)
    durations = {k: np.asarray(v) for k, v in per_class.items()}
    every = np.concatenate(list(durations.values()))
    suggested = suggest_fixed_length(every, features=features)
    return EdaReport(classes=found.classes, durations=durations, skipped=skipped,
                     fixed_length=features.fixed_length,
                     window_s=features.n_samples / features.sr,
                     suggested_fixed_length=suggested,
                     suggested_s=(suggested - 1) * features.hop_length / features.sr)


def write_eda(report: EdaReport, out_dir: Path) -> dict[str, Path]:
    """Write ``durations.png``, ``eda.json`` and ``skipped.csv`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"histogram": out_dir / "durations.png", "summary": out_dir / "eda.json",
             "skipped": out_dir / "skipped.csv"}
    plots.plot_durations(report.durations, window_s=report.window_s,
                         suggested_s=report.suggested_s, path=paths["histogram"])
    write_json(paths["summary"], report.summary())
    write_skipped(report.skipped, paths["skipped"])
    return paths
