"""Audio file I/O: the only module that reads or writes sound files.

Reading decodes with libsndfile (WAV, FLAC, OGG/Vorbis, MP3 and more, any bit depth), mixes to
mono, checks the samples are usable and resamples with soxr. Every way a file can be unusable
becomes an :class:`~audiogate.errors.AudioError` whose ``reason`` a user can read.

Untrusted files (the service's uploads) are read within a :class:`DecodeBudget` by
:func:`load_audio_within`: refused from their header when they would decode to too much, then
decoded block by block, so memory stays near the mono result whatever the file's rate and
channel count.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
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

RESAMPLE_QUALITY = "HQ"
"""soxr quality of every resampling (one-shot and streaming alike)."""

_FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})
"""Sample encodings that can hold NaN or infinity."""

_DECODE_ERRORS = (sf.LibsndfileError, RuntimeError, ValueError, TypeError, EOFError,
                  OverflowError, MemoryError)


class AudioTooLarge(AudioError):
    """A file over a :class:`DecodeBudget`: refused from its header before it is decoded, or
    when its decoding goes past the budget."""


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

    @property
    def samples(self) -> int:
        """Samples it decodes to: frames x channels, at its own rate."""
        return self.frames * self.channels

    def resampled_length(self, sr: int) -> int:
        """Samples of its mono mix at ``sr`` Hz (soxr's length: round half up)."""
        return (2 * self.frames * sr + self.sr) // (2 * self.sr)


@dataclass(frozen=True, kw_only=True)
class DecodeBudget:
    """The most one file (or a request's files together) may cost to decode:
    ``max_seconds`` of recording and ``max_samples`` samples decoded (frames x channels, at the
    file's own rate). The second bounds the decoding work whatever the rate and channel count:
    a 4-channel 192 kHz file decodes to 48 times the samples of the same length at 16 kHz mono.
    """

    max_seconds: float
    max_samples: int

    def check(self, info: AudioInfo, *, seconds: float = 0.0, samples: int = 0) -> None:
        """Refuse ``info`` from its header (before any decoding) with
        :class:`AudioTooLarge`; ``seconds`` and ``samples``: already spent by earlier files
        of the same request."""
        if seconds + info.duration > self.max_seconds:
            raise AudioTooLarge(info.path, f"recording too long: {seconds + info.duration:.1f} s"
                                           f"; the limit is {self.max_seconds:g} s")
        if samples + info.samples > self.max_samples:
            raise AudioTooLarge(info.path, (
                f"too much audio to decode: {info.channels} channel(s) x {info.sr} Hz x "
                f"{info.duration:.1f} s = {_mega(samples + info.samples)} samples; the limit "
                f"is {_mega(self.max_samples)} ({self.max_seconds:g} s of stereo 48 kHz). Send "
                "it mixed to mono, at a lower rate, or shorter"))

    def check_decoded(self, *, source: str, frames: int, channels: int, sr: int) -> None:
        """While decoding: :class:`AudioTooLarge` once ``frames`` decoded go past the budget
        (a header that under-stated the file's length)."""
        if frames * channels > self.max_samples or frames > self.max_seconds * sr:
            raise AudioTooLarge(source, f"decodes to more than its header says, past the "
                                        f"limit ({self.max_seconds:g} s, "
                                        f"{_mega(self.max_samples)} samples)")


def _mega(n: int) -> str:
    return f"{n / 1e6:.1f} M"


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


def _mono(y: np.ndarray, *, source: str) -> np.ndarray:
    """Finite float32 ``[shape=(n,)]`` or ``[shape=(n, channels)]`` -> the channels' mean."""
    _require_finite(y, source=source)
    if y.ndim == 2 and y.shape[1] == 1:  # the same values, without a copy
        y = y[:, 0]
    elif y.ndim == 2:  # float64 sum: huge finite channels cannot overflow to inf
        y = y.mean(axis=1, dtype=np.float64).astype(np.float32)
    return y


def _require_finite_resampled(y: np.ndarray, *, source: str) -> None:
    if not np.isfinite(y).all():  # filter overshoot near the float32 limit
        raise AudioError(source, "sample values too large to resample "
                                 "(beyond the float32 range after filtering)")


def to_mono_resampled(data: np.ndarray, *, native_sr: int, sr: int,
                      source: str = "<array>") -> np.ndarray:
    """Samples ``[shape=(n,)]`` or ``[shape=(n, channels)]`` -> validated mono at ``sr``."""
    try:
        y = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise AudioError(source, f"not an array of numbers ({_short(exc)})") from None
    if y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] == 0):
        raise AudioError(source, f"expected (samples,) or (samples, channels), got {y.shape}")
    y = _mono(y, source=source)
    _check_native_sr(native_sr, source=source)
    if native_sr != sr and y.size:
        y = soxr.resample(y, native_sr, sr, quality=RESAMPLE_QUALITY).astype(np.float32,
                                                                            copy=False)
        _require_finite_resampled(y, source=source)
    if y.size < MIN_SAMPLES:
        raise AudioError(source, _too_short(y.size, sr))
    return y


def stream_audio(path: str | os.PathLike[str], *, sr: int,
                 block_frames: int = BLOCK_FRAMES,
                 budget: DecodeBudget | None = None) -> Iterator[np.ndarray]:
    """Decode ``path`` block by block, mixed to mono and resampled to ``sr`` Hz as it goes,
    so memory is bounded by ``block_frames`` whatever the file's length.

    Yields float32 blocks ``[shape=(m,)]`` (``m`` may be 0); their concatenation equals
    :func:`load_audio`'s samples (the streaming resampler runs the same filter). Raises
    :class:`AudioError` as :func:`load_audio` does; a block with NaN/inf when it is reached,
    a file too short after the last block. With a ``budget``, :class:`AudioTooLarge` before
    the first block for a header over it, and as soon as the decoded frames go past it.
    """
    info = probe(path)
    if budget is not None:
        budget.check(info)
    stream = (None if info.sr == sr else
              soxr.ResampleStream(info.sr, sr, 1, dtype="float32", quality=RESAMPLE_QUALITY))
    total = frames = 0
    try:
        sound = sf.SoundFile(info.path)
    except OSError as exc:
        raise AudioError(path, f"cannot read ({exc.strerror or exc})") from None
    except _DECODE_ERRORS as exc:
        raise AudioError(path, f"corrupt or truncated audio ({_short(exc)})") from None
    with sound:
        blocks = sound.blocks(blocksize=block_frames, dtype="float32", always_2d=True)
        while True:
            try:
                block = next(blocks, None)
            except OSError as exc:
                raise AudioError(path, f"cannot read ({exc.strerror or exc})") from None
            except _DECODE_ERRORS as exc:
                raise AudioError(path, f"corrupt or truncated audio ({_short(exc)})") from None
            if block is None:
                break
            frames += len(block)
            if budget is not None:
                budget.check_decoded(source=info.path, frames=frames, channels=info.channels,
                                     sr=info.sr)
            y = _mono(block, source=info.path)
            if stream is not None:
                y = stream.resample_chunk(y)
                _require_finite_resampled(y, source=info.path)
            total += y.size
            yield y
    if stream is not None:
        y = stream.resample_chunk(np.zeros(0, np.float32), last=True)
        _require_finite_resampled(y, source=info.path)
        total += y.size
        yield y
    if total < MIN_SAMPLES:
        raise AudioError(info.path, _too_short(total, sr))


def load_audio_within(path: str | os.PathLike[str], *, sr: int, budget: DecodeBudget,
                      keep: int | None = None) -> np.ndarray:
    """:func:`load_audio` for files nobody vouches for: refused from the header when over
    ``budget`` (:class:`AudioTooLarge`, nothing decoded), else decoded by
    :func:`stream_audio` into one array sized from the header, so memory stays near the
    result (plus a few blocks) whatever the file's rate and channel count.

    ``keep``: samples kept (default all); the rest is still decoded and checked, so a file is
    judged the same however much of it is kept. Returns float32 ``[shape=(n,)]`` at ``sr``,
    the same samples as :func:`load_audio` (its first ``keep``).
    """
    info = probe(path)
    budget.check(info)
    expected = info.resampled_length(sr)
    out = np.empty(expected if keep is None else min(keep, expected), np.float32)
    n = 0
    for block in stream_audio(path, sr=sr, budget=budget):
        take = block if keep is None else block[:max(0, keep - n)]
        if n + take.size > len(out):  # more than the header said (still within the budget)
            out = np.concatenate([out[:n], np.empty(max(n, take.size), np.float32)])
        out[n:n + take.size] = take
        n += take.size
    return out if n == len(out) else out[:n].copy()


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
_MISLEADING = {
    # libsndfile's answer for a file it cannot parse as MPEG (e.g. text named .mp3), given
    # only after _open_check found an existing, readable regular file
    "File does not exist or is not a regular file (possibly a pipe?).":
        "not decodable audio: unknown format or corrupt data",
}
"""libsndfile messages that would mislead for a file already known to exist, and what to say."""


def _short(exc: BaseException) -> str:
    """First line of an exception's message, without libsndfile's "Error opening 'path': "
    prefix (the path is already part of every skipped record)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^Error opening .*?: ", "", text)
    return _MISLEADING.get(text, text)[:160]
