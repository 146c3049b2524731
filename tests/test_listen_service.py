"""The service's ``/listen`` WebSocket: events back for streamed PCM (the band gate's known
answers), the checks a browser's WebSocket meets (token in the first message, Origin, Host),
the bounds (faster than real time, frame size, clients, a client that does not read), in
process with a clock the test moves; and a real server with two real clients at once."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from audiogate.deploy import live_routes
from audiogate.deploy.judge import ServeSettings
from audiogate.deploy.listen import ALLOWED, REJECTED
from audiogate.deploy.live_routes import Closed, LiveOptions, Session
from audiogate.deploy.serve import create_app
from audiogate.gates import load

from .conftest import build_band_gate, running_server
from .test_listen import SR, scene

TOKEN = "live-Token_0123456789"


class StreamClock:
    """The service's clock: as far as the audio the test has sent (real time exactly), or
    frozen."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def band_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_band_gate(tmp_path_factory.mktemp("band") / "band.pt", fixed_length=50)


def client(band_path: Path, *, token: str | None = None, local_only: bool = False,
           **options: Any) -> TestClient:
    settings = ServeSettings(token=token, local_only=local_only)
    app = create_app(load(band_path), settings=settings, live=LiveOptions(**options))
    return TestClient(app, base_url="http://localhost")


def s16(wave: np.ndarray) -> bytes:
    return (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()


def start(ws: Any, **fields: Any) -> dict[str, Any]:
    ws.send_text(json.dumps({"rate": SR, "format": "s16le", "channels": 1, **fields}))
    return dict(ws.receive_json())


def closed_with(ws: Any) -> int:
    """The close code the service sent, skipping the events before it."""
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            return int(message["code"])


def stream(ws: Any, wave: np.ndarray, clock: StreamClock, *, frame_s: float = 0.1) -> None:
    n = round(frame_s * SR)
    for i in range(0, len(wave), n):
        clock.t += len(wave[i:i + n]) / SR
        ws.send_bytes(s16(wave[i:i + n]))


def events_until_close(ws: Any) -> tuple[list[dict[str, Any]], int]:
    events = []
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            return events, int(message["code"])
        events.append(json.loads(message["text"]))


def test_streamed_audio_gets_its_events_back(band_path: Path) -> None:
    clock = StreamClock()
    with client(band_path, clock=clock) as app, app.websocket_connect("/listen") as ws:
        ready = start(ws)
        assert ready == {"type": "ready", "mode": "windows", "threshold": 0.5, "sr": SR,
                         "positive": "allowed"}
        stream(ws, scene()[:round(5.0 * SR)], clock)  # ends inside the hiss
        ws.send_text(json.dumps({"type": "stop"}))  # decides it
        events, code = events_until_close(ws)
    assert code == 1000
    assert [(e["type"], e["event"]) for e in events] == [("event", ALLOWED),
                                                         ("event", REJECTED)]
    assert events[0]["start"] == pytest.approx(1.0, abs=0.15)
    assert events[1]["end"] == pytest.approx(5.0, abs=0.15)


def test_stereo_float_at_48k(band_path: Path) -> None:
    import soxr

    clock = StreamClock()
    wave = soxr.resample(scene()[:round(3.0 * SR)], SR, 48000).astype("<f4")
    frames = np.stack([wave, wave], axis=1).tobytes()
    with client(band_path, clock=clock) as app, app.websocket_connect("/listen") as ws:
        start(ws, rate=48000, format="f32le", channels=2)
        step = 4800 * 8  # 0.1 s of two float channels
        for i in range(0, len(frames), step):
            clock.t += 0.1
            ws.send_bytes(frames[i:i + step])
        ws.send_text(json.dumps({"type": "stop"}))
        events, code = events_until_close(ws)
    assert [e["event"] for e in events] == [ALLOWED] and code == 1000


def test_the_token_travels_in_the_first_message(band_path: Path) -> None:
    with client(band_path, token=TOKEN) as app:
        with app.websocket_connect("/listen") as ws:
            ws.send_text(json.dumps({"rate": SR}))
            assert closed_with(ws) == live_routes.UNAUTHORIZED
        with app.websocket_connect("/listen") as ws:
            ws.send_text(json.dumps({"rate": SR, "token": "wrong-token-0123456789"}))
            assert closed_with(ws) == live_routes.UNAUTHORIZED
        with app.websocket_connect("/listen") as ws:
            assert start(ws, token=TOKEN)["type"] == "ready"


@pytest.mark.parametrize("headers", [{"origin": "http://evil.example"}, {"origin": "null"},
                                     {"origin": "http://localhost:8001"}])
def test_a_page_of_another_site_cannot_open_it(band_path: Path,
                                               headers: dict[str, str]) -> None:
    with client(band_path) as app, pytest.raises(WebSocketDisconnect), \
            app.websocket_connect("/listen", headers=headers):
        pass


def test_its_own_page_and_programs_can(band_path: Path) -> None:
    with client(band_path) as app:  # the test client's host name is testserver
        with app.websocket_connect("/listen", headers={"origin": "http://testserver"}) as ws:
            assert start(ws)["type"] == "ready"
        with app.websocket_connect("/listen") as ws:  # no Origin: a program
            assert start(ws)["type"] == "ready"


def handshake(**headers: str) -> Any:
    return SimpleNamespace(scope={"type": "websocket", "headers": [
        (k.encode(), v.encode()) for k, v in headers.items()]})


@pytest.mark.parametrize(("headers", "local_only", "why"), [
    ({"host": "attacker.example"}, True, "not a loopback name"),
    ({"host": "attacker.example"}, False, None),  # with a token, any host name
    ({"host": "127.0.0.1:8000"}, True, None),
    ({"host": "[::1]:8000", "origin": "http://[::1]:8000"}, True, None),
    ({"host": "localhost:8000", "origin": "http://localhost:8001"}, True, "cross-site"),
    ({"host": "gate.example", "origin": "https://other.example"}, False, "cross-site"),
    ({"host": "gate.example", "x-forwarded-host": "gate.example:443",
      "origin": "https://gate.example"}, False, None)])  # behind a proxy
def test_handshake_checks(headers: dict[str, str], local_only: bool, why: str | None) -> None:
    got = live_routes.refused(handshake(**headers), local_only=local_only)
    assert (got is None) if why is None else (got is not None and why in got)


def test_faster_than_real_time_is_closed(band_path: Path) -> None:
    clock = StreamClock()  # frozen at 0: only AHEAD_S seconds of audio may come
    with client(band_path, clock=clock) as app, app.websocket_connect("/listen") as ws:
        start(ws)
        for _ in range(5):
            ws.send_bytes(s16(np.zeros(SR, np.float32)))
        assert closed_with(ws) == live_routes.TOO_FAST


@pytest.mark.parametrize(("first", "then", "code"), [
    ("not json", None, live_routes.BAD_START),
    (json.dumps({"rate": 5}), None, live_routes.BAD_START),
    (json.dumps({"rate": SR, "format": "u8"}), None, live_routes.BAD_START),
    (json.dumps({"rate": SR}), b"\x00" * (live_routes.MAX_FRAME_BYTES + 2), 1009),
    (json.dumps({"rate": SR, "format": "s16le"}), b"\x00" * 3, live_routes.BAD_START),
    (json.dumps({"rate": SR}), "hello", 1003)])
def test_bad_messages_get_clear_close_codes(band_path: Path, first: str, then: Any,
                                            code: int) -> None:
    with client(band_path, clock=StreamClock()) as app, \
            app.websocket_connect("/listen") as ws:
        ws.send_text(first)
        if then is not None:
            assert ws.receive_json()["type"] == "ready"
            ws.send_bytes(then) if isinstance(then, bytes) else ws.send_text(then)
        assert closed_with(ws) == code


def test_clients_beyond_the_limit_are_told_to_come_back(band_path: Path) -> None:
    with client(band_path, max_clients=1) as app, app.websocket_connect("/listen") as one:
        start(one)
        with app.websocket_connect("/listen") as two:
            assert closed_with(two) == 1013
        with app.websocket_connect("/listen") as two:  # the first still listening
            assert closed_with(two) == 1013


def test_a_client_that_does_not_read_is_closed(band_path: Path) -> None:
    """The events wait in a bounded outbox; a send that stalls ends the connection."""

    class Stuck:  # a client whose socket takes nothing more
        def __init__(self) -> None:
            self.release = asyncio.Event()

        async def send_text(self, text: str) -> None:
            await self.release.wait()

    async def scenario() -> tuple[str, str]:
        from audiogate.deploy.judge import Judge

        judge = Judge(load(band_path), ServeSettings())
        session = Session(Stuck(), judge=judge,  # type: ignore[arg-type]
                          start={"rate": SR, "format": "s16le", "channels": 1},
                          options=LiveOptions(outbox=3), idle_s=0.05)
        sender = asyncio.create_task(session.sender())
        with pytest.raises(Closed) as full:
            for _ in range(10):  # one is taken by the stalled send, three wait
                session.post({"type": "event"})
                await asyncio.sleep(0)
        await sender  # the stalled send times out
        assert session.failed is not None
        return full.value.reason, session.failed.reason

    outbox, stalled = asyncio.run(scenario())
    assert "3 events are waiting" in outbox and "a send stalled" in stalled


# --------------------------------------------------------------------- a real server
@pytest.fixture(scope="module")
def server(band_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with running_server(band_path, tmpdir=tmp_path_factory.mktemp("tmp"),
                        env={"AUDIOGATE_TOKEN": TOKEN}) as srv:
        yield srv


def listen_for_real(url: str, wave: np.ndarray, out: list[Any]) -> None:
    """A real client, at real time (the service refuses faster), then stop."""
    import time

    from websockets.sync.client import connect

    with connect(url.replace("http", "ws") + "/listen") as ws:
        ws.send(json.dumps({"rate": SR, "format": "s16le", "token": TOKEN}))
        out.append(json.loads(ws.recv()))
        began, n = time.monotonic(), round(0.1 * SR)
        for i in range(0, len(wave), n):
            time.sleep(max(0.0, began + i / SR - time.monotonic()))  # pacing, not waiting
            ws.send(s16(wave[i:i + n]))
        ws.send(json.dumps({"type": "stop"}))
        for message in ws:
            out.append(json.loads(message))
        out.append(ws.close_code)


@pytest.mark.slow
def test_two_real_clients_at_once(server: Any) -> None:
    wave = scene()[:round(3.0 * SR)]  # quiet, the speech-like sound, quiet
    results: list[list[Any]] = [[], []]
    threads = [threading.Thread(target=listen_for_real, args=(server.url, wave, out))
               for out in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for out in results:
        assert out[0]["type"] == "ready" and out[-1] == 1000
        assert [m["event"] for m in out[1:-1]] == [ALLOWED]


@pytest.mark.slow
def test_a_real_server_refuses_other_sites_and_wrong_tokens(server: Any) -> None:
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    url = server.url.replace("http", "ws") + "/listen"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, origin="http://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    with connect(url) as ws:
        ws.send(json.dumps({"rate": SR, "token": "wrong-token-0123456789"}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
