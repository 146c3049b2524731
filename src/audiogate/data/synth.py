"""Deterministic synthetic two-class demo data set for a sound/voice gate.

``allowed`` (label 1): speech-like voiced sound. ``not_allowed`` (label 0): everyday confusers.
Both classes share duration, peak-level and background-noise distributions (no trivial cue).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import soundfile as sf
from scipy import fft, signal

from ..config import FeatureConfig
from ..features.frontend import fit_length

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
Generator = np.random.Generator

CLASS_LABELS: Final = {"allowed": 1, "not_allowed": 0}
MIN_SR: Final = 8000
DURATION_RANGE_S: Final = (1.0, 4.0)
PEAK_DBFS_RANGE: Final = (-30.0, -3.0)
SNR_DB_RANGE: Final = (6.0, 30.0)
LOW_SNR_DB_RANGE: Final = (0.0, 6.0)
LOW_SNR_PROB: Final = 0.10
NOISE_EXPONENT_RANGE: Final = (0.0, 1.5)  # background PSD ~ 1 / f**exponent
F0_RANGE_HZ: Final = (90.0, 260.0)
F0_BASE_HZ: Final = (105.0, 225.0)
INTONATION_SEMITONES: Final = 2.0
VIBRATO_HZ: Final = (4.0, 7.0)
VOICE_BAND_HZ: Final = 5000.0
SYLLABLE_RATE_HZ: Final = (3.0, 7.0)
PAUSE_PROB: Final = 0.25
# (lowest Hz, highest Hz, bandwidth Hz, gain) of each moving formant
FORMANTS: Final = (
    (300.0, 850.0, 90.0, 1.0), (850.0, 2300.0, 120.0, 0.6), (2300.0, 3200.0, 180.0, 0.3))
TILT_CORNER_HZ: Final = 400.0
FRICATIVE_CUTOFF_HZ: Final = 2500.0
FRICATIVE_PROB: Final = 0.4
HUM_F0_HZ: Final = (50.0, 300.0)
MAINS_HZ: Final = (50.0, 60.0)
MAX_HARMONICS: Final = 30
CONFUSER_WEIGHTS: Final = {
    "hum": 0.12, "hum_am": 0.10, "band_noise": 0.16, "chirp": 0.14,
    "clicks": 0.14, "music": 0.20, "door": 0.14,
}
SECOND_CONFUSER_PROB: Final = 0.25
SECOND_CONFUSER_DB: Final = (-14.0, -4.0)
_EPS: Final = 1e-12
_TWO_PI: Final = 2.0 * np.pi


def _check_sr(sr: int) -> None:
    if sr < MIN_SR:
        raise ValueError(f"sr must be >= {MIN_SR} Hz, got {sr}")


def _n_samples(duration: float, sr: int) -> int:
    _check_sr(sr)
    if not duration > 0:  # also rejects NaN
        raise ValueError(f"duration must be > 0 seconds, got {duration}")
    return max(1, round(duration * sr))


def _slow_curve(rng: Generator, t: FloatArray, rate_hz: float) -> FloatArray:
    """Smooth random curve in [-1, 1] at times ``t`` (s, shape (n,)), ~``rate_hz`` knots/s."""
    pos = (t - t[0]) * rate_hz
    knots = rng.uniform(-1.0, 1.0, int(pos[-1]) + 2)
    i = pos.astype(np.int64)
    frac = pos - i
    w = frac * frac * (3.0 - 2.0 * frac)  # smoothstep
    return knots[i] * (1.0 - w) + knots[i + 1] * w


def _unit_peak(x: FloatArray) -> FloatArray:
    return x / max(float(np.max(np.abs(x))), _EPS)


def _background(rng: Generator, n: int, sr: int) -> FloatArray:
    """Coloured noise with power-law spectrum and slow level drift, unit RMS, shape (n,)."""
    m = fft.next_fast_len(n, real=True)
    spec = fft.rfft(rng.standard_normal(m))
    freqs = np.maximum(fft.rfftfreq(m, 1.0 / sr), 20.0)
    spec *= freqs ** (-0.5 * rng.uniform(*NOISE_EXPONENT_RANGE))
    x = fft.irfft(spec, m)[:n] * (1.0 + 0.3 * _slow_curve(rng, np.arange(n) / sr, 0.5))
    return np.asarray(x / (np.std(x) + _EPS), dtype=np.float64)


def _finish(rng: Generator, x: FloatArray, sr: int, snr_db: float | None) -> Float32Array:
    """Optionally add background noise at ``snr_db`` (whole-clip power), then peak-normalise."""
    x = _unit_peak(x)
    if snr_db is not None:
        noise_rms = np.sqrt(np.mean(x**2) / 10.0 ** (snr_db / 10.0))
        x = _unit_peak(x + noise_rms * _background(rng, x.size, sr))
    return x.astype(np.float32)


def _harmonic_stack(
    rng: Generator, phase: FloatArray, f_max: float, sr: int, n_harm: int, tilt: float
) -> FloatArray:
    """Sum of harmonics of ``phase`` (rad, (n,)) below 0.45*sr with random amplitudes ~k**-tilt."""
    k = np.arange(1, n_harm + 1)
    k = k[k * f_max < 0.45 * sr] if f_max < 0.45 * sr else k[:1]
    amps = rng.uniform(0.3, 1.0, k.size) * k**-tilt
    coefs = amps * np.exp(1j * rng.uniform(0.0, _TWO_PI, k.size))
    z, zk, out = np.exp(1j * phase), np.ones(phase.size, dtype=np.complex128), np.zeros(phase.size)
    for c in coefs:  # loop over harmonics only: zk = exp(1j * k * phase)
        zk *= z
        out += (c * zk).imag
    return out


def _syllable_envelope(rng: Generator, t: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Irregular syllabic envelope (n,) in [0, 1] and syllable onset times (s)."""
    rate = rng.uniform(*SYLLABLE_RATE_HZ)
    m = int(t[-1] * rate * 2) + 4
    lengths = rng.uniform(0.6, 1.4, m) / rate
    gaps = np.where(rng.random(m) < PAUSE_PROB, rng.uniform(0.1, 0.5, m), rng.uniform(0, 0.05, m))
    starts = rng.uniform(-0.2, 0.3) + np.concatenate(([0.0], np.cumsum(lengths + gaps)[:-1]))
    idx = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, m - 1)
    pos = (t - starts[idx]) / lengths[idx]
    shape = np.sin(np.pi * np.clip(pos, 0.0, 1.0)) ** 0.6 * rng.uniform(0.35, 1.0, m)[idx]
    env = np.where((pos >= 0.0) & (pos < 1.0), shape, 0.0)
    return env, starts[(starts >= 0.0) & (starts < t[-1])]


def _glottal_source(rng: Generator, t: FloatArray, sr: int, f0_hz: float) -> FloatArray:
    """Band-limited pulse train with intonation, vibrato and jitter; flat harmonic spectrum."""
    vib_phase = _TWO_PI * rng.uniform(*VIBRATO_HZ) * t + rng.uniform(0.0, _TWO_PI)
    vibrato = rng.uniform(0.1, 0.5) * np.sin(vib_phase)
    jitter = signal.lfilter([0.05], [1.0, -0.95], rng.standard_normal(t.size))
    semis = INTONATION_SEMITONES * _slow_curve(rng, t, rng.uniform(1.5, 4.0)) + vibrato + jitter
    f0 = np.clip(f0_hz * 2.0 ** (semis / 12.0), *F0_RANGE_HZ)
    phase = np.mod(_TWO_PI * np.cumsum(f0) / sr, _TWO_PI)
    k = max(1, int(min(VOICE_BAND_HZ, 0.45 * sr) / f0.max()))
    half = np.sin(0.5 * phase)
    tiny = np.abs(half) < 1e-9
    pulses = np.sin((k + 0.5) * phase) / (2.0 * np.where(tiny, 1.0, half)) - 0.5
    return np.where(tiny, float(k), pulses) / k


def _formant_filter(rng: Generator, x: FloatArray, sr: int) -> FloatArray:
    """Shape ``x`` (n,) by 3 moving formant resonances and a -6 dB/oct tilt (STFT domain)."""
    nfft = 1 << int(np.ceil(np.log2(0.032 * sr)))
    kw = {"fs": sr, "nperseg": nfft, "noverlap": 3 * nfft // 4}
    f, tf, spec = signal.stft(np.pad(x, (0, max(0, nfft - x.size))), **kw)  # short clips
    gain = np.zeros((f.size, tf.size))
    for lo, hi, bw, amp in FORMANTS:
        fc = lo + (min(hi, 0.45 * sr) - lo) * (0.5 + 0.5 * _slow_curve(rng, tf, rng.uniform(2, 6)))
        gain += amp / np.sqrt(1.0 + ((f[:, None] - fc[None, :]) / (0.5 * bw)) ** 2)
    gain /= 1.0 + f[:, None] / TILT_CORNER_HZ
    y = signal.istft(spec * gain, **kw)[1][: x.size]
    return np.asarray(np.pad(y, (0, x.size - y.size)))


def _fricatives(rng: Generator, onsets: FloatArray, t: FloatArray, sr: int) -> FloatArray:
    """High-passed noise bursts (unit-RMS noise scale) just before some syllable onsets."""
    sos = signal.butter(4, min(FRICATIVE_CUTOFF_HZ, 0.4 * sr), "highpass", fs=sr, output="sos")
    noise = signal.sosfilt(sos, rng.standard_normal(t.size))
    env = np.zeros_like(t)
    for onset in onsets[rng.random(onsets.size) < FRICATIVE_PROB]:
        length = rng.uniform(0.03, 0.12)
        i0, i1 = max(0, int((onset - length) * sr)), min(t.size, int(onset * sr))
        pos = (t[i0:i1] - onset + length) / length
        env[i0:i1] += rng.uniform(0.1, 0.4) * np.sin(np.pi * np.clip(pos, 0.0, 1.0))
    return np.asarray(noise / (np.std(noise) + _EPS) * env)


def voice_like(
    *, rng: Generator, duration: float, sr: int, snr_db: float | None = None,
    f0_hz: float | None = None,
) -> Float32Array:
    """Synthesise a speech-like voiced clip.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of all randomness.
    duration : float
        Clip length in seconds (> 0).
    sr : int
        Sample rate in Hz (>= 8000).
    snr_db : float or None
        If given, add background noise at this SNR (dB, whole-clip power); None gives a clean clip.
    f0_hz : float or None
        Base fundamental in Hz within ``F0_RANGE_HZ``; drawn at random when None.

    Returns
    -------
    numpy.ndarray
        float32, shape (round(duration * sr),), peak amplitude exactly 1.
    """
    n = _n_samples(duration, sr)
    if f0_hz is None:
        f0_hz = float(np.exp(rng.uniform(*np.log(F0_BASE_HZ))))
    elif not F0_RANGE_HZ[0] <= f0_hz <= F0_RANGE_HZ[1]:
        raise ValueError(f"f0_hz must be within {F0_RANGE_HZ} Hz, got {f0_hz}")
    t = np.arange(n) / sr
    env, onsets = _syllable_envelope(rng, t)
    voiced = _formant_filter(rng, _glottal_source(rng, t, sr, f0_hz), sr)
    voiced /= np.sqrt(np.mean(voiced**2)) + _EPS
    return _finish(rng, voiced * env + _fricatives(rng, onsets, t, sr), sr, snr_db)


def _hum(rng: Generator, t: FloatArray, sr: int, am: bool = False) -> FloatArray:
    """Machine/mains hum with harmonics; ``am`` adds irregular syllable-rate modulation."""
    mains = rng.random() < 0.5
    f0 = rng.choice(MAINS_HZ) * rng.integers(1, 4) if mains else rng.uniform(*HUM_F0_HZ)
    f = f0 * (1.0 + 0.003 * _slow_curve(rng, t, 0.5))
    tilt = rng.uniform(0.3, 1.5)
    x = _harmonic_stack(rng, _TWO_PI * np.cumsum(f) / sr, f.max(), sr, MAX_HARMONICS, tilt)
    env = 1.0 + 0.1 * _slow_curve(rng, t, 1.0)
    if am:
        phase = _TWO_PI * rng.uniform(*SYLLABLE_RATE_HZ) * t + 2.0 * _slow_curve(rng, t, 1.0)
        env *= 1.0 - rng.uniform(0.5, 0.95) * (0.5 + 0.5 * np.sin(phase))
    return x * env


def _band_noise(rng: Generator, t: FloatArray, sr: int) -> FloatArray:
    """Fan-/rain-like band-limited noise with slow level fluctuation and optional droplets."""
    lo = float(np.exp(rng.uniform(np.log(80.0), np.log(2500.0))))
    hi = min(lo * rng.uniform(1.5, 8.0), 0.45 * sr)
    sos = signal.butter(2, [lo, hi], "bandpass", fs=sr, output="sos")
    x = signal.sosfilt(sos, rng.standard_normal(t.size))
    x *= (1.0 + 0.4 * _slow_curve(rng, t, rng.uniform(0.3, 3.0))) / (np.std(x) + _EPS)
    if rng.random() < 0.4:  # rain: sparse broadband droplets
        drops = rng.random(t.size) < rng.uniform(20.0, 200.0) / sr
        x += rng.uniform(1.0, 4.0) * drops * rng.standard_normal(t.size)
    return np.asarray(x)


def _chirp(rng: Generator, t: FloatArray, sr: int) -> FloatArray:
    """Siren (sinusoidal FM) or repeated sweeps (sawtooth FM) with a few harmonics."""
    arg = _TWO_PI * rng.uniform(0.15, 3.0) * t + rng.uniform(0.0, _TWO_PI)
    wave = np.sin(arg) if rng.random() < 0.5 else signal.sawtooth(arg)
    f = rng.uniform(300.0, 1500.0) * 2.0 ** (rng.uniform(0.2, 1.0) * wave)
    x = _harmonic_stack(rng, _TWO_PI * np.cumsum(f) / sr, f.max(), sr, 3, 1.0)
    return x * (1.0 + 0.2 * _slow_curve(rng, t, 1.0))


def _clicks(rng: Generator, t: FloatArray, sr: int) -> FloatArray:
    """Clicks/knocks: random or ticking impulses through a damped resonance."""
    n, rate = t.size, rng.uniform(1.0, 12.0)
    ticking = rng.random() < 0.3
    times = (np.arange(rng.uniform(0.0, 1.0 / rate), n / sr, 1.0 / rate) if ticking
             else rng.uniform(0.0, n / sr, rng.poisson(rate * n / sr) + 1))
    imp = np.zeros(n)
    np.add.at(imp, np.minimum((times * sr).astype(np.int64), n - 1),
              rng.uniform(0.3, 1.0, times.size) * rng.choice([-1.0, 1.0], times.size))
    decay = rng.uniform(0.002, 0.04)
    kt = np.arange(int(5 * decay * sr) + 1) / sr
    kernel = np.exp(-kt / decay) * np.cos(_TWO_PI * rng.uniform(150.0, min(3000.0, 0.4 * sr)) * kt)
    return np.asarray(signal.fftconvolve(imp, kernel)[:n])


def _music(rng: Generator, t: FloatArray, sr: int) -> FloatArray:
    """Note sequence (slow attack, sustain, release), optional dyads and vibrato."""
    x, pos = np.zeros(t.size), int(rng.uniform(0.0, 0.3) * sr)
    vib_depth = rng.uniform(0.1, 0.3) if rng.random() < 0.3 else 0.0
    tilt, dyad_prob = rng.uniform(0.8, 2.0), rng.uniform(0.0, 0.6)
    while pos < t.size:
        lt = t[: min(int(rng.uniform(0.3, 2.0) * sr), t.size - pos)]
        attack, release = rng.uniform(0.05, 0.35), min(0.08, lt[-1] + 1.0 / sr)
        env = np.minimum(lt / attack, 1.0) * np.exp(-lt * rng.uniform(0.1, 1.5))
        env *= np.clip((lt[-1] - lt) / release, 0.0, 1.0)
        semis = rng.integers(45, 85) + vib_depth * np.sin(_TWO_PI * 5.5 * lt)
        for step in (0, int(rng.choice([3, 4, 7]))) if rng.random() < dyad_prob else (0,):
            f = 440.0 * 2.0 ** ((semis + step - 69) / 12.0)
            x[pos : pos + lt.size] += env * _harmonic_stack(
                rng, _TWO_PI * np.cumsum(f) / sr, f.max(), sr, 8, tilt)
        pos += int(lt.size * rng.uniform(0.85, 1.05)) + 1
    return x


def _door(rng: Generator, t: FloatArray, sr: int) -> FloatArray:
    """1-3 door-slam-like transients: low-passed noise thump plus decaying body resonance."""
    x = np.zeros(t.size)
    for onset in rng.uniform(0.0, max(t[-1] - 0.2, 0.0), int(rng.integers(1, 4))):
        i0, tau = int(onset * sr), rng.uniform(0.04, 0.3)
        lt = t[: min(int(5 * tau * sr), t.size - i0)]
        sos = signal.butter(2, rng.uniform(200.0, 1500.0), "lowpass", fs=sr, output="sos")
        thump = signal.sosfilt(sos, rng.standard_normal(lt.size))
        thump = thump / (np.std(thump) + _EPS) * np.exp(-lt / tau)
        body = np.sin(_TWO_PI * rng.uniform(60.0, 250.0) * lt) * np.exp(-lt / (0.7 * tau))
        x[i0 : i0 + lt.size] += rng.uniform(0.4, 1.0) * (thump + rng.uniform(0.5, 2.0) * body)
    return x


_CONFUSERS: Final[dict[str, Callable[[Generator, FloatArray, int], FloatArray]]] = {
    "hum": _hum, "hum_am": partial(_hum, am=True), "band_noise": _band_noise, "chirp": _chirp,
    "clicks": _clicks, "music": _music, "door": _door,
}


def confuser(
    *, rng: Generator, duration: float, sr: int, snr_db: float | None = None,
    kind: str | None = None,
) -> Float32Array:
    """Synthesise a non-voice confuser clip, sometimes with a quieter second confuser mixed in.

    Parameters
    ----------
    rng, duration, sr, snr_db
        As for :func:`voice_like`.
    kind : str or None
        One of ``CONFUSER_WEIGHTS``; drawn with those weights when None.

    Returns
    -------
    numpy.ndarray
        float32, shape (round(duration * sr),), peak amplitude exactly 1.
    """
    n = _n_samples(duration, sr)
    kinds = list(CONFUSER_WEIGHTS)
    if kind is None:
        kind = kinds[rng.choice(len(kinds), p=list(CONFUSER_WEIGHTS.values()))]
    elif kind not in _CONFUSERS:
        raise ValueError(f"unknown confuser kind {kind!r}; expected one of {kinds}")
    t = np.arange(n) / sr
    x = _unit_peak(_CONFUSERS[kind](rng, t, sr))
    if rng.random() < SECOND_CONFUSER_PROB:
        other = str(rng.choice([k for k in kinds if k != kind]))
        gain = 10.0 ** (rng.uniform(*SECOND_CONFUSER_DB) / 20.0)
        x = x + gain * _unit_peak(_CONFUSERS[other](rng, t, sr))
    return _finish(rng, x, sr, snr_db)


def make_demo_dataset(
    *, root: Path, n_per_class: int = 120, sr: int = 16000, seed: int = 0
) -> dict[str, int]:
    """Write root/allowed/*.wav (class 1) and root/not_allowed/*.wav (class 0).

    16-bit PCM mono WAV named ``<class>_0001.wav``...; duration U(1, 4) s, peak U(-30, -3) dBFS,
    background noise at a random SNR (10 % low), identically for both classes. Clip i depends only
    on (seed, class, i). Demo files are overwritten, stale ones beyond ``n_per_class`` removed;
    other files are left alone.

    Parameters
    ----------
    root : pathlib.Path
        Output folder (created if missing).
    n_per_class : int
        Number of clips per class (>= 1).
    sr : int
        Sample rate in Hz (>= 8000).
    seed : int
        Seed of the root :class:`numpy.random.SeedSequence`.

    Returns
    -------
    dict[str, int]
        Number of clips written per class name.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    _check_sr(sr)
    makers: dict[str, Callable[..., Float32Array]] = {
        "allowed": voice_like, "not_allowed": confuser}
    width = max(4, len(str(n_per_class)))
    for (name, make), class_seq in zip(
        makers.items(), np.random.SeedSequence(seed).spawn(len(makers)), strict=True
    ):
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        keep = {f"{name}_{i:0{width}d}.wav" for i in range(1, n_per_class + 1)}
        for old in folder.iterdir():
            if re.fullmatch(rf"{name}_\d+\.wav", old.name) and old.name not in keep:
                old.unlink()
        for i, clip_seq in enumerate(class_seq.spawn(n_per_class), start=1):
            rng = np.random.default_rng(clip_seq)
            duration = rng.uniform(*DURATION_RANGE_S)
            low = rng.random() < LOW_SNR_PROB
            snr_db = rng.uniform(*(LOW_SNR_DB_RANGE if low else SNR_DB_RANGE))
            x = make(rng=rng, duration=duration, sr=sr, snr_db=snr_db)
            x = x * np.float32(10.0 ** (rng.uniform(*PEAK_DBFS_RANGE) / 20.0))
            sf.write(folder / f"{name}_{i:0{width}d}.wav", x, sr, subtype="PCM_16")
    return {name: n_per_class for name in makers}


PROBE_SEED = 20240607
"""Seed of the generated clips that verify an ONNX export against PyTorch."""
PROBE_CLIPS_PER_KIND = 3


def probe_waves(features: FeatureConfig, *, seed: int = PROBE_SEED) -> np.ndarray:
    """Realistic verification inputs ``[shape=(n_clips, features.n_samples)]`` float32.

    Speech-like and confuser clips (full-length and short, i.e. zero-padded), a quiet clip
    near the ``AMIN`` power floor, and digital silence.
    """
    rng = np.random.default_rng(seed)
    sr, window_s = features.sr, features.n_samples / features.sr
    clips: list[np.ndarray] = []
    for _ in range(PROBE_CLIPS_PER_KIND):
        snr = float(rng.uniform(5.0, 30.0))
        clips.append(voice_like(rng=rng, duration=window_s, sr=sr, snr_db=snr))
        clips.append(confuser(rng=rng, duration=window_s, sr=sr, snr_db=snr))
        clips.append(voice_like(rng=rng, duration=window_s * rng.uniform(0.2, 0.6), sr=sr))
    clips.append(1e-4 * confuser(rng=rng, duration=window_s, sr=sr, snr_db=10.0))
    clips.append(np.zeros(features.n_samples, np.float32))
    return np.stack([fit_length(np.asarray(c, np.float32), n_samples=features.n_samples)
                     for c in clips])
