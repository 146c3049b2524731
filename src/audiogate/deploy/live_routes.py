"""``/listen``: the service listens live over a WebSocket, with the same
:class:`~audiogate.deploy.listen.Listener` as ``audiogate listen``.

The protocol (all JSON text but the audio):

1. The client opens ``ws(s)://HOST/listen``. The handshake is refused (HTTP 403) when it comes
   from another site's page (its ``Origin`` is not the service's own: a browser always sends
   one, and a WebSocket is not held back by CORS) or, for a token-less service on loopback, is
   addressed to a host name that is not a loopback one (DNS rebinding).
2. Its first message: ``{"token": "...", "rate": 48000, "format": "f32le", "channels": 1}``
   (``token`` when the service has one: a browser cannot set an ``Authorization`` header on a
   WebSocket, and a token in the URL would end up in logs; ``format`` ``f32le`` or ``s16le``).
3. The service answers ``{"type": "ready", "mode": ..., "threshold": ..., "positive": ...,
   "sr": ...}``, then one ``{"type": "event", ...}`` per event
   (:meth:`~audiogate.deploy.listen.Event.as_dict`).
4. The client sends binary messages of interleaved PCM at its stated rate, at real time, and
   ``{"type": "stop"}`` to have what is open decided before the service closes (1000).

Close codes: 4400 a bad first message, 4401 a missing or wrong token, 4408 nothing received
for ``idle_timeout_s`` seconds, 4429 audio arriving faster than real time (more than
:data:`AHEAD_S` seconds ahead of the time since its first frame), 4409 a client that does not
read its events (:data:`OUTBOX` events waiting, or one send stalled ``idle_timeout_s``), 1009 a
frame over :data:`MAX_FRAME_BYTES`, 1013 more than ``max_clients`` connections at once, 1003
a text message other than ``stop``. Each connection holds one Listener (a model window or a
speech segment of samples) and at most a few frames; the gate judges one connection's frame
at a time under the service's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool

from ..errors import AudiogateError
from ..files import to_json
from .guard import foreign_origin, headers_of, is_loopback, request_host
from .judge import Judge
from .listen import Event, Listener
from .sources import MAX_CHANNELS, PCM_FORMATS

log = logging.getLogger(__name__)

PATH = "/listen"
AHEAD_S = 2.0
"""Seconds of audio a client may send ahead of real time (a browser's bursts)."""
MAX_FRAME_BYTES = 256 * 1024
"""Largest binary message (1.3 s of 48 kHz f32 mono)."""
OUTBOX = 64
"""Events waiting to be sent to one client before it is closed as not reading."""
MAX_CLIENTS = 8
RATES = (8000, 192_000)
BAD_START, UNAUTHORIZED, IDLE, TOO_FAST, NOT_READING = 4400, 4401, 4408, 4429, 4409
TOO_BIG, BUSY, UNSUPPORTED, DONE = 1009, 1013, 1003, 1000


@dataclass(frozen=True)
class LiveOptions:
    """The endpoint's bounds; ``clock``: seconds, for the real-time check (default the event
    loop's)."""

    max_clients: int = MAX_CLIENTS
    ahead_s: float = AHEAD_S
    max_frame_bytes: int = MAX_FRAME_BYTES
    outbox: int = OUTBOX
    clock: Callable[[], float] | None = None


class Closed(Exception):
    """Close the connection with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def refused(websocket: WebSocket, *, local_only: bool) -> str | None:
    """Why the handshake is refused (see the module doc), or None."""
    scope = websocket.scope
    if local_only and not is_loopback(request_host(scope)):
        return f"host {request_host(scope)!r} is not a loopback name"
    origin = foreign_origin(headers_of(scope))
    return None if origin is None else f"cross-site WebSocket from Origin {origin!r}"


def parse_start(text: str | None, *, token: str | None) -> dict[str, Any]:
    """The first message's fields, checked (:class:`Closed` when unusable)."""
    try:
        start = json.loads(text or "")
    except json.JSONDecodeError:
        raise Closed(BAD_START, "the first message must be JSON: {\"rate\": N, \"format\": "
                                "\"f32le\"|\"s16le\", \"channels\": N, \"token\": ...}") from None
    if not isinstance(start, dict):
        raise Closed(BAD_START, "the first message must be a JSON object")
    if token is not None:
        given = start.get("token")
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(),
                                                                 token.encode()):
            raise Closed(UNAUTHORIZED, "wrong access token" if given else
                         "this service needs an access token: send it as \"token\" in the "
                         "first message")
    rate, fmt, channels = start.get("rate"), start.get("format", "f32le"), \
        start.get("channels", 1)
    if not (isinstance(rate, int) and RATES[0] <= rate <= RATES[1]):
        raise Closed(BAD_START, f"\"rate\" must be an integer in {RATES[0]}-{RATES[1]} Hz")
    if fmt not in PCM_FORMATS:
        raise Closed(BAD_START, f"\"format\" must be one of {', '.join(PCM_FORMATS)}")
    if not (isinstance(channels, int) and 1 <= channels <= MAX_CHANNELS):
        raise Closed(BAD_START, f"\"channels\" must be an integer in 1-{MAX_CHANNELS}")
    return {"rate": rate, "format": fmt, "channels": channels}


class Session:
    """One client: its Listener, the real-time check, and an outbox that a sender task
    drains (so a client that does not read never holds up the listening, and is closed)."""

    def __init__(self, websocket: WebSocket, *, judge: Judge, start: dict[str, Any],
                 options: LiveOptions, idle_s: float) -> None:
        self.websocket, self.judge, self.options, self.idle_s = websocket, judge, options, \
            idle_s
        self.rate, self.channels = start["rate"], start["channels"]
        self.dtype, self.scale = PCM_FORMATS[start["format"]]
        self.frame_bytes = np.dtype(self.dtype).itemsize * self.channels
        self.listener = Listener(judge.gate, rate=self.rate)
        self.clock = options.clock or asyncio.get_running_loop().time
        self.first: float | None = None
        self.samples = 0
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=options.outbox)
        self.failed: Closed | None = None

    def ready(self) -> dict[str, Any]:
        return {"type": "ready", "mode": self.listener.mode,
                "threshold": self.listener.threshold, "sr": self.listener.sr,
                "positive": self.judge.gate.decision.positive_class}

    def post(self, message: dict[str, Any]) -> None:
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            raise Closed(NOT_READING, f"not reading: {self.options.outbox} events are "
                                      "waiting to be sent") from None

    async def sender(self) -> None:
        """Send what is posted; a send stalled ``idle_s`` ends the connection."""
        while True:
            message = await self.outbox.get()
            try:
                await asyncio.wait_for(self.websocket.send_text(to_json(message, indent=None)),
                                       timeout=self.idle_s)
            except TimeoutError:
                self.failed = Closed(NOT_READING, "not reading: a send stalled")
                return
            finally:
                self.outbox.task_done()

    def _decide(self, samples: np.ndarray | None) -> list[Event]:
        with self.judge.lock:
            if samples is None:
                return self.listener.flush()
            return self.listener.feed(samples)

    async def audio(self, data: bytes) -> None:
        if len(data) > self.options.max_frame_bytes:
            raise Closed(TOO_BIG, f"frame of {len(data)} bytes; at most "
                                  f"{self.options.max_frame_bytes}")
        if len(data) % self.frame_bytes:
            raise Closed(BAD_START, f"a frame must hold whole samples ({self.frame_bytes} "
                                    "bytes each, all channels)")
        now = self.clock()
        self.first = now if self.first is None else self.first
        self.samples += len(data) // self.frame_bytes
        if self.samples / self.rate > now - self.first + self.options.ahead_s:
            raise Closed(TOO_FAST, f"audio arrives faster than real time (more than "
                                   f"{self.options.ahead_s:g} s ahead)")
        x = np.frombuffer(data, dtype=self.dtype).astype(np.float32) / self.scale
        for event in await run_in_threadpool(self._decide, x.reshape(-1, self.channels)):
            self.post({"type": "event", **event.as_dict()})

    async def stop(self) -> None:
        for event in await run_in_threadpool(self._decide, None):
            self.post({"type": "event", **event.as_dict()})

    async def drain(self) -> None:
        """Wait (``idle_s`` at most) until the posted events are sent."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.outbox.join(), timeout=self.idle_s)


def add_live_routes(app: FastAPI, judge: Judge, *, local_only: bool,
                    options: LiveOptions | None = None) -> None:
    """The ``/listen`` WebSocket of the service (see the module doc)."""
    options = options or LiveOptions()
    clients: set[int] = set()
    idle_s = float(judge.settings.idle_timeout_s)

    @app.websocket(PATH)
    async def listen(websocket: WebSocket) -> None:
        why = refused(websocket, local_only=local_only)
        if why is not None:
            log.warning("refused a /listen handshake: %s", why)
            await websocket.close(code=1008)
            return
        await websocket.accept()
        if len(clients) >= options.max_clients:
            await websocket.close(code=BUSY, reason=f"busy: {options.max_clients} clients "
                                                    "are listening; try again later")
            return
        clients.add(id(websocket))
        try:
            await _serve(websocket, judge=judge, options=options, idle_s=idle_s)
        finally:
            clients.discard(id(websocket))


async def _receive(websocket: WebSocket, idle_s: float) -> dict[str, Any]:
    try:
        return dict(await asyncio.wait_for(websocket.receive(), timeout=idle_s))
    except TimeoutError:
        raise Closed(IDLE, f"nothing received for {idle_s:g} s") from None


async def _serve(websocket: WebSocket, *, judge: Judge, options: LiveOptions,
                 idle_s: float) -> None:
    session: Session | None = None
    sender: asyncio.Task[None] | None = None
    code, reason = DONE, "done"
    try:
        message = await _receive(websocket, idle_s)
        if message["type"] == "websocket.disconnect":
            return
        start = parse_start(message.get("text"), token=judge.settings.token)
        session = Session(websocket, judge=judge, start=start, options=options, idle_s=idle_s)
        await websocket.send_text(to_json(session.ready(), indent=None))
        sender = asyncio.create_task(session.sender())
        while True:
            message = await _receive(websocket, idle_s)
            if session.failed is not None:
                raise session.failed
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await session.audio(message["bytes"])
                continue
            if _is_stop(message.get("text")):
                await session.stop()
                await session.drain()
                break
            raise Closed(UNSUPPORTED, "text messages after the first: only {\"type\": "
                                      "\"stop\"}; audio goes in binary messages")
    except Closed as closed:
        code, reason = closed.code, closed.reason
        log.info("/listen closed: %s (%d)", reason, code)
    except AudiogateError as exc:
        code, reason = BAD_START, str(exc)
    except WebSocketDisconnect:
        return
    finally:
        if sender is not None:
            sender.cancel()
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await asyncio.wait_for(websocket.close(code=code, reason=reason[:120]), timeout=idle_s)


def _is_stop(text: str | None) -> bool:
    try:
        return bool(json.loads(text or "").get("type") == "stop")
    except (json.JSONDecodeError, AttributeError):
        return False
