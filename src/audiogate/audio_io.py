"""Audio file I/O: the only module that reads or writes sound files.

Reading decodes with libsndfile (WAV, FLAC, OGG/Vorbis, MP3 and more, any bit depth), mixes to
mono, checks the samples are usable and resamples with soxr. Every way a file can be unusable
becomes an :class:`~audiogate.errors.AudioError` whose ``reason`` a user can read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError

AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au"})
"""File name endings treated as audio when scanning folders."""

MIN_SAMPLES = 400
"""Clips shorter than this many samples (25 ms at 16 kHz) after resampling are rejected."""

_DECODE_ERRORS = (sf.LibsndfileError, RuntimeError, ValueError, TypeError, EOFError,
                  OverflowError, MemoryError)


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of one file, read without decoding the samples."""

    path: str
    sr: int
    channels: int
    frames: int
    format: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sr if self.sr else 0.0


def _open_check(path: Path) -> None:
    if not path.exists():
        raise AudioError(path, "file does not exist (or is a broken/looping symlink)")
    if not path.is_file():
        raise AudioError(path, "not a regular file")
    if not os.access(path, os.R_OK):
        raise AudioError(path, "permission denied")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")


def probe(path: str | os.PathLike[str]) -> AudioInfo:
    """Read a file's header: sample rate, channels, frames, format."""
    path = Path(path)
    try:
        _open_check(path)
        info = sf.info(str(path))
    except OSError as exc:
        raise AudioError(path, f"cannot read ({exc.strerror or exc})") from None
    except _DECODE_ERRORS as exc:
        raise AudioError(path, f"not a readable audio file ({_short(exc)})") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(path, "contains no audio samples")
    return AudioInfo(path=str(path), sr=int(info.samplerate), channels=int(info.channels),
                     frames=int(info.frames), format=str(info.format))


def load_audio(path: str | os.PathLike[str], *, sr: int,
               max_seconds: float | None = None) -> np.ndarray:
    """Decode, mix to mono and resample to ``sr`` Hz.

    ``max_seconds`` reads only the start of long files. Returns float32 ``[shape=(n,)]``,
    ``n >= MIN_SAMPLES``. Raises :class:`AudioError` for anything unusable, including
    NaN/inf samples.
    """
    info = probe(path)
    frames = -1 if max_seconds is None else min(info.frames, int(max_seconds * info.sr) + 1)
    try:
        data, native_sr = sf.read(info.path, frames=frames, dtype="float32", always_2d=True)
    except OSError as exc:
        raise AudioError(path, f"cannot read ({exc.strerror or exc})") from None
    except _DECODE_ERRORS as exc:
        raise AudioError(path, f"corrupt or truncated audio ({_short(exc)})") from None
    return to_mono_resampled(data, native_sr=int(native_sr), sr=sr, source=info.path)


def to_mono_resampled(data: np.ndarray, *, native_sr: int, sr: int,
                      source: str = "<array>") -> np.ndarray:
    """Samples ``[shape=(n,)]`` or ``[shape=(n, channels)]`` -> validated mono at ``sr``."""
    y = np.asarray(data, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=1, dtype=np.float32)
    if y.ndim != 1:
        raise AudioError(source, f"expected (samples,) or (samples, channels), got {y.shape}")
    if not np.isfinite(y).all():
        raise AudioError(source, "contains NaN or infinite samples")
    if native_sr <= 0:
        raise AudioError(source, f"invalid sample rate {native_sr}")
    if native_sr != sr and y.size:
        y = soxr.resample(y, native_sr, sr, quality="HQ").astype(np.float32, copy=False)
    if y.size < MIN_SAMPLES:
        raise AudioError(source, f"too short: {y.size} samples at {sr} Hz "
                                 f"(need at least {MIN_SAMPLES})")
    return y


def write_wav(path: str | os.PathLike[str], y: np.ndarray, *, sr: int,
              subtype: str = "PCM_16") -> None:
    """Write mono float samples in [-1, 1] as a WAV file (folders are created)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(y, -1.0, 1.0), sr, subtype=subtype)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]
