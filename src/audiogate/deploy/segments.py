"""What a scan of a recording finds: its judged windows (or speech segments), the segments
they merge into, and how both are printed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.tables import check_format, render_rows
from ..files import to_json


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
    """Segments (and the windows behind them) of one recording.

    The windows are kept compactly (``starts`` in samples at ``sr``, ``probs``
    ``[shape=(n_windows, n_classes)]``, ``labels`` by the gate's decision);
    :attr:`windows` lists them as :class:`Window` objects on demand.
    """

    source: str
    duration: float
    window_s: float
    hop_s: float
    classes: tuple[str, ...]
    segments: list[Segment]
    starts: np.ndarray = field(repr=False)
    probs: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    sr: int = field(repr=False)
    ends: np.ndarray | None = field(default=None, repr=False)
    """Ends (samples) of the judged stretches when they differ in length: the speech
    segments of a scan by voice activity (:mod:`~audiogate.deploy.speech_scan`)."""

    @property
    def vad(self) -> bool:
        """Whether the recording was judged per speech segment (silence skipped)."""
        return self.ends is not None

    @property
    def windows(self) -> list[Window]:
        """Every judged window (or speech segment), in order, with its raw (unsmoothed)
        probabilities."""
        window, n = round(self.window_s * self.sr), round(self.duration * self.sr)
        ends = self.ends if self.ends is not None else np.minimum(self.starts + window, n)
        return [Window(start=float(s) / self.sr, end=float(e) / self.sr,
                       label=self.classes[int(k)],
                       probabilities={c: float(p) for c, p in zip(self.classes, row,
                                                                  strict=True)})
                for s, e, row, k in zip(self.starts, ends, self.probs, self.labels,
                                        strict=True)]

    def as_dict(self, *, windows: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source, "duration": round(self.duration, 4),
            "window_s": self.window_s, "hop_s": self.hop_s, "vad": self.vad,
            "classes": list(self.classes), "segments": [s.as_dict() for s in self.segments]}
        if windows:
            out["windows"] = [w.as_dict() for w in self.windows]
        return out


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
