"""Audio file I/O: the only module that reads or writes sound files.

Reading decodes with libsndfile (WAV, FLAC, OGG/Vorbis, MP3 and more, any bit depth), mixes to
mono, checks the samples are usable and resamples with soxr. Every way a file can be unusable
becomes an :class:`~audiogate.errors.AudioError` whose ``reason`` a user can read.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ..errors import AudioError

AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au"})
"""File name endings treated as audio when scanning folders."""

MIN_SAMPLES = 400
"""Clips shorter than this many samples (25 ms at 16 kHz) after resampling are rejected."""

NATIVE_SR_RANGE = (1000, 1_000_000)
"""Plausible sample rates (Hz) of a file; anything outside is a corrupt header (a rate of
1 Hz would resample a short file to gigabytes)."""

BLOCK_FRAMES = 1 << 16
"""Frames per block when a whole file is decoded piecewise (bounded memory for long files)."""

_FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})
"""Sample encodings that can hold NaN or infinity."""

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
    subtype: str = ""

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sr if self.sr else 0.0


def _open_check(path: Path) -> None:
    if not path.exists():
        raise AudioError(path, "broken or looping symlink" if path.is_symlink()
                         else "file does not exist")
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
    if info.frames <= 0:
        raise AudioError(path, "contains no audio samples")
    _check_native_sr(int(info.samplerate), source=str(path))
    return AudioInfo(path=str(path), sr=int(info.samplerate), channels=int(info.channels),
                     frames=int(info.frames), format=str(info.format),
                     subtype=str(info.subtype))


def _check_native_sr(native_sr: int, *, source: str) -> None:
    low, high = NATIVE_SR_RANGE
    if not low <= native_sr <= high:
        raise AudioError(source, f"implausible sample rate {native_sr} Hz (expected "
                                 f"{low}..{high}; corrupt header?)")


def load_audio(path: str | os.PathLike[str], *, sr: int,
               max_seconds: float | None = None) -> np.ndarray:
    """Decode, mix to mono and resample to ``sr`` Hz.

    ``max_seconds`` decodes only the start of long files; the rest of a float-encoded file
    is still scanned (block by block) for NaN/inf, so a file is judged the same however much
    of it is used. Returns float32 ``[shape=(n,)]``, ``n >= MIN_SAMPLES``. Raises
    :class:`AudioError` for anything unusable, including NaN/inf samples.
    """
    info = probe(path)
    frames = -1 if max_seconds is None else min(info.frames, int(max_seconds * info.sr) + 1)
    try:
        data, native_sr = sf.read(info.path, frames=frames, dtype="float32", always_2d=True)
        if info.subtype in _FLOAT_SUBTYPES and 0 < frames < info.frames:
            for block in sf.blocks(info.path, blocksize=BLOCK_FRAMES, start=frames,
                                   dtype="float32", always_2d=True):
                _require_finite(block, source=info.path)
    except OSError as exc:
        raise AudioError(path, f"cannot read ({exc.strerror or exc})") from None
    except _DECODE_ERRORS as exc:
        raise AudioError(path, f"corrupt or truncated audio ({_short(exc)})") from None
    return to_mono_resampled(data, native_sr=int(native_sr), sr=sr, source=info.path)


def verify(path: str | os.PathLike[str], *, sr: int) -> AudioInfo:
    """Decode a whole file block by block (memory bounded by :data:`BLOCK_FRAMES`) and judge
    it as :func:`load_audio` would, without keeping the samples.

    Returns the header facts with ``frames`` set to the frames actually decoded. Raises
    :class:`AudioError` for a file that is unreadable, corrupt, non-finite or shorter than
    :data:`MIN_SAMPLES` at ``sr`` Hz.
    """
    info = probe(path)
    frames = 0
    try:
        for block in sf.blocks(info.path, blocksize=BLOCK_FRAMES, dtype="float32",
                               always_2d=True):
            _require_finite(block, source=info.path)
            frames += len(block)
    except OSError as exc:
        raise AudioError(path, f"cannot read ({exc.strerror or exc})") from None
    except _DECODE_ERRORS as exc:
        raise AudioError(path, f"corrupt or truncated audio ({_short(exc)})") from None
    n_out = (2 * frames * sr + info.sr) // (2 * info.sr)  # soxr's length: round half up
    if n_out < MIN_SAMPLES:
        raise AudioError(info.path, _too_short(n_out, sr))
    return replace(info, frames=frames)


def _require_finite(y: np.ndarray, *, source: str) -> None:
    if not np.isfinite(y).all():
        raise AudioError(source, "contains NaN or infinite samples")


def _too_short(n: int, sr: int) -> str:
    return f"too short: {n} samples at {sr} Hz (need at least {MIN_SAMPLES})"


def to_mono_resampled(data: np.ndarray, *, native_sr: int, sr: int,
                      source: str = "<array>") -> np.ndarray:
    """Samples ``[shape=(n,)]`` or ``[shape=(n, channels)]`` -> validated mono at ``sr``."""
    try:
        y = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise AudioError(source, f"not an array of numbers ({_short(exc)})") from None
    if y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] == 0):
        raise AudioError(source, f"expected (samples,) or (samples, channels), got {y.shape}")
    _require_finite(y, source=source)
    if y.ndim == 2:  # float64 sum: huge finite channels cannot overflow to inf
        y = y.mean(axis=1, dtype=np.float64).astype(np.float32)
    _check_native_sr(native_sr, source=source)
    if native_sr != sr and y.size:
        y = soxr.resample(y, native_sr, sr, quality="HQ").astype(np.float32, copy=False)
        if not np.isfinite(y).all():  # filter overshoot near the float32 limit
            raise AudioError(source, "sample values too large to resample "
                                     "(beyond the float32 range after filtering)")
    if y.size < MIN_SAMPLES:
        raise AudioError(source, _too_short(y.size, sr))
    return y


def write_wav(path: str | os.PathLike[str], y: np.ndarray, *, sr: int,
              subtype: str = "PCM_16") -> None:
    """Write mono float samples in [-1, 1] as a WAV file (folders are created)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(y, -1.0, 1.0), sr, subtype=subtype)


def wav_bytes(y: np.ndarray, *, sr: int) -> bytes:
    """Mono float samples in [-1, 1] ``[shape=(n,)]`` as the bytes of a 16-bit PCM WAV file."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(y, -1.0, 1.0), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _short(exc: BaseException) -> str:
    """First line of an exception's message, without libsndfile's "Error opening 'path': "
    prefix (the path is already part of every skipped record)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^Error opening .*?: ", "", text)[:160]
