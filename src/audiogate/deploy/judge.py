"""The per-upload work of the service, shared by its routes: the limits
(:class:`ServeSettings`), and :class:`Judge`, which checks and decodes an upload, judges it
(verdict and segments) and draws its spectrogram, one request at a time on the gate."""

from __future__ import annotations

import base64
import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from fastapi import HTTPException

from ..config import FeatureConfig
from ..core.gate import Gate
from ..data.audio_io import AUDIO_EXTENSIONS, load_audio, probe
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


@dataclass(frozen=True, kw_only=True)
class ServeSettings:
    """Limits of the service. ``max_upload_mb``: request body cap (MiB); ``max_seconds``:
    longest recording accepted; ``hop_s``: hop of the segment scan returned with each verdict
    (coarsened for long uploads so at most ``SCAN_MAX_WINDOWS`` windows are judged);
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

    def __call__(self, upload: IO[bytes], filename: str | None) -> dict[str, Any]:
        began = time.perf_counter()
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
                "probabilities": pred.probabilities, "score": pred.score,
                "threshold": pred.threshold, "n_windows": pred.n_windows,
                "classes": list(self.gate.classes),
                "duration_s": wave.size / sr, "window_s": self.gate.features.n_samples / sr,
                "segments": [s.as_dict() for s in scan.segments], "hop_s": scan.hop_s,
                "spectrogram": spectrogram, "elapsed_ms": round(elapsed_ms, 1)}

    def decode(self, upload: IO[bytes], filename: str | None) -> np.ndarray:
        """Upload -> mono float32 at ``features.sr``; HTTP 413/415/422 for unusable files."""
        suffix = Path(filename or "").suffix.lower()
        with tempfile.TemporaryDirectory(prefix="audiogate-upload-") as tmp:
            path = Path(tmp) / ("upload" + (suffix if suffix in AUDIO_EXTENSIONS else ""))
            with open(path, "wb") as out:
                shutil.copyfileobj(upload, out)
            if path.stat().st_size == 0:
                raise HTTPException(422, "empty upload: the file has 0 bytes")
            try:
                info = probe(path)
            except AudioError as exc:
                raise HTTPException(415, f"unsupported audio file: {exc.reason}. Send WAV, "
                                         "FLAC, OGG or MP3.") from None
            if info.duration > self.settings.max_seconds:
                raise HTTPException(413, f"recording too long: {info.duration:.1f} s; the "
                                         f"limit is {self.settings.max_seconds:g} s")
            try:
                return load_audio(path, sr=self.gate.features.sr)
            except AudioError as exc:
                raise HTTPException(422, f"unusable audio: {exc.reason}") from None
