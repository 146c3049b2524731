"""The long streams of the live benchmark (:mod:`bench.live`): recorded words placed in a
noise bed, the truth known to the sample, rendered block by block (an hour is never held in
memory).

A :class:`Plan` lists every placed word: its file, where it starts (sample), its gain, whether
it is allowed, and where its speech is (start and end samples, from its envelope). Between
words there are 1-4 s of the bed alone, and now and then 5-20 s. Each word is mixed at an SNR
drawn from :data:`SNRS_DB` (its speech's RMS over the bed's). The bed is pink noise (-3 dB per
octave, Paul Kellet's filter) at :data:`BED_DB` dB plus, every 20-60 s, a non-speech sound of
audiogate's generator (hum, music, a door, clicks, ...; :func:`audiogate.data.synth.confuser`)
at 0-10 dB over it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from audiogate.data.synth import confuser

SR = 16000
BLOCK = 512
"""Samples per block fed to the listener (32 ms, as the microphone source)."""
SNRS_DB = (30.0, 20.0, 10.0)
BED_DB = -45.0
"""RMS level of the noise bed (dB re 1)."""
ALLOWED_SHARE = 0.15
"""Share of placed words that are allowed ones."""
GAP_S = (1.0, 4.0)
LONG_GAP_S, LONG_GAP_P = (5.0, 20.0), 0.1
CONFUSER_EVERY_S = (20.0, 60.0)
CONFUSER_S = (1.0, 4.0)
PINK_B = (0.049922035, -0.095993537, 0.050612699, -0.004408786)
PINK_A = (1.0, -2.494956002, 2.017265875, -0.522189400)
"""Pink noise from white (Paul Kellet's economy filter)."""
EXTENT_DB = -35.0
"""A word's speech: where its 20 ms RMS envelope is within this of its peak."""


@dataclass(frozen=True)
class Placed:
    path: str
    at: int
    gain: float
    allowed: bool
    speech: tuple[int, int]
    """Start and end (samples in the stream) of the word's speech."""
    snr_db: float


@dataclass(frozen=True)
class Plan:
    n: int
    seed: int
    words: list[Placed]
    confusers: list[tuple[int, int, int, float]]
    """(at, samples, seed, gain) of each non-speech sound."""

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"n": self.n, "seed": self.seed,
                                    "words": [asdict(w) for w in self.words],
                                    "confusers": self.confusers}))

    @staticmethod
    def load(path: Path) -> Plan:
        data = json.loads(path.read_text())
        words = [Placed(**{**w, "speech": tuple(w["speech"])}) for w in data["words"]]
        return Plan(n=data["n"], seed=data["seed"], words=words,
                    confusers=[tuple(c) for c in data["confusers"]])

    @property
    def allowed(self) -> list[Placed]:
        return [w for w in self.words if w.allowed]

    @property
    def other_s(self) -> float:
        """Seconds of audio that are not an allowed word's speech."""
        return (self.n - sum(w.speech[1] - w.speech[0] for w in self.allowed)) / SR


def speech_extent(y: np.ndarray) -> tuple[int, int, float]:
    """First and last sample of a clip's speech, and its RMS there."""
    width = int(0.02 * SR)
    env = np.sqrt(np.convolve(np.square(y, dtype=np.float64), np.ones(width) / width, "same"))
    loud = np.flatnonzero(env > env.max() * 10 ** (EXTENT_DB / 20))
    a, b = int(loud[0]), int(loud[-1]) + 1
    return a, b, float(np.sqrt(np.mean(np.square(y[a:b], dtype=np.float64))) + 1e-9)


def read_clip(path: str) -> np.ndarray:
    y, sr = sf.read(path, dtype="float32", always_2d=True)
    if sr != SR:
        raise SystemExit(f"{path}: {sr} Hz, expected {SR}")
    return y.mean(axis=1)


def make_plan(*, allowed: Sequence[str], other: Sequence[str], seconds: float,
              seed: int) -> Plan:
    """Words drawn from ``allowed`` (share :data:`ALLOWED_SHARE`, each list gone through in a
    shuffled order, again and again) and ``other`` over ``seconds`` of stream."""
    rng = np.random.default_rng(seed)
    n = round(seconds * SR)
    cycles = {True: _cycle(allowed, rng), False: _cycle(other, rng)}
    extents: dict[str, tuple[int, int, float]] = {}
    bed_rms = 10 ** (BED_DB / 20)
    words, t = [], round(rng.uniform(*GAP_S) * SR)
    while True:
        is_allowed = bool(rng.random() < ALLOWED_SHARE)
        path = next(cycles[is_allowed])
        if path not in extents:
            extents[path] = speech_extent(read_clip(path))
        a, b, rms = extents[path]
        length = sf.info(path).frames
        if t + length >= n:
            break
        snr = float(rng.choice(SNRS_DB))
        gain = bed_rms * 10 ** (snr / 20) / rms
        words.append(Placed(path=path, at=t, gain=gain, allowed=is_allowed,
                            speech=(t + a, t + b), snr_db=snr))
        gap = LONG_GAP_S if rng.random() < LONG_GAP_P else GAP_S
        t += length + round(rng.uniform(*gap) * SR)
    confusers, t = [], round(rng.uniform(*CONFUSER_EVERY_S) * SR)
    while t < n:
        length = min(round(rng.uniform(*CONFUSER_S) * SR), n - t)
        gain = bed_rms * 10 ** (rng.uniform(0.0, 10.0) / 20) * 3.0  # peak 1 -> ~RMS 1/3
        confusers.append((t, length, int(rng.integers(2**31)), float(gain)))
        t += length + round(rng.uniform(*CONFUSER_EVERY_S) * SR)
    return Plan(n=n, seed=seed, words=words, confusers=confusers)


def _cycle(items: Sequence[str], rng: np.random.Generator) -> Iterator[str]:
    while True:
        yield from (items[i] for i in rng.permutation(len(items)))


def render(plan: Plan, *, block: int = BLOCK) -> Iterator[np.ndarray]:
    """The stream, ``block`` samples at a time (float32)."""
    rng = np.random.default_rng(plan.seed + 1)
    state = np.zeros(len(PINK_A) - 1)
    probe = signal.lfilter(PINK_B, PINK_A, np.random.default_rng(0).standard_normal(SR * 10))
    scale = 10 ** (BED_DB / 20) / float(np.sqrt(np.mean(probe[SR:] ** 2)))
    # every clip read first: the memory of a long stream stays the listener's to measure
    clips = {path: read_clip(path) for path in sorted({w.path for w in plan.words})}
    words = sorted(plan.words, key=lambda w: w.at)
    sounds = sorted(plan.confusers)
    active: list[tuple[int, np.ndarray]] = []
    wi = ci = 0
    for start in range(0, plan.n, block):
        stop = min(start + block, plan.n)
        bed, state = signal.lfilter(PINK_B, PINK_A, rng.standard_normal(stop - start),
                                    zi=state)
        out = bed * scale
        while wi < len(words) and words[wi].at < stop:
            w = words[wi]
            active.append((w.at, w.gain * clips[w.path]))
            wi += 1
        while ci < len(sounds) and sounds[ci][0] < stop:
            at, length, seed, gain = sounds[ci]
            y = confuser(rng=np.random.default_rng(seed), duration=length / SR, sr=SR)
            active.append((at, gain * y))
            ci += 1
        kept = []
        for at, y in active:
            a, b = max(start, at), min(stop, at + y.size)
            if a < b:
                out[a - start:b - start] += y[a - at:b - at]
            if at + y.size > stop:
                kept.append((at, y))
        active = kept
        yield out.astype(np.float32)
