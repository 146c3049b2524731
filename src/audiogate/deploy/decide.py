"""How a live gate decides, on scores alone: the settings, the judged units, the events, and
the :class:`Decider` that turns units into events (smoothing, grouping, refractory time; see
:mod:`audiogate.deploy.listen` for the rules). Pure: no model, no I/O, so recorded scores can
be replayed at another threshold."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..speech.vad import VadSettings

DEFAULT_HOP_S = 0.1
"""Seconds between judged windows."""
DEFAULT_K, DEFAULT_N = 2, 3
"""Smoothing: ``k`` of the last ``n`` windows must reach the threshold."""
DEFAULT_REFRACTORY_S = 1.0
"""Seconds after an allowed event during which nothing new is reported."""
DEFAULT_ACTIVITY_DB = -55.0
"""Quietest level (dB re a full-scale RMS of 1) that is ever activity."""
CLOSE_S = 0.3
"""Seconds without activity that close a window group."""
MAX_GROUP_S = 10.0
"""A window group is closed (and decided) after this many seconds at most."""
ALLOWED, REJECTED = "allowed", "rejected"
"""The two decisions an event reports."""


@dataclass(frozen=True, kw_only=True)
class ListenSettings:
    """How a :class:`~audiogate.deploy.listen.Listener` decides (the rules:
    :mod:`audiogate.deploy.listen`). ``vad``: judge speech segments
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
    hop is active (always True for a speech segment); ``at``: input samples fed when it was
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
    else units are windows of ``window`` samples, ``hop`` samples apart. ``sr``: the units'
    rate; ``rate``: the input rate ``Judged.at`` counts in."""

    def __init__(self, *, positive: str, negative: str, threshold: float, sr: int, rate: int,
                 settings: ListenSettings, per_unit: bool, hop: int, window: int) -> None:
        self.positive, self.negative, self.threshold = positive, negative, threshold
        self.sr, self.rate, self.settings, self.per_unit, self.hop = (
            sr, rate, settings, per_unit, hop)
        self.window = window
        self.last_active = -window
        """End (samples) of the last active hop."""
        self.recent: collections.deque[float] = collections.deque(maxlen=settings.n)
        self.group: _Group | None = None
        self.quiet_until = -1
        """Samples: no new group or segment before this one gives an event."""
        self.seq = 0
        self.close_after = max(0, window - hop) + round(CLOSE_S * sr)
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
        if unit.active:
            self.last_active = unit.end
        holds = unit.end - self.last_active < self.window  # an active hop is in the window
        self.recent.append(unit.score if holds else 0.0)
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
