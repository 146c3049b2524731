"""Judge a long recording: slide the model window along it and merge the verdicts into segments.

Windows are ``features.n_samples`` samples long (the model's own window) and start every
``hop_s`` seconds; one more window is aligned to the end so the tail is judged too, and a
recording shorter than one window is judged once, zero-padded, as ``predict`` would.

Each window speaks for the stretch of time around its centre: the timeline is cut halfway
between the centres of neighbouring windows (the first stretch starts at 0, the last ends at
the recording's end). Consecutive stretches with the same label are merged into a
:class:`Segment` whose ``score`` is the mean probability of that label over its windows. A
change of content is therefore placed within about half a hop of where the model's verdict
changes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.audio_io import load_audio, to_mono_resampled
from ..errors import ConfigError
from ..files import to_json
from ..reporting.tables import check_format, render_rows
from .decision import window_starts
from .inference import BaseClassifier

DEFAULT_HOP_S = 0.5
"""Default hop between window starts (seconds)."""
MIN_HOP_S = 0.01
"""Smallest hop accepted (seconds): 100 windows per second of audio."""
SCAN_BATCH = 64
"""Windows per forward pass (bounds memory for long recordings)."""


@dataclass(frozen=True)
class Window:
    """One judged window: ``[start, end)`` in seconds, its label and class probabilities."""

    start: float
    end: float
    label: str
    probabilities: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "label": self.label,
                "probabilities": self.probabilities}


@dataclass(frozen=True)
class Segment:
    """A stretch ``[start, end)`` (seconds) judged ``label``; ``score`` is the mean probability
    of ``label`` over its ``n_windows`` windows."""

    start: float
    end: float
    label: str
    score: float
    n_windows: int

    @property
    def duration(self) -> float:
        return self.end - self.start

    def as_dict(self) -> dict[str, Any]:
        return {"start": round(self.start, 4), "end": round(self.end, 4), "label": self.label,
                "score": round(self.score, 6), "n_windows": self.n_windows}


@dataclass(frozen=True)
class ScanResult:
    """Segments (and the windows behind them) of one recording."""

    source: str
    duration: float
    window_s: float
    hop_s: float
    classes: tuple[str, ...]
    segments: list[Segment]
    windows: list[Window] = field(repr=False)

    def as_dict(self, *, windows: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source, "duration": round(self.duration, 4),
            "window_s": self.window_s, "hop_s": self.hop_s, "classes": list(self.classes),
            "segments": [s.as_dict() for s in self.segments]}
        if windows:
            out["windows"] = [w.as_dict() for w in self.windows]
        return out


def stretch_edges(*, starts: np.ndarray, window: int, n: int) -> np.ndarray:
    """Edges (samples) of the stretch each window speaks for: ``[shape=(n_windows + 1,)]``,
    first 0, last ``n``, inner edges halfway between neighbouring window centres."""
    centres = starts.astype(np.float64) + window / 2.0
    return np.concatenate(([0.0], (centres[:-1] + centres[1:]) / 2.0, [float(n)]))


def merge_segments(*, labels: Sequence[int], probs: np.ndarray, edges: np.ndarray, sr: int,
                   classes: Sequence[str]) -> list[Segment]:
    """Merge runs of equal window labels. ``probs`` ``[shape=(n_windows, n_classes)]``,
    ``edges`` (samples) ``[shape=(n_windows + 1,)]`` from :func:`stretch_edges`."""
    segments: list[Segment] = []
    first = 0
    for i in range(1, len(labels) + 1):
        if i < len(labels) and labels[i] == labels[first]:
            continue
        k = int(labels[first])
        segments.append(Segment(start=float(edges[first]) / sr, end=float(edges[i]) / sr,
                                label=classes[k], score=float(probs[first:i, k].mean()),
                                n_windows=i - first))
        first = i
    return segments


def smooth(probs: np.ndarray, *, width: int) -> np.ndarray:
    """Moving average over ``width`` (odd) neighbouring windows, ``[shape=(n_windows,
    n_classes)]`` -> same shape; at the ends only the windows that exist are averaged."""
    if width <= 1 or len(probs) < 2:
        return probs
    kernel = np.ones(width)
    total = np.stack([np.convolve(col, kernel, mode="same") for col in probs.T], axis=1)
    count = np.convolve(np.ones(len(probs)), kernel, mode="same")[:, None]
    return (total / count).astype(probs.dtype)


def scan_wave(gate: BaseClassifier, *, wave: np.ndarray, sr: int, hop_s: float = DEFAULT_HOP_S,
              smooth_s: float = 0.0, source: str = "<array>") -> ScanResult:
    """Scan samples ``[shape=(n,)]`` or ``[shape=(n, channels)]`` at ``sr`` Hz.

    ``hop_s``: seconds between window starts (>= ``MIN_HOP_S``). ``smooth_s``: if > 0, the
    segments are built from window probabilities averaged over about ``smooth_s`` seconds of
    neighbouring windows (removes one-window flickers; ``windows`` keep the raw values).
    Raises :class:`ConfigError` for a bad hop and :class:`~audiogate.errors.AudioError` for
    unusable samples.
    """
    if not (hop_s >= MIN_HOP_S and np.isfinite(hop_s)):
        raise ConfigError(f"hop must be at least {MIN_HOP_S} s, got {hop_s}")
    if not (smooth_s >= 0 and np.isfinite(smooth_s)):
        raise ConfigError(f"smoothing must be >= 0 s, got {smooth_s}")
    feats = gate.features
    y = to_mono_resampled(wave, native_sr=sr, sr=feats.sr, source=source)
    window, hop = feats.n_samples, max(1, round(hop_s * feats.sr))
    starts = window_starts(n=y.size, window=window, hop=hop)
    padded = np.pad(y, (0, max(0, window - y.size)))
    probs = np.concatenate([
        gate.probabilities(np.stack([padded[s:s + window] for s in starts[i:i + SCAN_BATCH]]))
        for i in range(0, len(starts), SCAN_BATCH)])
    window_labels = gate.decision.labels(probs)
    windows = [Window(start=float(s) / feats.sr, end=min(float(s + window), y.size) / feats.sr,
                      label=gate.classes[int(k)],
                      probabilities={c: float(p) for c, p in zip(gate.classes, row,
                                                                 strict=True)})
               for s, row, k in zip(starts, probs, window_labels, strict=True)]
    smoothed = smooth(probs, width=1 + 2 * round(smooth_s / 2 / (hop / feats.sr)))
    edges = stretch_edges(starts=starts, window=window, n=y.size)
    segments = merge_segments(labels=gate.decision.labels(smoothed).tolist(), probs=smoothed,
                              edges=edges, sr=feats.sr, classes=gate.classes)
    return ScanResult(source=source, duration=y.size / feats.sr, window_s=window / feats.sr,
                      hop_s=hop / feats.sr, classes=gate.classes, windows=windows,
                      segments=segments)


def scan_file(gate: BaseClassifier, *, path: str | os.PathLike[str],
              hop_s: float = DEFAULT_HOP_S, smooth_s: float = 0.0) -> ScanResult:
    """Decode ``path`` (any length; held in memory at ``features.sr``) and scan it."""
    y = load_audio(path, sr=gate.features.sr)
    return scan_wave(gate, wave=y, sr=gate.features.sr, hop_s=hop_s, smooth_s=smooth_s,
                     source=str(path))


def format_scan(results: Sequence[ScanResult], *, fmt: str, windows: bool = False) -> str:
    """Segments of one or more recordings as an aligned table, CSV or JSON.

    With ``windows`` the JSON also lists every window (table/CSV list segments only).
    """
    check_format(fmt)
    if fmt == "json":
        return to_json([r.as_dict(windows=windows) for r in results]) + "\n"
    header = ["file", "start_s", "end_s", "label", "score", "n_windows"]
    rows = [[r.source, f"{s.start:.3f}", f"{s.end:.3f}", s.label, f"{s.score:.4f}",
             str(s.n_windows)] for r in results for s in r.segments]
    return render_rows(header, rows, fmt=fmt)
