"""Service security (issue 12): the access token, where the service may listen, the port, and
connections that send nothing, half a request or half a body."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import httpx
import pytest
import soundfile as sf

from audiogate.cli import main
from audiogate.deploy.guard import (
    IdleTimeoutH11,
    check_listen,
    check_token,
    is_loopback,
    request_host,
)
from audiogate.errors import ConfigError

from .conftest import SR, Server, build_band_gate, free_port, running_server, sine

TOKEN = "s3cret-Token_0123456789"
IDLE_S = 1
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("secure")
    with running_server(build_band_gate(root / "band.pt"), tmpdir=root / "tmp",
                        extra=("--idle-timeout", str(IDLE_S)),
                        env={"AUDIOGATE_TOKEN": TOKEN}) as srv:
        yield srv


def _wav() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, sine(440, 1.0), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


# ------------------------------------------------------------------ the token
@pytest.mark.slow
@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/predict"), ("GET", "/model"), ("GET", "/openapi.json"), ("GET", "/nowhere")])
def test_every_endpoint_but_health_needs_the_token(server: Server, method: str,
                                                   path: str) -> None:
    files = {"file": ("a.wav", _wav(), "audio/wav")} if method == "POST" else None
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                    {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}):
        r = httpx.request(method, server.url + path, headers=headers, files=files)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert "token" in r.json()["detail"]
    r = httpx.request(method, server.url + path, headers=AUTH, files=files)
    assert r.status_code == (404 if path == "/nowhere" else 200), r.text
    r = httpx.request(method, server.url + path, files=files,
                      headers={"Authorization": f"bearer  {TOKEN}"})  # scheme is caseless
    assert r.status_code == (404 if path == "/nowhere" else 200), r.text


@pytest.mark.slow
def test_health_and_the_page_files_need_no_token(server: Server) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    for path in ("/", "/static/app.js", "/static/style.css"):
        assert httpx.get(server.url + path).status_code == 200, path


@pytest.mark.slow
@pytest.mark.parametrize("path", [b"/static/../model", b"/static/%2e%2e/model", b"//model",
                                  b"/health/../model", b"/model?x=/static/"])
def test_public_paths_do_not_open_the_rest(server: Server, path: bytes) -> None:
    """Paths that look public but name something else never answer 200 without the token."""
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as s:
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = s.recv(65536)
    assert answer.split(b"\r\n", 1)[0] in (b"HTTP/1.1 401 Unauthorized",
                                            b"HTTP/1.1 404 Not Found"), answer[:200]
    assert b'"classes"' not in answer


@pytest.mark.slow
def test_refused_upload_is_not_read(server: Server) -> None:
    """Without the token, a huge upload is answered 401 at once, not read first."""
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n"
                  b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 401")


def test_token_rules() -> None:
    assert check_token(None) is None and check_token("") is None
    assert check_token(TOKEN) == TOKEN
    for bad in ("short", "has space in it 0123456789", "newline\r\n0123456789abcdef"):
        with pytest.raises(ConfigError, match="access token"):
            check_token(bad)


# ------------------------------------------------------------------ where it listens
@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False),
    ("example.org", False)])
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_listen_rules() -> None:
    check_listen(host="127.0.0.1", port=8000, token=None, insecure=False)
    check_listen(host="0.0.0.0", port=8000, token=TOKEN, insecure=False)
    check_listen(host="0.0.0.0", port=8000, token=None, insecure=True)
    with pytest.raises(ConfigError, match="without an access token"):
        check_listen(host="0.0.0.0", port=8000, token=None, insecure=False)
    for port in (0, -1, 65536, 99999):
        with pytest.raises(ConfigError, match="--port must be in 1-65535"):
            check_listen(host="127.0.0.1", port=port, token=None, insecure=False)


@pytest.mark.parametrize(("argv", "words"), [
    (["--port", "99999"], "--port must be in 1-65535, got 99999"),
    (["--port", "-1"], "--port must be in 1-65535, got -1"),
    (["--host", "0.0.0.0"], "refusing to serve on 0.0.0.0 without an access token"),
    (["--token", "short"], "access token must be at least 16"),
    (["--idle-timeout", "0"], "idle_timeout_s"),
])
def test_serve_refuses_bad_settings_in_one_line(
        tmp_path: Path, argv: list[str], words: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Checked before the model is loaded (the checkpoint does not exist), one line, exit 2."""
    monkeypatch.delenv("AUDIOGATE_TOKEN", raising=False)
    assert main(["serve", "--checkpoint", str(tmp_path / "none.pt"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("audiogate: error: ") and err.count("\n") == 1 and words in err, err


def test_bad_port_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """`audiogate serve --port 99999` printed a 75-line traceback (issue 12, item 2)."""
    ckpt = build_band_gate(tmp_path / "band.pt")
    proc = subprocess.run([sys.executable, "-m", "audiogate", "serve", "--checkpoint",
                           str(ckpt), "--port", "99999"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "audiogate: error: --port must be in 1-65535, got 99999\n"


# ------------------------------------------------------------------ DNS rebinding
@pytest.mark.parametrize(("header", "host"), [
    (b"localhost:8000", "localhost"), (b"[::1]:8000", "::1"), (b"[::1]", "::1"),
    (b"127.0.0.1", "127.0.0.1"), (b"attacker.example:80", "attacker.example"), (b"", "")])
def test_request_host(header: bytes, host: str) -> None:
    assert request_host({"headers": [(b"host", header)]}) == host
    assert request_host({"headers": []}) == ""


@pytest.mark.slow
def test_a_service_without_token_answers_only_requests_to_loopback_names(
        tmp_path: Path, server: Server) -> None:
    """A page elsewhere that rebinds its own name to 127.0.0.1 sends that name as Host: a
    token-less service refuses it (a token, or --insecure behind a proxy, lifts the check)."""
    checkpoint = build_band_gate(tmp_path / "band.pt")
    attacker = {"Host": f"attacker.example:{_port(server)}"}
    files = {"file": ("a.wav", _wav(), "audio/wav")}
    with running_server(checkpoint, tmpdir=tmp_path / "tmp") as open_srv:
        port = _port(open_srv)
        for host in ("localhost", f"localhost:{port}", f"127.0.0.1:{port}", "[::1]:1"):
            assert httpx.get(f"{open_srv.url}/model", headers={"Host": host}).status_code == 200
        for method, path in (("GET", "/model"), ("POST", "/predict"), ("GET", "/")):
            r = httpx.request(method, open_srv.url + path, headers=attacker,
                              files=files if method == "POST" else None)
            assert r.status_code == 403, (path, r.text)
            assert "attacker.example" in r.json()["detail"] and "token" in r.json()["detail"]
    with running_server(checkpoint, tmpdir=tmp_path / "tmp2", extra=("--insecure",)) as proxied:
        assert httpx.get(f"{proxied.url}/model", headers=attacker).status_code == 200
    assert httpx.get(f"{server.url}/model", headers={**attacker, **AUTH}).status_code == 200


# ------------------------------------------------------------------ idle connections
HANG_GUARD_S = 300
"""Only so that a server that never closes fails the test instead of hanging it: no check
depends on how fast anything runs."""


def _wait_closed(sock: socket.socket, began: float) -> tuple[float, bytes]:
    """Wait until the server closes ``sock``; the seconds since ``began`` (a
    ``time.monotonic()`` taken before connecting) and what the server sent."""
    sock.settimeout(HANG_GUARD_S)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the server never closed the connection (sent {received!r})")
    return time.monotonic() - began, received


@pytest.mark.slow
@pytest.mark.parametrize("sent", [
    b"",  # connects and says nothing
    b"GET /health HTTP/1.1\r\nHost: x\r\n",  # half a request head, then nothing
    b"GET /hea",
])
def test_silent_or_partial_request_is_closed(server: Server, sent: bytes) -> None:
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", _port(server))) as s:
        s.sendall(sent)
        seconds, _ = _wait_closed(s, began)
    assert seconds >= IDLE_S  # not before the limit


@pytest.mark.slow
def test_stalled_body_gets_408_and_is_closed(server: Server) -> None:
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", _port(server))) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                  b"Content-Type: multipart/form-data; boundary=b\r\n"
                  b"Content-Length: 5000\r\n\r\n--b\r\nContent-Disposition: form-data; ")
        seconds, received = _wait_closed(s, began)
    assert received.startswith(b"HTTP/1.1 408") and seconds >= IDLE_S, received


@pytest.mark.slow
def test_idle_keep_alive_connection_is_closed(server: Server) -> None:
    """After a response, an idle keep-alive connection is closed (not before the limit)."""
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", _port(server))) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        seconds, received = _wait_closed(s, began)
    assert received.startswith(b"HTTP/1.1 200") and seconds >= IDLE_S, received


class FakeClockLoop:
    """The parts of an event loop that :class:`IdleTimeoutH11` uses, with a clock that only
    the test moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, int, Callable[[], object], list[bool]]] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[..., object],
                   *args: object) -> Mock:
        cancelled = [False]
        self.timers.append((self.now + delay, len(self.timers), lambda: callback(*args),
                            cancelled))
        return Mock(cancel=lambda: cancelled.__setitem__(0, True))

    def create_task(self, coro: Any, **kwargs: Any) -> Mock:  # a request: never run here
        coro.close()
        return Mock()

    def advance(self, seconds: float) -> None:
        """Move the clock on, firing the timers that fall due, in order."""
        end = self.now + seconds
        while due := sorted(t for t in self.timers if t[0] <= end and not t[3][0]):
            self.timers.remove(due[0])
            self.now = due[0][0]
            due[0][2]()
        self.now = end


class FakeTransport:
    def __init__(self, loop: FakeClockLoop) -> None:
        self.loop = loop
        self.closed_at: float | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default)

    def is_closing(self) -> bool:
        return self.closed_at is not None

    def close(self) -> None:
        self.closed_at = self.loop.now

    def write(self, data: bytes) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _connection() -> tuple[FakeClockLoop, FakeTransport, IdleTimeoutH11]:
    """A connection to the service's HTTP protocol, opened at time 0 of a fake clock."""
    import uvicorn
    from uvicorn.server import ServerState

    async def app(scope: Any, receive: Any, send: Any) -> None:  # never called
        raise AssertionError

    loop = FakeClockLoop()
    config = uvicorn.Config(app, http=IdleTimeoutH11, timeout_keep_alive=IDLE_S,
                            log_config=None)
    protocol = IdleTimeoutH11(config=config, server_state=ServerState(), app_state={},
                              _loop=loop)  # type: ignore[arg-type]
    transport = FakeTransport(loop)
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return loop, transport, protocol


def test_trickled_request_head_is_closed_at_the_limit() -> None:
    """A byte every eighth of the idle limit never completes a head: the connection is closed
    at the limit after it opened all the same (the bytes do not put it off)."""
    loop, transport, protocol = _connection()
    for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 40:
        loop.advance(IDLE_S / 8)
        if transport.is_closing():
            break
        protocol.data_received(bytes([byte]))
    assert transport.closed_at == IDLE_S


def test_complete_request_head_is_never_closed_for_idleness() -> None:
    """Once a whole request has arrived the server, not the client, is busy: however long
    the answer takes, the connection is not closed for idleness (a fake clock)."""
    loop, transport, protocol = _connection()
    loop.advance(IDLE_S / 2)
    protocol.data_received(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    loop.advance(100 * IDLE_S)
    assert not transport.is_closing()


BUSY_SERVER = r'''
import asyncio, sys, threading
import anyio.from_thread
from audiogate import cli
from audiogate.deploy import judge

real_judge = judge.Judge.__call__


def busy_judge(self, upload, filename):  # in the thread pool, like every upload
    """Busy until a timer of the server's own event loop, due twice the idle limit after the
    upload arrived, has fired: a timer that would close the connection for idleness would
    be due earlier, so it fires first, however fast or slow the machine."""
    done = threading.Event()
    later = 2 * self.settings.idle_timeout_s
    anyio.from_thread.run_sync(lambda: asyncio.get_running_loop().call_later(later, done.set))
    done.wait()
    return real_judge(self, upload, filename)


judge.Judge.__call__ = busy_judge
raise SystemExit(cli.main(sys.argv[1:]))
'''


@pytest.mark.slow
def test_busy_server_keeps_the_connection(tmp_path: Path) -> None:
    """A request whose answer takes longer than the idle limit is answered, on a connection
    kept open: the server (made busy for twice the limit by its own clock) is busy, not the
    client."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", BUSY_SERVER, "serve", "--checkpoint",
         str(build_band_gate(tmp_path / "band.pt")), "--port", str(port), "--idle-timeout",
         str(IDLE_S)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    try:
        log = ""
        while "Uvicorn running on" not in log:
            line = proc.stdout.readline()
            assert line, f"the server did not start:\n{log}"
            log += line
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep it drained
        with httpx.Client(timeout=None) as client:
            r = client.post(f"http://127.0.0.1:{port}/predict",
                            files={"file": ("a.wav", _wav(), "audio/wav")})
        assert r.status_code == 200, r.text
    finally:
        proc.terminate()
        proc.wait()
