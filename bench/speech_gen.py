"""Spoken words from espeak-ng: many voices, real sample rates, silence and background noise.

A :class:`Speaker` is one consistent voice identity: an espeak-ng voice and variant, a base
speed and pitch, and the sample rate its recordings come at (8 or 16 kHz, as real sources
differ). Each clip jitters speed and pitch a little within the speaker's range, trims
espeak's own silence, pads the word with leading and trailing silence of random length, adds
white, pink or babble noise (other words, in voices no speaker uses) at a random SNR and
scales it to a random peak level. Clips last 0.2-2 s.

Everything random comes from ``numpy.random.default_rng([seed, speaker, word, take])``, and
espeak-ng's output is deterministic, so a clip depends only on its seed and its place, not
on how many clips are made or in which process. :func:`spoken_word` returns one clip in
memory; :func:`generate_words` writes a folder ``root/<speaker>/<word>_<take>.wav`` using a
process pool.

A benchmark and test tool (it needs the espeak-ng program, which no pip install brings):
the speech benchmarks and the voice tests speak their words with it, and
:mod:`bench.impostors` makes the voice gate's built-in impostor embeddings with it; the
installed package never runs it.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import numpy as np
import soundfile as sf
from scipy import fft

from audiogate.data.audio_io import to_mono_resampled, write_wav
from audiogate.data.workers import resolve_workers
from audiogate.errors import DataError

ESPEAK: Final = "espeak-ng"
"""The text-to-speech program (Debian/Ubuntu package ``espeak-ng``)."""
INSTALL_HINT: Final = "apt-get install -y espeak-ng"


@dataclass(frozen=True)
class Speaker:
    """One voice identity: espeak-ng ``voice`` (language+variant), base ``speed`` (words per
    minute), base ``pitch`` (espeak's 0-99 scale) and the sample rate ``sr`` (Hz) of its
    recordings."""

    name: str
    voice: str
    speed: int
    pitch: int
    sr: int


SPEAKERS: Final = (
    Speaker(name="ava", voice="en+f3", speed=165, pitch=70, sr=16000),
    Speaker(name="ben", voice="en+m1", speed=150, pitch=35, sr=8000),
    Speaker(name="cleo", voice="en-us+f2", speed=175, pitch=60, sr=8000),
    Speaker(name="dan", voice="en-us+m3", speed=140, pitch=45, sr=16000),
    Speaker(name="eve", voice="en-gb-scotland+f4", speed=160, pitch=65, sr=16000),
    Speaker(name="finn", voice="en-gb-scotland+m2", speed=185, pitch=40, sr=8000),
    Speaker(name="gwen", voice="en-029+f1", speed=150, pitch=75, sr=8000),
    Speaker(name="hal", voice="en-029+m5", speed=130, pitch=30, sr=16000),
    Speaker(name="iris", voice="en-gb-x-rp+f5", speed=170, pitch=55, sr=16000),
    Speaker(name="jon", voice="en-gb-x-rp+m4", speed=155, pitch=50, sr=8000),
    Speaker(name="kai", voice="en+klatt", speed=145, pitch=40, sr=8000),
    Speaker(name="lea", voice="en-us+Annie", speed=180, pitch=70, sr=16000),
    Speaker(name="max", voice="en-gb-x-gbclan+m6", speed=165, pitch=25, sr=16000),
    Speaker(name="nia", voice="en-gb-x-gbcwmd+f2", speed=140, pitch=80, sr=8000),
    Speaker(name="otto", voice="en+m7", speed=190, pitch=45, sr=16000),
    Speaker(name="pia", voice="en-us-nyc+Alicia", speed=160, pitch=60, sr=8000),
)
"""Sixteen distinct voices, half recorded at 8 kHz and half at 16 kHz."""

WORDS: Final = ("open", "close", "stop", "go", "yes", "no", "left", "right", "seven", "zero")
"""The spoken vocabulary."""

BABBLE_VOICES: Final = ("de", "fr", "es", "it", "nl", "pl")
"""Voices of the babble noise: other languages, so no speaker is heard in it."""
BABBLE_WORDS: Final = ("house", "water", "morning", "paper", "little", "window", "garden",
                       "music", "yellow", "table", "river", "market")
"""Words of the babble noise, none of them in :data:`WORDS`."""
BABBLE_WORDS_PER_BED: Final = 36
BABBLE_BED_S: Final = 6.0
"""Babble is cut from a bed of this many seconds with this many overlapping words."""

SPEED_JITTER: Final = (0.9, 1.12)
"""Per-clip factor on the speaker's speed."""
PITCH_JITTER: Final = 6
"""Per-clip pitch offset, up to this many espeak pitch units either way."""
PAD_S: Final = (0.03, 0.6)
"""Leading and trailing silence (seconds), each drawn uniformly."""
DURATION_S: Final = (0.2, 2.0)
"""Every clip's length (seconds) lies in this range."""
SNR_DB: Final = (5.0, 30.0)
"""Speech-to-noise ratio (dB, speech power over the word only), uniform."""
NOISE_KINDS: Final = ("white", "pink", "babble")
"""Background noise kinds, drawn with equal probability."""
PEAK_DBFS: Final = (-20.0, -1.0)
"""Peak level of the finished clip (dBFS), uniform."""
TRIM_DB: Final = 40.0
"""espeak's own leading/trailing silence: 5 ms frames this far below the peak are cut."""
TRIM_FRAME_S: Final = 0.005
_EPS: Final = 1e-12


@dataclass(frozen=True)
class SpokenClip:
    """What one generated clip is: who said which word (take ``take``), at which sample rate,
    with how much silence before and after the word (seconds), and which noise at what
    SNR (dB). ``path`` is empty for clips kept in memory."""

    path: str
    speaker: str
    word: str
    take: int
    sr: int
    seconds: float
    lead_s: float
    trail_s: float
    noise: str
    snr_db: float


def require_espeak() -> str:
    """Path of the espeak-ng program; :class:`DataError` with the install command if absent."""
    found = shutil.which(ESPEAK)
    if found is None:
        raise DataError(f"{ESPEAK} is needed to generate spoken words but was not found on "
                        f"PATH; install it with: {INSTALL_HINT}")
    return found


def espeak(*, text: str, voice: str, speed: int, pitch: int, sr: int) -> np.ndarray:
    """``text`` spoken by espeak-ng, resampled to ``sr`` Hz: float32 ``[shape=(n,)]``,
    espeak's silence included. Raises :class:`DataError` if espeak-ng fails or is missing."""
    cmd = [require_espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text]
    done = subprocess.run(cmd, capture_output=True, check=False)
    if done.returncode != 0 or not done.stdout:
        reason = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
        raise DataError(f"{ESPEAK} could not speak {text!r} in voice {voice!r}: {reason}")
    y, native_sr = sf.read(io.BytesIO(done.stdout), dtype="float32")
    return to_mono_resampled(y, native_sr=int(native_sr), sr=sr, source=f"{ESPEAK} {voice}")


def trim_silence(*, y: np.ndarray, sr: int, top_db: float = TRIM_DB) -> np.ndarray:
    """``y`` without the leading and trailing frames (:data:`TRIM_FRAME_S` long) whose RMS
    is more than ``top_db`` below the loudest frame's."""
    hop = max(1, round(TRIM_FRAME_S * sr))
    n = len(y) // hop
    rms = np.sqrt(np.mean(y[: n * hop].reshape(n, hop) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10.0 ** (-top_db / 20.0))
    if loud.size == 0:
        return y
    return y[loud[0] * hop: (loud[-1] + 1) * hop]


def colored_noise(*, rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Unit-RMS noise ``[shape=(n,)]`` with power spectrum ~ 1 / f**exponent (0 = white,
    1 = pink)."""
    m = fft.next_fast_len(n, real=True)
    spec = fft.rfft(rng.standard_normal(m))
    spec[1:] *= np.arange(1, spec.size) ** (-exponent / 2.0)
    spec[0] = 0.0
    x = fft.irfft(spec, m)[:n]
    return np.asarray(x / (np.std(x) + _EPS), dtype=np.float64)


def babble_bed(*, seed: int, sr: int) -> np.ndarray:
    """Unit-RMS babble ``[shape=(BABBLE_BED_S * sr,)]``, to be read circularly:
    :data:`BABBLE_WORDS_PER_BED` words in :data:`BABBLE_VOICES`, started at evenly spread
    places (wrapping round the end), so several always overlap."""
    rng = np.random.default_rng([seed, 0xBAB])
    n = round(BABBLE_BED_S * sr)
    step = n // BABBLE_WORDS_PER_BED
    bed = np.zeros(n)
    for i in range(BABBLE_WORDS_PER_BED):
        word = espeak(text=str(rng.choice(BABBLE_WORDS)), voice=str(rng.choice(BABBLE_VOICES)),
                      speed=int(rng.integers(140, 200)), pitch=int(rng.integers(20, 80)), sr=sr)
        word = trim_silence(y=word, sr=sr)[:n]
        at = i * step + int(rng.integers(0, step))
        bed[(at + np.arange(word.size)) % n] += rng.uniform(0.5, 1.0) * word / (
            np.abs(word).max() + _EPS)
    return bed / (np.std(bed) + _EPS)


def _noise(rng: np.random.Generator, kind: str, n: int, babble: np.ndarray) -> np.ndarray:
    """Unit-RMS background noise ``[shape=(n,)]`` of ``kind``."""
    if kind == "babble":
        at = int(rng.integers(0, babble.size))
        x = babble[(at + np.arange(n)) % babble.size]
    else:
        x = colored_noise(rng=rng, n=n, exponent=0.0 if kind == "white" else 1.0)
    return np.asarray(x / (np.sqrt(np.mean(x**2)) + _EPS))


def _pads(rng: np.random.Generator, speech_s: float) -> tuple[float, float]:
    """Leading and trailing silence (s) so that the clip lasts within :data:`DURATION_S`."""
    lead, trail = rng.uniform(*PAD_S, size=2)
    room = DURATION_S[1] - speech_s
    if lead + trail > room:
        lead, trail = lead * room / (lead + trail), trail * room / (lead + trail)
    short = DURATION_S[0] - (speech_s + lead + trail)
    return float(lead), float(trail + max(short, 0.0))


def spoken_word(*, word: str, speaker: Speaker, seed: int, take: int, babble: np.ndarray,
                noise: bool = True) -> tuple[np.ndarray, SpokenClip]:
    """One clip of ``speaker`` saying ``word`` (take number ``take``): float32 samples
    ``[shape=(n,)]`` at ``speaker.sr`` Hz, peak in :data:`PEAK_DBFS`, and its description.

    ``babble``: a :func:`babble_bed` at ``speaker.sr``. The clip depends only on ``seed``,
    the speaker's name, ``word`` and ``take``. ``noise=False`` leaves the background noise
    out and changes nothing else (the description still names the noise it would have had).
    """
    rng = np.random.default_rng([seed, *map(ord, speaker.name), 0, *map(ord, word), 0, take])
    speed = round(speaker.speed * rng.uniform(*SPEED_JITTER))
    pitch = int(np.clip(speaker.pitch + rng.integers(-PITCH_JITTER, PITCH_JITTER + 1), 0, 99))
    sr = speaker.sr
    speech = trim_silence(y=espeak(text=word, voice=speaker.voice, speed=speed, pitch=pitch,
                                   sr=sr), sr=sr).astype(np.float64)
    speech = speech[: round((DURATION_S[1] - 2 * PAD_S[0]) * sr)]  # a word never this long
    lead_s, trail_s = _pads(rng, speech.size / sr)
    lead, trail = round(lead_s * sr), round(trail_s * sr)
    y = np.concatenate([np.zeros(lead), speech, np.zeros(trail)])
    kind = str(rng.choice(NOISE_KINDS))
    snr_db = float(rng.uniform(*SNR_DB))
    speech_rms = float(np.sqrt(np.mean(speech**2)))
    if noise:
        y += _noise(rng, kind, y.size, babble) * speech_rms * 10.0 ** (-snr_db / 20.0)
    peak = 10.0 ** (rng.uniform(*PEAK_DBFS) / 20.0)
    y *= peak / (np.abs(y).max() + _EPS)
    clip = SpokenClip(path="", speaker=speaker.name, word=word, take=take, sr=sr,
                      seconds=y.size / sr, lead_s=lead / sr, trail_s=trail / sr, noise=kind,
                      snr_db=snr_db)
    return y.astype(np.float32), clip


def _write_speaker(root: str, speaker: Speaker, words: Sequence[str], takes: int, seed: int,
                   babble: np.ndarray) -> list[SpokenClip]:
    """Worker task: every clip of one speaker, written as ``root/<speaker>/<word>_<take>.wav``
    (atomically: a hidden temporary file, then a rename)."""
    out = []
    for word in words:
        for take in range(takes):
            y, clip = spoken_word(word=word, speaker=speaker, seed=seed, take=take,
                                  babble=babble)
            path = Path(root, speaker.name, f"{word}_{take:03d}.wav")
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.wav")  # hidden: never listed
            write_wav(tmp, y, sr=speaker.sr)
            os.replace(tmp, path)
            out.append(replace(clip, path=str(path)))
    return out


def generate_words(*, root: str | os.PathLike[str], seed: int, takes: int,
                   speakers: Sequence[Speaker] = SPEAKERS, words: Sequence[str] = WORDS,
                   workers: int = 0) -> list[SpokenClip]:
    """Write ``takes`` clips of every word by every speaker under ``root`` (16-bit WAV at
    each speaker's rate) with ``workers`` processes (0 = every core); returns what was
    written, speaker by speaker, word by word, take by take.

    Raises :class:`DataError` when espeak-ng is missing, for duplicate speaker names, or for
    an empty vocabulary.
    """
    require_espeak()
    names = [s.name for s in speakers]
    if len(set(names)) != len(names) or not names:
        raise DataError(f"speaker names must be unique and not empty, got {names}")
    if not words or takes < 1:
        raise DataError(f"need at least one word and one take, got {list(words)}, {takes}")
    beds = {sr: babble_bed(seed=seed, sr=sr) for sr in sorted({s.sr for s in speakers})}
    for s in speakers:
        Path(root, s.name).mkdir(parents=True, exist_ok=True)
    n_workers = min(len(speakers), resolve_workers(workers))
    jobs = [(str(root), s, tuple(words), takes, seed, beds[s.sr]) for s in speakers]
    if n_workers <= 1:
        return [c for job in jobs for c in _write_speaker(*job)]
    with ProcessPoolExecutor(max_workers=n_workers) as pool:
        return [c for done in pool.map(_write_speaker, *zip(*jobs, strict=True)) for c in done]
