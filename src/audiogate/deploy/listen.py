"""Decide live: blocks of samples in, one event per utterance out.

A :class:`Listener` is fed blocks of samples as they arrive (any size, at the rate it was
made for) and returns the events the new samples complete. It does no I/O: where the samples
come from (a microphone, a file played at real time, stdin, a WebSocket:
:mod:`~audiogate.deploy.sources`, :mod:`~audiogate.deploy.live_routes`) and what is done
with the events (printed, commands, a webhook: :mod:`~audiogate.deploy.actions`) live apart.

It judges in one of two ways, the gate's own (:attr:`~audiogate.core.gate.Gate.scan_by_speech`)
unless ``ListenSettings.vad`` says otherwise:

* **windows** (sound gates): the model window ending every ``hop_s`` seconds is judged; its
  *smoothed score* is the ``k``-th highest ``P(positive)`` of the last ``n`` windows, so ``k``
  of ``n`` windows must reach the threshold. Each hop of new samples is *active* when louder
  than :data:`ACTIVITY_MARGIN_DB` above the quietest hop of the last :data:`FLOOR_WINDOW_S`
  seconds (and than ``activity_db``); a window that holds no active hop counts with score 0
  (the model's verdict on near-silence means nothing). Windows are grouped: a group opens at
  the first active hop and closes when no window holds activity any more (:data:`CLOSE_S`
  seconds after that; or after :data:`MAX_GROUP_S` seconds in all), so sounds closer than a
  window apart are one group. A group gives one event: ``allowed`` as
  soon as its smoothed score reaches the threshold (it does not wait for the sound to end),
  else ``rejected`` when it closes, with the best smoothed score it had.
* **speech** (voice gates): Silero VAD finds where speech starts and ends
  (:mod:`audiogate.speech.vad`); each speech segment, once closed, is judged whole
  (:meth:`~audiogate.core.gate.Gate.clip_probabilities`, the pieces of a segment longer than
  the gate's clip limit pooled as the gate pools windows) and gives one event, ``allowed``
  when its score reaches the threshold. A segment still open after ``max_segment_s`` is
  judged then.

Either way, for ``refractory_s`` seconds after an ``allowed`` event nothing new is reported
(a group or segment that starts then gives no event), so one utterance that the VAD or the
windows split in two still gives one event. Memory is bounded by one model window (windows)
or the longest segment (speech), whatever the stream's length.

Every event carries its ``latency_s``: from the end of what it decides to when it was decided,
counted in the stream's own samples (everything fed up to the decision) plus the time the
Listener spent computing in that call (its ``clock``). For a source at real time this is the
delay a listener sees, measured without waiting in real time.
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..core.gate import Gate
from ..errors import AudioError, ConfigError
from ..speech.vad import CHUNK, SAMPLE_RATE, Segmenter, VadSettings, VadStream
from .decide import (
    ALLOWED,
    REJECTED,
    Decider,
    Event,
    Judged,
    ListenSettings,
)

__all__ = ["ALLOWED", "REJECTED", "Decider", "Event", "Judged", "ListenSettings", "Listener",
           "gate_classes"]

ACTIVITY_MARGIN_DB = 10.0
"""How far above the quietest recent level a hop must be to count as activity."""
FLOOR_WINDOW_S = 5.0
"""The quietest hop of the last this many seconds is the noise floor."""
MIN_RATE, MAX_RATE = 1000, 384_000
"""Sample rates a Listener accepts (Hz)."""
SCAN_BATCH = 16
"""Windows per forward pass."""


def gate_classes(gate: Gate) -> tuple[str, str, float]:
    """The positive class, the other class and the threshold of a two-class gate (0.5 when it
    has none: the more probable class wins). :class:`ConfigError` for other models."""
    positive = gate.decision.positive_class
    if positive is None or len(gate.classes) != 2:
        raise ConfigError(f"listening needs a gate: a two-class model that names the class it "
                          f"accepts; this one has classes {list(gate.classes)}")
    other = next(c for c in gate.classes if c != positive)
    threshold = gate.decision.threshold
    return positive, other, 0.5 if threshold is None else float(threshold)


def level_db(samples: np.ndarray) -> float:
    """RMS level of ``samples`` in dB re 1 (a full-scale square wave is 0 dB)."""
    power = float(np.mean(np.square(samples, dtype=np.float64))) if samples.size else 0.0
    return 10.0 * float(np.log10(power + 1e-12))


class WindowJudge:
    """Judges the model window ending every ``hop`` samples, with its newest hop's activity.
    Keeps one window of samples."""

    def __init__(self, gate: Gate, *, positive: int, hop: int, activity_db: float) -> None:
        self.gate, self.positive, self.hop, self.activity_db = gate, positive, hop, activity_db
        self.window = gate.features.n_samples
        self.buffer = np.zeros(0, np.float32)
        self.offset = 0
        """Sample index of ``buffer[0]``."""
        self.n = 0
        self.next_end = self.window
        self.levels: collections.deque[float] = collections.deque(
            maxlen=max(1, round(FLOOR_WINDOW_S * gate.features.sr / hop)))

    def feed(self, samples: np.ndarray) -> list[tuple[int, int, float, bool]]:
        """Mono samples at the gate's rate -> ``(start, end, score, active)`` of every window
        they complete."""
        self.buffer = np.concatenate([self.buffer, samples])
        self.n += samples.size
        ends = []
        while self.next_end <= self.n:
            ends.append(self.next_end)
            self.next_end += self.hop
        out = self._judge(ends)
        keep = self.next_end - self.window
        if keep > self.offset:
            self.buffer = self.buffer[keep - self.offset:].copy()
            self.offset = keep
        return out

    def _judge(self, ends: list[int]) -> list[tuple[int, int, float, bool]]:
        out = []
        for i in range(0, len(ends), SCAN_BATCH):
            batch = ends[i:i + SCAN_BATCH]
            rows = []
            for end in batch:
                row = self.buffer[max(0, end - self.window - self.offset):end - self.offset]
                rows.append(np.pad(row, (self.window - row.size, 0)))
            scores = self.gate.probabilities(np.stack(rows))[:, self.positive]
            for end, row, score in zip(batch, rows, scores, strict=True):
                level = level_db(row[-self.hop:])
                self.levels.append(level)
                active = level >= max(self.activity_db, min(self.levels) + ACTIVITY_MARGIN_DB)
                out.append((end - self.window, end, float(score), active))
        return out

    def flush(self) -> list[tuple[int, int, float, bool]]:
        """Judge a last window ending where the samples end (if any are unjudged), then start
        afresh: the next window is the first full one after this point."""
        last = self.next_end - self.hop
        out = self._judge([self.n]) if self.n > last and self.n > self.offset else []
        self.buffer, self.offset = np.zeros(0, np.float32), self.n
        self.next_end = self.n + self.window
        return out


class SpeechJudge:
    """Judges each speech segment whole as it closes (see the module doc). Keeps the samples
    of the open segment and a little context."""

    def __init__(self, gate: Gate, *, max_segment_s: float,
                 settings: VadSettings | None = None) -> None:
        self.gate, self.sr = gate, gate.features.sr
        self.settings = settings or VadSettings()
        self.max_segment_s = max_segment_s
        self.buffer = np.zeros(0, np.float32)
        self.offset = 0
        self.n = 0
        self._restart()

    def _restart(self) -> None:
        """A new VAD stream and segmenter, whose time 0 is sample ``self.n``."""
        import soxr

        self.origin = self.n / self.sr
        """Stream time (s) of the segmenter's time 0."""
        self.stream = VadStream()
        self.segmenter = Segmenter(self.settings)
        self.base = 0
        """VAD chunks before the segmenter's time 0."""
        self.resampler = (None if self.sr == SAMPLE_RATE else
                          soxr.ResampleStream(self.sr, SAMPLE_RATE, 1, dtype="float32"))

    def _now(self) -> float:
        """The segmenter's time (s) at the last VAD chunk."""
        return (self.stream.n_chunks - self.base) * CHUNK / SAMPLE_RATE

    def feed(self, samples: np.ndarray) -> list[tuple[int, int, float, int]]:
        """Mono samples at the gate's rate -> ``(start, end, score, n_windows)`` of every
        segment they close."""
        self.buffer = np.concatenate([self.buffer, samples])
        self.n += samples.size
        y = samples if self.resampler is None else self.resampler.resample_chunk(samples)
        segments = self.segmenter.push(self.stream.push(y))
        since, now = self.segmenter.open_since, self._now()
        out = self._judge(segments)
        if since is not None and now - since >= self.max_segment_s:  # judged now, cut here
            out += self._judge(self.segmenter.finish(now))
            self.segmenter = Segmenter(self.settings)
            self.origin += now
            self.base = self.stream.n_chunks
        self._trim()
        return out

    def _trim(self) -> None:
        since = self.segmenter.open_since
        keep_s = self.origin + (self._now() if since is None else since) \
            - self.settings.pad_s - CHUNK / SAMPLE_RATE
        keep = min(max(0, int(keep_s * self.sr)), self.n)
        if keep > self.offset:
            self.buffer = self.buffer[keep - self.offset:].copy()
            self.offset = keep

    def _judge(self, segments: list[tuple[float, float]]) -> list[tuple[int, int, float, int]]:
        out = []
        positive = self.gate.decision.positive or 0
        for begin, finish in segments:
            start = max(round((self.origin + begin) * self.sr), self.offset)
            end = min(round((self.origin + finish) * self.sr), self.n)
            if end <= start:
                continue
            k = -(-(end - start) // self.gate.clip_limit)
            edges = np.linspace(start, end, k + 1).round().astype(np.int64).tolist()
            waves = [self.buffer[a - self.offset:b - self.offset]
                     for a, b in itertools.pairwise(edges)]
            judged = self.gate.clip_probabilities(waves)
            probs = self.gate.decision.pool(np.stack([p for p, _ in judged]))
            out.append((start, end, float(probs[positive]), sum(w for _, w in judged)))
        return out

    def flush(self) -> list[tuple[int, int, float, int]]:
        """Judge the segment still open as if the stream ended here, then start afresh."""
        tail = np.zeros(0, np.float32)
        if self.resampler is not None:
            tail = self.resampler.resample_chunk(tail, last=True)
        probs = np.concatenate([self.stream.push(tail), self.stream.flush()])
        duration = self.n / self.sr - self.origin
        out = self._judge([*self.segmenter.push(probs), *self.segmenter.finish(duration)])
        self.buffer, self.offset = np.zeros(0, np.float32), self.n
        self._restart()
        return out


class Listener:
    """Blocks of samples at ``rate`` Hz in, :class:`Event` objects out (see the module doc).

    ``clock``: seconds for the compute part of the latency (default ``time.perf_counter``);
    ``wall``: the time stamped on events (default ``time.time``); ``on_unit``: called with
    every :class:`Judged` unit (a benchmark records scores with it).
    """

    def __init__(self, gate: Gate, *, rate: int, settings: ListenSettings | None = None,
                 clock: Callable[[], float] = time.perf_counter,
                 wall: Callable[[], float] = time.time,
                 on_unit: Callable[[Judged], None] | None = None) -> None:
        import soxr

        settings = settings or ListenSettings()
        if not (MIN_RATE <= rate <= MAX_RATE):
            raise ConfigError(f"sample rate must be in {MIN_RATE}-{MAX_RATE} Hz, got {rate}")
        positive, negative, threshold = gate_classes(gate)
        self.gate, self.rate, self.settings = gate, rate, settings
        self.clock, self.wall, self.on_unit = clock, wall, on_unit
        self.sr = gate.features.sr
        self.by_speech = gate.scan_by_speech if settings.vad is None else settings.vad
        hop = max(1, round(settings.hop_s * self.sr))
        self.judge: WindowJudge | SpeechJudge
        window = gate.features.n_samples
        if self.by_speech:
            longest = settings.max_segment_s or gate.clip_limit / self.sr
            self.judge = SpeechJudge(gate, max_segment_s=longest,
                                     settings=settings.vad_settings)
        else:
            self.judge = WindowJudge(gate, positive=gate.classes.index(positive), hop=hop,
                                     activity_db=settings.activity_db)
        self.decider = Decider(positive=positive, negative=negative, threshold=threshold,
                               sr=self.sr, rate=rate, settings=settings,
                               per_unit=self.by_speech, hop=hop, window=window)
        self._soxr = soxr
        self.resampler = self._new_resampler()
        self.fed = 0
        """Input samples fed so far."""
        self.last: Judged | None = None

    @property
    def threshold(self) -> float:
        return self.decider.threshold

    @property
    def mode(self) -> str:
        """``speech`` or ``windows``."""
        return "speech" if self.by_speech else "windows"

    def _new_resampler(self) -> Any:
        if self.rate == self.sr:
            return None
        return self._soxr.ResampleStream(self.rate, self.sr, 1, dtype="float32")

    def _mono(self, block: np.ndarray) -> np.ndarray:
        x = np.asarray(block, dtype=np.float32)
        if x.ndim == 2:
            x = x.mean(axis=1, dtype=np.float64).astype(np.float32)
        if x.ndim != 1:
            raise AudioError("<stream>", f"expected (samples,) or (samples, channels), got "
                                         f"{x.shape}")
        if not np.isfinite(x).all():
            raise AudioError("<stream>", "contains NaN or infinite samples")
        return x

    def feed(self, block: np.ndarray) -> list[Event]:
        """Samples ``[shape=(m,)]`` or ``[shape=(m, channels)]`` at ``rate`` -> the events
        they complete, in order."""
        began = self.clock()
        x = self._mono(block)
        self.fed += x.size
        y = x if self.resampler is None else self.resampler.resample_chunk(x)
        return self._decide(self.judge.feed(y), began=began)

    def _decide(self, judged: list[Any], *, began: float) -> list[Event]:
        compute = self.clock() - began
        events: list[Event] = []
        for item in judged:
            if self.by_speech:
                start, end, score, windows = item
                unit = Judged(start, end, score, True, self.fed, compute, windows)
            else:
                start, end, score, active = item
                unit = Judged(start, end, score, active, self.fed, compute)
            self.last = unit
            if self.on_unit is not None:
                self.on_unit(unit)
            events += self.decider.push(unit, wall=self.wall())
        return events

    def flush(self) -> list[Event]:
        """Decide what is still open as if the stream ended here (the end of a stream, a
        microphone lost, Ctrl+C); samples fed after it start afresh (their times go on)."""
        began = self.clock()
        judged: list[Any] = []
        if self.resampler is not None:
            judged = self.judge.feed(self.resampler.resample_chunk(np.zeros(0, np.float32),
                                                                   last=True))
            self.resampler = self._new_resampler()
        judged += self.judge.flush()
        events = self._decide(judged, began=began)
        if not self.by_speech:
            events += self.decider.close(self.last, wall=self.wall())
        return events
