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

import array
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.gate import Gate
from ..data.audio_io import stream_audio, to_mono_resampled
from ..errors import ConfigError
from .segments import ScanResult, Segment

DEFAULT_HOP_S = 0.5
"""Default hop between window starts (seconds)."""
MIN_HOP_S = 0.01
"""Smallest hop accepted (seconds): 100 windows per second of audio."""
SCAN_BATCH = 16
"""Windows per forward pass (bounds memory for long recordings)."""


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


class WindowScanner:
    """Judges the model windows of a recording as its samples arrive.

    :meth:`feed` mono samples at ``gate.features.sr`` in pieces of any size; every window
    that is complete is judged, ``SCAN_BATCH`` at a time, and the samples no window needs any
    more are dropped, so memory stays bounded whatever the length. :meth:`finish` judges the
    rest (the window aligned to the end, or the one zero-padded window of a recording shorter
    than a window) and merges the segments. Windows are placed as
    :func:`~audiogate.core.decision.window_starts` places them.
    """

    def __init__(self, gate: Gate, *, hop_s: float = DEFAULT_HOP_S,
                 smooth_s: float = 0.0, source: str = "<array>") -> None:
        if not (hop_s >= MIN_HOP_S and np.isfinite(hop_s)):
            raise ConfigError(f"hop must be at least {MIN_HOP_S} s, got {hop_s}")
        if not (smooth_s >= 0 and np.isfinite(smooth_s)):
            raise ConfigError(f"smoothing must be >= 0 s, got {smooth_s}")
        self.gate, self.smooth_s, self.source = gate, smooth_s, source
        self.sr = gate.features.sr
        self.window, self.hop = gate.features.n_samples, max(1, round(hop_s * self.sr))
        self.buffer = np.zeros(0, np.float32)
        self.offset = 0
        """Sample index of ``buffer[0]`` in the recording."""
        self.n = 0
        self.next_start = 0
        self.pending: list[int] = []
        """Starts of complete windows not judged yet (fewer than ``SCAN_BATCH`` after
        :meth:`feed`)."""
        self.starts = array.array("q")
        """Starts of the judged windows (8 bytes each: compact for any length)."""
        self.probs: list[np.ndarray] = []

    def feed(self, samples: np.ndarray) -> None:
        """Mono float32 samples ``[shape=(m,)]`` at ``gate.features.sr``, in order."""
        self.buffer = np.concatenate([self.buffer, np.asarray(samples, np.float32)])
        self.n += samples.size
        while self.next_start + self.window <= self.n:
            self.pending.append(self.next_start)
            self.next_start += self.hop
        full = len(self.pending) - len(self.pending) % SCAN_BATCH
        for i in range(0, full, SCAN_BATCH):
            self._judge(self.pending[i:i + SCAN_BATCH])
        del self.pending[:full]
        keep = min(self.pending[0] if self.pending else self.next_start, self.n - self.window)
        if keep > self.offset:
            self.buffer = self.buffer[keep - self.offset:].copy()
            self.offset = keep

    def _judge(self, starts: Sequence[int]) -> None:
        rows = [self.buffer[s - self.offset:s - self.offset + self.window] for s in starts]
        batch = np.stack([np.pad(r, (0, self.window - r.size)) for r in rows])
        self.probs.append(self.gate.probabilities(batch))
        self.starts.extend(starts)

    def finish(self) -> ScanResult:
        """Judge the last windows and merge the segments of everything fed."""
        tail = self.pending
        last = tail[-1] if tail else self.starts[-1] if self.starts else None
        if last is None:
            tail = [0]
        elif last + self.window < self.n:
            tail = [*tail, self.n - self.window]
        if tail:
            self._judge(tail)
        self.pending = []
        starts = np.frombuffer(self.starts, dtype=np.int64).copy()
        probs = np.concatenate(self.probs)
        gate, window, sr = self.gate, self.window, self.sr
        smoothed = smooth(probs, width=1 + 2 * round(self.smooth_s / 2 / (self.hop / sr)))
        edges = stretch_edges(starts=starts, window=window, n=self.n)
        segments = merge_segments(labels=gate.decision.labels(smoothed).tolist(),
                                  probs=smoothed, edges=edges, sr=sr, classes=gate.classes)
        return ScanResult(source=self.source, duration=self.n / sr, window_s=window / sr,
                          hop_s=self.hop / sr, classes=gate.classes, segments=segments,
                          starts=starts, probs=probs, labels=gate.decision.labels(probs),
                          sr=sr)


def _scanner(gate: Gate, *, hop_s: float, smooth_s: float, vad: bool | None,
             source: str) -> Any:
    """A :class:`WindowScanner`, or with ``vad`` (None: the gate's default,
    ``gate.scan_by_speech``) a :class:`~audiogate.deploy.speech_scan.SpeechScanner`."""
    if not (vad if vad is not None else gate.scan_by_speech):
        return WindowScanner(gate, hop_s=hop_s, smooth_s=smooth_s, source=source)
    if smooth_s:
        raise ConfigError("smoothing applies to the window scan; a scan by voice activity "
                          "judges each speech segment whole (drop --smooth, or use --no-vad)")
    from .speech_scan import SpeechScanner  # local: needs the voice extra's VAD model

    return SpeechScanner(gate, source=source)


def scan_wave(gate: Gate, *, wave: np.ndarray, sr: int, hop_s: float = DEFAULT_HOP_S,
              smooth_s: float = 0.0, source: str = "<array>",
              vad: bool | None = None) -> ScanResult:
    """Scan samples ``[shape=(n,)]`` or ``[shape=(n, channels)]`` at ``sr`` Hz.

    ``hop_s``: seconds between window starts (>= ``MIN_HOP_S``). ``smooth_s``: if > 0, the
    segments are built from window probabilities averaged over about ``smooth_s`` seconds of
    neighbouring windows (removes one-window flickers; ``windows`` keep the raw values).
    ``vad``: judge each speech segment instead, skipping silence
    (:mod:`~audiogate.deploy.speech_scan`); None: on for a voice gate, off otherwise.
    Raises :class:`ConfigError` for a bad hop and :class:`~audiogate.errors.AudioError` for
    unusable samples.
    """
    scanner = _scanner(gate, hop_s=hop_s, smooth_s=smooth_s, vad=vad, source=source)
    scanner.feed(to_mono_resampled(wave, native_sr=sr, sr=gate.features.sr, source=source))
    result: ScanResult = scanner.finish()
    return result


def scan_file(gate: Gate, *, path: str | os.PathLike[str],
              hop_s: float = DEFAULT_HOP_S, smooth_s: float = 0.0,
              vad: bool | None = None) -> ScanResult:
    """Scan the file ``path`` of any length, decoded and resampled block by block as the
    windows are judged: memory does not grow with the recording's length. Gives what
    :func:`scan_wave` gives for the whole decoded file."""
    scanner = _scanner(gate, hop_s=hop_s, smooth_s=smooth_s, vad=vad, source=str(path))
    for block in stream_audio(path, sr=gate.features.sr):
        scanner.feed(block)
    result: ScanResult = scanner.finish()
    return result
