"""The per-upload work of the service, shared by its routes: the limits
(:class:`ServeSettings`), and :class:`Judge`, which checks and decodes an upload, judges it
(verdict and segments) and draws its spectrogram, one request at a time on the gate.

An upload is refused from its header when it would decode to too much (413: longer than
``max_seconds``, or more samples than :data:`DECODED_SAMPLES_PER_S` x ``max_seconds``), then
decoded block by block, so a request holds about its mono result at the gate's rate whatever
the file's rate and channel count; at most :data:`WORK_SLOTS` requests decode and judge at
once."""

from __future__ import annotations

import base64
import contextlib
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from fastapi import HTTPException

from ..config import FeatureConfig
from ..core.gate import Gate
from ..data.audio_io import (
    AUDIO_EXTENSIONS,
    AudioInfo,
    AudioTooLarge,
    DecodeBudget,
    load_audio_within,
    probe,
)
from ..errors import AudioError, ConfigError
from ..features.frontend import LogMel, power_to_db
from .guard import check_token
from .scan import DEFAULT_HOP_S, scan_wave

log = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_SECONDS = 600.0
DEFAULT_IDLE_TIMEOUT_S = 15
SPECTROGRAM_COLUMNS = 800
"""Most time columns of the spectrogram sent to the page (longer audio is averaged down)."""
SPECTROGRAM_CHUNK_S = 30.0
"""Seconds of audio per STFT call when computing the display spectrogram (bounds memory)."""
SCAN_MAX_WINDOWS = 240
"""Most windows scanned per upload: long uploads get a coarser hop (bounds request time)."""
UINT8_MAX = 255
DECODED_SAMPLES_PER_S = 2 * 48_000
"""Samples (all channels, at the file's own rate) an upload may decode to per second of
``max_seconds``: the longest recording in stereo at 48 kHz (what phones, browsers and
recorders make). More channels or a higher rate pass when the recording is shorter; a 4-channel
192 kHz file just under ``max_seconds`` (8 times the budget) is refused before decoding."""
NAME_CHARS = 80
"""Most characters of a client's file name repeated in a message."""
WORK_SLOTS = 2
"""Requests that decode and judge at once; more wait their turn. The gate judges one at a time
anyway: a second slot decodes the next upload meanwhile. Bounds the service's decoded audio to
two uploads' worth however many requests arrive together."""


@dataclass(frozen=True, kw_only=True)
class ServeSettings:
    """Limits of the service. ``max_upload_mb``: request body cap (MiB); ``max_seconds``:
    longest recording accepted (and, times :data:`DECODED_SAMPLES_PER_S`, the most samples
    an upload, or an enrolment request's files together, may decode to); ``hop_s``: hop of
    the segment scan returned with each verdict (coarsened for long uploads so at most
    ``SCAN_MAX_WINDOWS`` windows are judged);
    ``token``: access token every request but ``/health`` and the page must carry (None: no
    token); ``idle_timeout_s``: seconds a client may stay silent while the server waits for
    its request head or body; ``enroll_out``: see the field."""

    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    max_seconds: float = DEFAULT_MAX_SECONDS
    hop_s: float = DEFAULT_HOP_S
    token: str | None = field(default=None, repr=False)
    idle_timeout_s: int = DEFAULT_IDLE_TIMEOUT_S
    enroll_out: str | None = None
    """Voice gate: where ``POST /enroll`` and ``DELETE /enroll/{name}`` write the gate after
    each change (None: enrolment over HTTP is off)."""
    local_only: bool | None = None
    """Answer only requests addressed to a loopback name (:class:`~.guard.LoopbackHostOnly`);
    None: :func:`run_server` turns it on when there is no token and it listens on loopback."""

    def __post_init__(self) -> None:
        for name in ("max_upload_mb", "max_seconds", "hop_s", "idle_timeout_s"):
            value = getattr(self, name)
            if not (value > 0 and np.isfinite(value)):
                raise ConfigError(f"serve setting '{name}' must be > 0, got {value}")
        check_token(self.token)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MiB)

    @property
    def decode_budget(self) -> DecodeBudget:
        """What one upload, or one enrolment request's files together, may decode to."""
        return DecodeBudget(max_seconds=self.max_seconds,
                            max_samples=int(self.max_seconds * DECODED_SAMPLES_PER_S))


def display_spectrogram(*, wave: np.ndarray, frontend: LogMel,
                        max_columns: int = SPECTROGRAM_COLUMNS) -> dict[str, Any]:
    """Log-mel spectrogram for display: dB re max, floored at ``-top_db``, as uint8.

    ``wave`` ``[shape=(n,)]`` at ``frontend.cfg.sr``. Returns ``n_mels``, ``n_frames`` (at most
    ``max_columns``), ``seconds_per_column``, ``top_db`` and ``data``: base64 of uint8
    ``[shape=(n_mels, n_frames)]`` row-major, lowest mel band first, 0 = ``-top_db``,
    255 = 0 dB.
    """
    cfg: FeatureConfig = frontend.cfg
    chunk = max(1, int(SPECTROGRAM_CHUNK_S * cfg.sr) // cfg.hop_length) * cfg.hop_length
    wave = wave / max(1.0, float(np.abs(wave).max(initial=0.0)))  # one scale for all chunks
    parts = []
    with torch.no_grad():
        for start in range(0, wave.size, chunk):
            piece = torch.from_numpy(np.ascontiguousarray(wave[start:start + chunk]))
            part = frontend.mel_power(piece[None])[0]
            last = start + chunk >= wave.size
            parts.append((part if last else part[:, :-1]).numpy())
    power = np.concatenate(parts, axis=1).astype(np.float64)
    factor = -(-power.shape[1] // max_columns)
    if factor > 1:
        pad = factor * -(-power.shape[1] // factor) - power.shape[1]
        power = np.pad(power, ((0, 0), (0, pad)), mode="edge")
        power = power.reshape(power.shape[0], -1, factor).mean(axis=2)
    db = power_to_db(torch.from_numpy(power)[None], top_db=cfg.top_db)[0].numpy()
    pixels = np.round((db + cfg.top_db) / cfg.top_db * UINT8_MAX).astype(np.uint8)
    return {"n_mels": int(pixels.shape[0]), "n_frames": int(pixels.shape[1]),
            "seconds_per_column": factor * cfg.hop_length / cfg.sr, "top_db": cfg.top_db,
            "data": base64.b64encode(pixels.tobytes()).decode("ascii")}


class Judge:
    """The per-upload work: save to a temp folder, check, decode, predict, scan, draw."""

    def __init__(self, gate: Gate, settings: ServeSettings) -> None:
        self.gate = gate
        self.settings = settings
        self.frontend = LogMel(gate.features)
        self.lock = threading.Lock()
        """Held while the gate judges or changes: one at a time."""
        self.slots = threading.BoundedSemaphore(WORK_SLOTS)
        """Held while a request decodes and judges (:data:`WORK_SLOTS`)."""

    def __call__(self, upload: IO[bytes], filename: str | None) -> dict[str, Any]:
        began = time.perf_counter()
        with self.slots:
            wave = self.decode(upload, filename)
            sr = self.gate.features.sr
            hop_s = max(self.settings.hop_s, wave.size / sr / SCAN_MAX_WINDOWS)
            with self.lock:
                pred = self.gate.predict(wave, sr=sr)
                scan = scan_wave(self.gate, wave=wave, sr=sr, hop_s=hop_s, source="upload")
            spectrogram = display_spectrogram(wave=wave, frontend=self.frontend)
        elapsed_ms = 1000.0 * (time.perf_counter() - began)
        log.info("predict %.2f s of audio -> %s (%.2f) in %.0f ms", wave.size / sr,
                 pred.label, pred.confidence, elapsed_ms)
        return {"label": pred.label, "confidence": pred.confidence,
                "probabilities": pred.probabilities, "positive": pred.positive,
                "score": pred.score,
                "threshold": pred.threshold, "n_windows": pred.n_windows,
                "classes": list(self.gate.classes),
                "duration_s": wave.size / sr, "window_s": self.gate.features.n_samples / sr,
                "segments": [s.as_dict() for s in scan.segments], "hop_s": scan.hop_s,
                "spectrogram": spectrogram, "elapsed_ms": round(elapsed_ms, 1)}

    def decode(self, upload: IO[bytes], filename: str | None) -> np.ndarray:
        """Upload -> mono float32 at ``features.sr``; HTTP 413/415/422 for unusable files."""
        return self.decode_all([(upload, filename)])[0]

    def decode_all(self, uploads: Sequence[tuple[IO[bytes], str | None]], *,
                   keep: int | None = None) -> list[np.ndarray]:
        """The uploads of one request -> mono float32 at ``features.sr``, the first ``keep``
        samples of each (default all).

        Every header is checked before anything is decoded: each file, and all of them
        together, within :attr:`ServeSettings.decode_budget` (413); then the files are decoded
        one at a time, each within what the ones before it left of the budget. HTTP
        413/415/422 name the file when there are several.
        """
        budget = self.settings.decode_budget
        with _saved(uploads) as saved:
            infos = [self._probe(path, name) for path, name in saved]
            seconds, samples = 0.0, 0
            for info, (_, name) in zip(infos, saved, strict=True):
                try:
                    budget.check(info)
                    budget.check(info, seconds=seconds, samples=samples)
                except AudioTooLarge as exc:
                    together = " (with the files before it in the request)" if samples else ""
                    raise HTTPException(413, f"{name}{exc.reason}{together}") from None
                seconds, samples = seconds + info.duration, samples + info.samples
            waves, seconds, samples = [], 0.0, 0
            for info, (path, name) in zip(infos, saved, strict=True):
                left = DecodeBudget(max_seconds=budget.max_seconds - seconds,
                                    max_samples=budget.max_samples - samples)
                waves.append(self._load(path, name, budget=left, keep=keep))
                seconds, samples = seconds + info.duration, samples + info.samples
            return waves

    def _probe(self, path: Path, name: str) -> AudioInfo:
        if path.stat().st_size == 0:
            raise HTTPException(422, f"{name}empty upload: the file has 0 bytes")
        try:
            return probe(path)
        except AudioError as exc:
            raise HTTPException(415, f"{name}unsupported audio file: {exc.reason}. Send WAV, "
                                     "FLAC, OGG or MP3.") from None

    def _load(self, path: Path, name: str, *, budget: DecodeBudget,
              keep: int | None) -> np.ndarray:
        try:
            return load_audio_within(path, sr=self.gate.features.sr, budget=budget, keep=keep)
        except AudioTooLarge as exc:
            raise HTTPException(413, f"{name}{exc.reason}") from None
        except AudioError as exc:
            raise HTTPException(422, f"{name}unusable audio: {exc.reason}") from None


@contextlib.contextmanager
def _saved(uploads: Sequence[tuple[IO[bytes], str | None]]) -> Iterator[list[tuple[Path, str]]]:
    """The uploads copied into a fresh temporary folder (removed after), as ``(path,
    prefix)``: the prefix names the client's file in messages when there are several ("" for
    one). The client's file name is never used as a path, only its known audio extension."""
    with tempfile.TemporaryDirectory(prefix="audiogate-upload-") as tmp:
        saved = []
        for i, (upload, filename) in enumerate(uploads):
            suffix = Path(filename or "").suffix.lower()
            path = Path(tmp) / f"upload{i}{suffix if suffix in AUDIO_EXTENSIONS else ''}"
            with open(path, "wb") as out:
                shutil.copyfileobj(upload, out)
            name = (f"file {i + 1} ({(filename or '')[:NAME_CHARS]!r}): "
                    if len(uploads) > 1 else "")
            saved.append((path, name))
        yield saved
