"""Judge a long recording per speech segment: voice activity detection, then one verdict each.

The recording is fed block by block (any length): Silero VAD (:mod:`audiogate.speech.vad`,
streaming, at 16 kHz whatever the model's rate) finds where speech starts and ends; each
segment, once closed, is judged whole by the model as ``predict`` judges a clip
(:meth:`~audiogate.core.gate.Gate.clip_probabilities`), in pieces of at most
``max_clip_s`` seconds (equal lengths) when it is longer. Silence is skipped: it is in no
segment. Only the samples of the segment still open (and a little context) are kept, so
memory does not grow with the recording's length, only with the longest stretch of speech.

This is how a voice gate scans (its scores are of voices, so a window of silence means
nothing), and what ``scan --vad`` does for any model.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..core.gate import Gate
from ..speech.vad import (
    CHUNK,
    SAMPLE_RATE,
    Segment,
    Segmenter,
    VadSettings,
    VadStream,
)
from .segments import ScanResult
from .segments import Segment as Verdict


class SpeechScanner:
    """Judges the speech segments of a recording as its samples arrive: :meth:`feed` mono
    samples at ``gate.features.sr``, then :meth:`finish`."""

    def __init__(self, gate: Gate, *, settings: VadSettings | None = None,
                 source: str = "<array>") -> None:
        import soxr

        self.gate, self.source, self.sr = gate, source, gate.features.sr
        self.stream = VadStream()
        self.segmenter = Segmenter(settings or VadSettings())
        self.resampler = (None if self.sr == SAMPLE_RATE else
                          soxr.ResampleStream(self.sr, SAMPLE_RATE, 1, dtype="float32"))
        self.buffer = np.zeros(0, np.float32)
        self.offset = 0
        """Sample index of ``buffer[0]`` in the recording."""
        self.n = 0
        self.piece = gate.clip_limit
        self.bounds: list[tuple[int, int]] = []
        self.probs: list[np.ndarray] = []
        self.n_windows: list[int] = []

    def feed(self, samples: np.ndarray) -> None:
        """Mono float32 samples ``[shape=(m,)]`` at ``gate.features.sr``, in order."""
        x = np.asarray(samples, np.float32).ravel()
        self.buffer = np.concatenate([self.buffer, x])
        self.n += x.size
        y = x if self.resampler is None else self.resampler.resample_chunk(x)
        for segment in self.segmenter.push(self.stream.push(y)):
            self._judge(segment)
        self._trim()

    def _trim(self) -> None:
        """Drop the samples no segment can need any more."""
        since = self.segmenter.open_since
        now = self.stream.n_chunks * CHUNK / SAMPLE_RATE
        keep_s = (now if since is None else since) - self.segmenter.settings.pad_s \
            - CHUNK / SAMPLE_RATE
        keep = min(max(0, int(keep_s * self.sr)), self.n)
        if keep > self.offset:
            self.buffer = self.buffer[keep - self.offset:].copy()
            self.offset = keep

    def _judge(self, segment: Segment) -> None:
        start = max(round(segment[0] * self.sr), self.offset)
        end = min(round(segment[1] * self.sr), self.n)
        if end <= start:
            return
        k = -(-(end - start) // self.piece)
        edges = np.linspace(start, end, k + 1).round().astype(np.int64)
        pairs = list(itertools.pairwise(edges.tolist()))
        waves = [self.buffer[a - self.offset:b - self.offset] for a, b in pairs]
        for (a, b), (probs, n) in zip(pairs, self.gate.clip_probabilities(waves), strict=True):
            self.bounds.append((int(a), int(b)))
            self.probs.append(probs)
            self.n_windows.append(n)

    def finish(self) -> ScanResult:
        """Judge the segment still open and return every segment's verdict."""
        tail = np.zeros(0, np.float32)
        if self.resampler is not None:
            tail = self.resampler.resample_chunk(np.zeros(0, np.float32), last=True)
        chunk_probs = np.concatenate([self.stream.push(tail), self.stream.flush()])
        for segment in [*self.segmenter.push(chunk_probs),
                        *self.segmenter.finish(self.n / self.sr)]:
            self._judge(segment)
        gate, n_classes = self.gate, len(self.gate.classes)
        probs = np.stack(self.probs) if self.probs else np.zeros((0, n_classes), np.float32)
        labels = gate.decision.labels(probs)
        verdicts = [Verdict(start=a / self.sr, end=b / self.sr, label=gate.classes[int(k)],
                            score=float(p[int(k)]), n_windows=w)
                    for (a, b), p, k, w in zip(self.bounds, probs, labels, self.n_windows,
                                               strict=True)]
        starts = np.asarray([a for a, _ in self.bounds], np.int64)
        ends = np.asarray([b for _, b in self.bounds], np.int64)
        return ScanResult(source=self.source, duration=self.n / self.sr,
                          window_s=gate.features.n_samples / self.sr, hop_s=0.0,
                          classes=gate.classes, segments=verdicts, starts=starts, probs=probs,
                          labels=labels, sr=self.sr, ends=ends)
