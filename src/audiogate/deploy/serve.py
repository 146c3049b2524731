"""HTTP service: ``POST /predict`` (audio upload -> verdict JSON), ``GET /health``,
``GET /model``, the OpenAPI spec at ``/openapi.json``, a one-page web UI at ``/``, the
model's training report at ``/report`` when its checkpoint lives in a run folder that has one,
and ``/listen``, a WebSocket that decides live on streamed audio
(:mod:`~audiogate.deploy.live_routes`: its own token, origin and host checks).

Uploads are checked before any model work: the request body is capped (413, whether or not the
client sends ``Content-Length``), the body must be ``multipart/form-data`` with a ``file`` field
(415/422), and the file must decode with libsndfile (415) into usable audio no longer than
``max_seconds`` (422/413). The upload is copied into a fresh ``TemporaryDirectory`` that is
removed when the request ends; the client's file name is never used as a path. Model calls run
in the thread pool under one lock, so concurrent requests are safe.

The page (``static/``) is plain HTML + JS with no build step and nothing fetched from other
hosts; the interactive Swagger page is off because it loads its code from a CDN.

With an access token (:mod:`~audiogate.deploy.guard`), everything but ``/health`` and the
page's own files needs ``Authorization: Bearer <token>``. With or without one, a POST or
DELETE sent by another site's page (its ``Origin`` or ``Sec-Fetch-Site`` says so) is refused
(403). Connections that send no complete request head within ``idle_timeout_s``, request
bodies that stall that long, and bodies that arrive slower than :data:`MIN_BODY_BYTES_PER_S`
after their first ``idle_timeout_s`` seconds are closed (408).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.gate import Gate
from ..files import to_json
from ..reporting.html import CSP as REPORT_CSP
from .enrol_routes import add_enrol_routes
from .guard import BearerAuth, IdleTimeoutH11, LoopbackHostOnly, SameOriginOnly, is_loopback
from .judge import DEFAULT_IDLE_TIMEOUT_S, Judge, MiB, ServeSettings
from .live_routes import MAX_FRAME_BYTES, LiveOptions, add_live_routes

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
FIELD = "file"
"""Name of the multipart form field that carries the audio."""
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                               "media-src 'self' blob:; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
REPORT_HEADERS = {**PAGE_HEADERS, "Content-Security-Policy": REPORT_CSP + "; frame-ancestors "
                                                                           "'none'"}
"""The report is self-contained: it may load nothing at all, from here or anywhere else."""
MIN_BODY_BYTES_PER_S = 16 * 1024
"""Slowest average a request body may arrive at once its first ``idle_timeout_s`` seconds are
over: 128 kbit/s, below any mobile upload. A body trickled in slower (a byte a second) is cut
with 408, so one connection's body lasts at most ``idle_timeout_s`` + ``max_upload_mb`` /
this (15 s + 21 min for 20 MiB), and holding it that long costs the client the bandwidth."""


def report_of(checkpoint: str | Path) -> Path | None:
    """The ``report.html`` of the run folder a model file lives in (``<run>/models/x.pt``, or
    an exported ``.onnx`` beside it), if there is one."""
    models = Path(checkpoint).resolve().parent
    page = models.parent / "report.html"
    return page if models.name == "models" and page.is_file() else None


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


class BodyTooSlow(HTTPException):
    """408: the request body arrives slower than the service's minimum rate."""

    def __init__(self, *, seen: int, seconds: float, idle_s: float, min_rate: float) -> None:
        super().__init__(status_code=408, headers={"Connection": "close"},
                         detail=f"request body too slow: {seen} bytes in {seconds:.0f} s; after "
                                f"its first {idle_s:g} s a body must arrive at "
                                f"{min_rate / 1024:g} KiB/s or more")


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413, bodies whose next
    piece takes longer than ``idle_s`` seconds to arrive with 408, and bodies that have
    arrived slower than ``min_rate`` bytes per second on average once their first ``idle_s``
    seconds are over with 408 (time from the event loop's clock).

    A declared ``Content-Length`` over the limit is refused before the body is read; otherwise
    the bytes are counted as they arrive (chunked uploads included).
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int,
                 idle_s: float = DEFAULT_IDLE_TIMEOUT_S,
                 min_rate: float = MIN_BODY_BYTES_PER_S) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.idle_s = idle_s
        self.min_rate = min_rate

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
        clock = asyncio.get_running_loop().time
        began: float | None = None

        async def counted() -> Message:
            nonlocal seen, complete, began
            if complete:  # after the body, e.g. waiting for a disconnect: no deadline
                return await receive()
            now = clock()
            began = now if began is None else began
            left = began + self.idle_s + seen / self.min_rate - now  # until below the rate
            if left <= 0:
                raise BodyTooSlow(seen=seen, seconds=now - began, idle_s=self.idle_s,
                                  min_rate=self.min_rate)
            try:
                message = await asyncio.wait_for(receive(), timeout=min(self.idle_s, left))
            except TimeoutError:
                if left < self.idle_s:
                    raise BodyTooSlow(seen=seen, seconds=clock() - began, idle_s=self.idle_s,
                                      min_rate=self.min_rate) from None
                raise BodyStalled(self.idle_s) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if seen > self.max_bytes:
                    raise UploadTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)


class StrictJSONResponse(JSONResponse):
    """JSON responses through :func:`audiogate.files.to_json`: a NaN or infinite number (a
    metric of a class missing from a subset) is sent as ``null``, never as invalid JSON."""

    def render(self, content: Any) -> bytes:
        return to_json(content, indent=None).encode("utf-8")


def create_app(gate: Gate, *, settings: ServeSettings | None = None,
               report: Path | None = None, live: LiveOptions | None = None) -> FastAPI:
    """The FastAPI application serving ``gate``; ``report``: its run's ``report.html``;
    ``live``: the bounds of the ``/listen`` WebSocket (:mod:`~audiogate.deploy.live_routes`)."""
    settings = settings or ServeSettings()
    judge = Judge(gate, settings)
    app = FastAPI(title="audiogate", version=_version(), docs_url=None, redoc_url=None,
                  description="Judge audio clips with a trained audiogate model.",
                  default_response_class=StrictJSONResponse)
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes,
                       idle_s=settings.idle_timeout_s)
    app.add_middleware(SameOriginOnly)  # runs before the body is read
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
    add_live_routes(app, judge, local_only=bool(settings.local_only), options=live)

    return app


def _version() -> str:
    from ..core.version import __version__

    return __version__


def run_server(gate: Gate, *, host: str = "127.0.0.1", port: int = 8000,
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
                log_level="info", http=IdleTimeoutH11, timeout_keep_alive=settings.idle_timeout_s,
                ws_max_size=MAX_FRAME_BYTES + 1024)
