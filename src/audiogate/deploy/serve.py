"""HTTP service: ``POST /predict`` (audio upload -> verdict JSON), ``GET /health``,
``GET /model``, the OpenAPI spec at ``/openapi.json``, a one-page web UI at ``/``, and the
model's training report at ``/report`` when its checkpoint lives in a run folder that has one.

Uploads are checked before any model work: the request body is capped (413, whether or not the
client sends ``Content-Length``), the body must be ``multipart/form-data`` with a ``file`` field
(415/422), and the file must decode with libsndfile (415) into usable audio no longer than
``max_seconds`` (422/413). The upload is copied into a fresh ``TemporaryDirectory`` that is
removed when the request ends; the client's file name is never used as a path. Model calls run
in the thread pool under one lock, so concurrent requests are safe.

The page (``static/``) is plain HTML + JS with no build step and nothing fetched from other
hosts; the interactive Swagger page is off because it loads its code from a CDN.

With an access token (:mod:`~audiogate.deploy.guard`), everything but ``/health`` and the
page's own files needs ``Authorization: Bearer <token>``. Connections that send no complete
request head within ``idle_timeout_s``, and request bodies that stall that long, are closed.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Annotated, Any

import numpy as np
import torch
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import FeatureConfig
from ..data.audio_io import AUDIO_EXTENSIONS, load_audio, probe
from ..errors import AudioError, ConfigError
from ..features.frontend import LogMel, power_to_db
from ..files import to_json
from ..reporting.html import CSP as REPORT_CSP
from .enrol_routes import add_enrol_routes
from .guard import BearerAuth, IdleTimeoutH11, LoopbackHostOnly, check_token, is_loopback
from .inference import BaseClassifier
from .scan import DEFAULT_HOP_S, scan_wave

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
MiB = 1024 * 1024
DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_SECONDS = 600.0
DEFAULT_IDLE_TIMEOUT_S = 15
FIELD = "file"
"""Name of the multipart form field that carries the audio."""
SPECTROGRAM_COLUMNS = 800
"""Most time columns of the spectrogram sent to the page (longer audio is averaged down)."""
SPECTROGRAM_CHUNK_S = 30.0
"""Seconds of audio per STFT call when computing the display spectrogram (bounds memory)."""
SCAN_MAX_WINDOWS = 240
"""Most windows scanned per upload: long uploads get a coarser hop (bounds request time)."""
UINT8_MAX = 255
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                               "media-src 'self' blob:; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
REPORT_HEADERS = {**PAGE_HEADERS, "Content-Security-Policy": REPORT_CSP + "; frame-ancestors "
                                                                           "'none'"}
"""The report is self-contained: it may load nothing at all, from here or anywhere else."""


def report_of(checkpoint: str | Path) -> Path | None:
    """The ``report.html`` of the run folder a model file lives in (``<run>/models/x.pt``, or
    an exported ``.onnx`` beside it), if there is one."""
    models = Path(checkpoint).resolve().parent
    page = models.parent / "report.html"
    return page if models.name == "models" and page.is_file() else None


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


class UploadTooLarge(HTTPException):
    """413: the request body is over the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, headers={"Connection": "close"},
                         detail=f"upload too large: the limit is {limit / MiB:g} MiB "
                                "(start the server with a larger --max-upload-mb to change it)")


class BodyStalled(HTTPException):
    """408: the client stopped sending its request body."""

    def __init__(self, seconds: float) -> None:
        super().__init__(status_code=408, headers={"Connection": "close"},
                         detail=f"request body stalled: nothing arrived for {seconds:g} s")


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413, and bodies whose
    next piece takes longer than ``idle_s`` seconds to arrive with 408.

    A declared ``Content-Length`` over the limit is refused before the body is read; otherwise
    the bytes are counted as they arrive (chunked uploads included).
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int,
                 idle_s: float = DEFAULT_IDLE_TIMEOUT_S) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.idle_s = idle_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
        if declared and (not declared.isdigit() or int(declared) > self.max_bytes):
            error = UploadTooLarge(self.max_bytes)
            response = JSONResponse({"detail": error.detail}, status_code=error.status_code,
                                    headers=error.headers)
            await response(scope, receive, send)
            return
        seen, complete = 0, False

        async def counted() -> Message:
            nonlocal seen, complete
            if complete:  # after the body, e.g. waiting for a disconnect: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout=self.idle_s)
            except TimeoutError:
                raise BodyStalled(self.idle_s) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if seen > self.max_bytes:
                    raise UploadTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)


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


class StrictJSONResponse(JSONResponse):
    """JSON responses through :func:`audiogate.files.to_json`: a NaN or infinite number (a
    metric of a class missing from a subset) is sent as ``null``, never as invalid JSON."""

    def render(self, content: Any) -> bytes:
        return to_json(content, indent=None).encode("utf-8")


class Judge:
    """The per-upload work: save to a temp folder, check, decode, predict, scan, draw."""

    def __init__(self, gate: BaseClassifier, settings: ServeSettings) -> None:
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


def create_app(gate: BaseClassifier, *, settings: ServeSettings | None = None,
               report: Path | None = None) -> FastAPI:
    """The FastAPI application serving ``gate``; ``report``: its run's ``report.html``."""
    settings = settings or ServeSettings()
    judge = Judge(gate, settings)
    app = FastAPI(title="audiogate", version=_version(), docs_url=None, redoc_url=None,
                  description="Judge audio clips with a trained audiogate model.",
                  default_response_class=StrictJSONResponse)
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes,
                       idle_s=settings.idle_timeout_s)
    if settings.token is not None:  # added last: runs first, before any body is read
        app.add_middleware(BearerAuth, token=settings.token)
    if settings.local_only:
        app.add_middleware(LoopbackHostOnly)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    @app.get("/health", summary="Liveness check")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/model", summary="Classes, feature config, epoch and validation metric")
    def model() -> dict[str, Any]:
        return {**gate.describe(), "max_upload_mb": settings.max_upload_mb,
                "max_seconds": settings.max_seconds, "hop_s": settings.hop_s,
                "report": report is not None}

    @app.get("/report", summary="The model's training report (report.html of its run)",
             response_class=FileResponse, responses={404: {"description": "no report"}})
    def training_report() -> FileResponse:
        if report is None or not report.is_file():
            raise HTTPException(404, "this model has no report: its checkpoint is not in a run "
                                     "folder with report.html (write one with: audiogate "
                                     "report RUN_DIR)")
        return FileResponse(report, media_type="text/html", headers=REPORT_HEADERS)

    @app.post("/predict", summary="Judge one uploaded audio file", responses={
        413: {"description": "upload or recording over the limit"},
        415: {"description": "not multipart/form-data, or not a readable audio file"},
        422: {"description": "no file, empty file, or unusable audio (too short, NaN)"}})
    async def predict(request: Request, file: Annotated[UploadFile | None, File(
            description="audio file (WAV, FLAC, OGG, MP3, ...)")] = None) -> dict[str, Any]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "multipart/form-data":
            raise HTTPException(415, f"send the audio as multipart/form-data field '{FIELD}' "
                                     f"(got content type '{kind or 'none'}')")
        if file is None:
            raise HTTPException(422, f"no file: send the audio as the multipart/form-data "
                                     f"field '{FIELD}'")
        return await run_in_threadpool(judge, file.file, file.filename)

    add_enrol_routes(app, judge)

    return app


def _version() -> str:
    from .. import __version__

    return __version__


def run_server(gate: BaseClassifier, *, host: str = "127.0.0.1", port: int = 8000,
               settings: ServeSettings | None = None, report: Path | None = None) -> None:
    """Serve ``gate`` (and ``report`` at ``/report``) with uvicorn until interrupted (Ctrl+C /
    SIGTERM)."""
    import uvicorn  # local: optional dependency

    settings = settings or ServeSettings()
    if settings.local_only is None:
        settings = replace(settings, local_only=settings.token is None and is_loopback(host))
    log.info("serving %s model on http://%s:%d/ (classes %s; %s)", gate.backend, host, port,
             list(gate.classes), "access token required" if settings.token else "no token")
    uvicorn.run(create_app(gate, settings=settings, report=report), host=host, port=port,
                log_level="info", http=IdleTimeoutH11, timeout_keep_alive=settings.idle_timeout_s)
