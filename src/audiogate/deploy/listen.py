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
  of ``n`` windows must reach the threshold. Windows are grouped: a group opens at the first
  window whose newest ``hop_s`` is *active* (louder than :data:`ACTIVITY_MARGIN_DB` above the
  quietest level of the last :data:`FLOOR_WINDOW_S` seconds, and than ``activity_db``), and
  closes after :data:`CLOSE_S` seconds without activity (or :data:`MAX_GROUP_S` seconds in
  all); a window that is not active counts with score 0 (the model's verdict on near-silence
  means nothing). A group gives one event: ``allowed`` as
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
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.gate import Gate
from ..errors import AudioError, ConfigError
from ..speech.vad import CHUNK, SAMPLE_RATE, Segmenter, VadSettings, VadStream

DEFAULT_HOP_S = 0.1
"""Seconds between judged windows."""
DEFAULT_K, DEFAULT_N = 2, 3
"""Smoothing: ``k`` of the last ``n`` windows must reach the threshold."""
DEFAULT_REFRACTORY_S = 1.0
"""Seconds after an allowed event during which nothing new is reported."""
DEFAULT_ACTIVITY_DB = -55.0
"""Quietest level (dB re a full-scale RMS of 1) that is ever activity."""
ACTIVITY_MARGIN_DB = 10.0
"""How far above the quietest recent level a hop must be to count as activity."""
FLOOR_WINDOW_S = 5.0
"""The quietest hop of the last this many seconds is the noise floor."""
CLOSE_S = 0.3
"""Seconds without activity that close a window group."""
MAX_GROUP_S = 10.0
"""A window group is closed (and decided) after this many seconds at most."""
MIN_RATE, MAX_RATE = 1000, 384_000
"""Sample rates a Listener accepts (Hz)."""
SCAN_BATCH = 16
"""Windows per forward pass."""
ALLOWED, REJECTED = "allowed", "rejected"
"""The two decisions an event reports."""


@dataclass(frozen=True, kw_only=True)
class ListenSettings:
    """How a :class:`Listener` decides (see the module doc). ``vad``: judge speech segments
    (True), windows (False), or as the gate does (None); ``hop_s``, ``k``, ``n``: the window
    hop and the smoothing; ``refractory_s``; ``activity_db``: the quietest level that counts
    as activity (windows); ``max_segment_s``: the longest speech segment judged at once (None:
    the gate's clip limit); ``vad_settings``: Silero's segmentation (None: its defaults)."""

    vad: bool | None = None
    hop_s: float = DEFAULT_HOP_S
    k: int = DEFAULT_K
    n: int = DEFAULT_N
    refractory_s: float = DEFAULT_REFRACTORY_S
    activity_db: float = DEFAULT_ACTIVITY_DB
    max_segment_s: float | None = None
    vad_settings: VadSettings | None = None

    def __post_init__(self) -> None:
        if not (0.01 <= self.hop_s <= 10.0):
            raise ConfigError(f"listen hop must be in [0.01, 10] s, got {self.hop_s}")
        if not (1 <= self.k <= self.n <= 50):
            raise ConfigError(f"smoothing needs 1 <= k <= n <= 50 (k of n windows), got "
                              f"k={self.k}, n={self.n}")
        if not (0.0 <= self.refractory_s <= 3600.0):
            raise ConfigError(f"refractory time must be in [0, 3600] s, got "
                              f"{self.refractory_s}")
        if not (-120.0 <= self.activity_db <= 0.0):
            raise ConfigError(f"activity level must be in [-120, 0] dB, got {self.activity_db}")
        if self.max_segment_s is not None and not (0.5 <= self.max_segment_s <= 600.0):
            raise ConfigError(f"max_segment_s must be in [0.5, 600] s, got "
                              f"{self.max_segment_s}")


@dataclass(frozen=True)
class Judged:
    """One judged unit: a window or a speech segment, ``[start, end)`` in samples at the
    gate's rate; ``score`` is ``P(positive)`` (raw, before smoothing); ``active``: its newest
    hop is activity (always True for a speech segment); ``at``: input samples fed when it was
    judged; ``compute_s``: time the Listener had spent in that call; ``n_windows``: model
    windows behind the score."""

    start: int
    end: int
    score: float
    active: bool
    at: int
    compute_s: float
    n_windows: int = 1


@dataclass(frozen=True)
class Event:
    """A decision on one utterance or sound: ``decision`` (``allowed`` / ``rejected``),
    ``label`` (the class it decides for), ``start``/``end`` in seconds of the stream,
    ``score`` (smoothed ``P(positive)``), the ``threshold`` it was held to, ``latency_s``
    (see the module doc), ``n_windows`` judged, ``seq`` (0, 1, ... per Listener) and ``time``
    (the wall clock when it was decided, seconds since the epoch)."""

    decision: str
    label: str
    start: float
    end: float
    score: float
    threshold: float
    latency_s: float
    n_windows: int
    seq: int
    time: float

    @property
    def allowed(self) -> bool:
        return self.decision == ALLOWED

    def as_dict(self) -> dict[str, Any]:
        return {"event": self.decision, "label": self.label, "start": round(self.start, 3),
                "end": round(self.end, 3), "score": round(self.score, 4),
                "threshold": round(self.threshold, 4),
                "latency_ms": round(1000.0 * self.latency_s, 1), "n_windows": self.n_windows,
                "seq": self.seq, "time": round(self.time, 3)}

    def line(self) -> str:
        """One line for people."""
        sign = ">=" if self.score >= self.threshold else "<"
        return (f"{self.start:9.2f}-{self.end:.2f} s  {self.decision.upper():8s} {self.label} "
                f"(score {self.score:.3f} {sign} {self.threshold:.3f}; latency "
                f"{1000.0 * self.latency_s:.0f} ms)")


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


class _Group:
    """An open window group (see the module doc)."""

    def __init__(self, start: int, muted: bool) -> None:
        self.start = start
        self.last_busy = start
        self.best = 0.0
        self.units = 0
        self.fired = False
        self.muted = muted


class Decider:
    """Judged units -> events: the smoothing, the grouping and the refractory time of the
    module doc, on scores alone (so a benchmark can replay recorded scores at another
    threshold). ``per_unit``: every unit is a whole segment and gives one event (speech);
    else units are windows ``hop`` samples apart. ``sr``: the units' rate; ``rate``: the input
    rate ``Judged.at`` counts in."""

    def __init__(self, *, positive: str, negative: str, threshold: float, sr: int, rate: int,
                 settings: ListenSettings, per_unit: bool, hop: int) -> None:
        self.positive, self.negative, self.threshold = positive, negative, threshold
        self.sr, self.rate, self.settings, self.per_unit, self.hop = (
            sr, rate, settings, per_unit, hop)
        self.recent: collections.deque[float] = collections.deque(maxlen=settings.n)
        self.group: _Group | None = None
        self.quiet_until = -1
        """Samples: no new group or segment before this one gives an event."""
        self.seq = 0
        self.close_after = round(CLOSE_S * sr)
        self.max_group = round(MAX_GROUP_S * sr)

    def _event(self, decision: str, *, start: int, end: int, score: float, unit: Judged,
               n_windows: int, wall: float) -> Event:
        latency = unit.at / self.rate - end / self.sr + unit.compute_s
        event = Event(decision=decision, label=self.positive if decision == ALLOWED
                      else self.negative, start=start / self.sr, end=end / self.sr,
                      score=score, threshold=self.threshold, latency_s=latency,
                      n_windows=n_windows, seq=self.seq, time=wall)
        self.seq += 1
        if decision == ALLOWED:
            self.quiet_until = end + round(self.settings.refractory_s * self.sr)
        return event

    def push(self, unit: Judged, *, wall: float = 0.0) -> list[Event]:
        """The events that ``unit`` completes (at most one)."""
        if self.per_unit:
            if unit.start < self.quiet_until:
                return []
            decision = ALLOWED if unit.score >= self.threshold else REJECTED
            return [self._event(decision, start=unit.start, end=unit.end, score=unit.score,
                                unit=unit, n_windows=unit.n_windows, wall=wall)]
        self.recent.append(unit.score if unit.active else 0.0)
        k = self.settings.k
        smoothed = sorted(self.recent, reverse=True)[k - 1] if len(self.recent) >= k else 0.0
        group = self.group
        if group is None:
            if not unit.active:
                return []
            start = max(0, unit.end - self.hop)
            group = self.group = _Group(start, muted=start < self.quiet_until)
        group.units += 1
        group.best = max(group.best, smoothed)
        if unit.active:
            group.last_busy = unit.end
        if smoothed >= self.threshold and not (group.fired or group.muted):
            group.fired = True
            return [self._event(ALLOWED, start=group.start, end=unit.end, score=smoothed,
                                unit=unit, n_windows=group.units, wall=wall)]
        if (unit.end - group.last_busy >= self.close_after
                or unit.end - group.start >= self.max_group):
            return self.close(unit, wall=wall)
        return []

    def close(self, unit: Judged | None, *, wall: float = 0.0) -> list[Event]:
        """Decide the open group (``unit``: the last one judged, for the latency); the
        smoothing starts afresh after it."""
        group, self.group = self.group, None
        self.recent.clear()
        if group is None or group.fired or group.muted or unit is None:
            return []
        return [self._event(REJECTED, start=group.start, end=group.last_busy,
                            score=group.best, unit=unit, n_windows=group.units, wall=wall)]


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
        if self.by_speech:
            longest = settings.max_segment_s or gate.clip_limit / self.sr
            self.judge = SpeechJudge(gate, max_segment_s=longest,
                                     settings=settings.vad_settings)
        else:
            self.judge = WindowJudge(gate, positive=gate.classes.index(positive), hop=hop,
                                     activity_db=settings.activity_db)
        self.decider = Decider(positive=positive, negative=negative, threshold=threshold,
                               sr=self.sr, rate=rate, settings=settings,
                               per_unit=self.by_speech, hop=hop)
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
