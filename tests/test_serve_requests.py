"""Requests the service refuses before doing their work (issue 22, items 3 and 5): a POST or
DELETE sent by a page of another site, and a request body trickled in too slowly (on a clock
the test moves: nothing here depends on the machine's speed)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from audiogate.deploy.guard import cross_site, same_origin
from audiogate.deploy.serve import ServeSettings, create_app
from audiogate.gates import load

from .conftest import SR, build_band_gate, sine

LOCAL = {"Host": "127.0.0.1:8000"}
"""What a browser sends to a service on loopback, whichever page asked it to."""


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    """A token-less service on loopback that takes enrolments (a band gate: it answers 409
    to them, after the checks under test)."""
    root = tmp_path_factory.mktemp("origin")
    settings = ServeSettings(local_only=True, enroll_out=str(root / "out.pt"))
    return TestClient(create_app(load(build_band_gate(root / "band.pt")), settings=settings))


def _wav() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, sine(440, 1.0), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _send(client: TestClient, method: str, path: str, headers: dict[str, str]) -> int:
    files = ({"file": ("a.wav", _wav(), "audio/wav")} if path == "/predict" else
             {"files": ("a.wav", _wav(), "audio/wav")})
    r = client.request(method, path, headers={**LOCAL, **headers},
                       data={"name": "eve"} if path == "/enroll" else None,
                       files=files if method == "POST" else None)
    if r.status_code == 403:
        assert "cross-site request refused" in r.json()["detail"], r.text
    return r.status_code


# ------------------------------------------------------------------ cross-site requests
CROSS_SITE = [
    {"Origin": "http://evil.example"},  # the form POST
    {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "cross-site"},  # a browser that sends no Origin
    {"Origin": "http://localhost:3000"},  # another service on this machine: same site
    {"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-site"},
    {"Origin": "null"},  # a sandboxed frame or a file:// page
]


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/enroll"), ("DELETE", "/enroll/ava"), ("POST", "/predict")])
@pytest.mark.parametrize("headers", CROSS_SITE)
def test_a_page_of_another_site_cannot_post_to_a_tokenless_service(
        client: TestClient, method: str, path: str, headers: dict[str, str]) -> None:
    """A browser lets any page send a form POST to 127.0.0.1 without asking first; it says
    where the page came from, and the service refuses, before reading the upload."""
    assert _send(client, method, path, headers) == 403


@pytest.mark.parametrize("headers", [
    {},  # programs: curl, httpx, the Python API
    {"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin"},  # its own page
    {"Origin": "http://127.0.0.1:8000"},
    {"Sec-Fetch-Site": "none"},  # typed by the user
    {"Origin": "https://gate.example", "X-Forwarded-Host": "gate.example"},  # behind a proxy
])
def test_its_own_page_and_programs_still_post(client: TestClient,
                                              headers: dict[str, str]) -> None:
    assert _send(client, "POST", "/predict", headers) == 200
    assert _send(client, "DELETE", "/enroll/ava", headers) == 409  # not a voice gate


def test_reading_is_not_refused(client: TestClient) -> None:
    """GETs change nothing; what another site's page may read of them is the browser's CORS
    rule, which this service never relaxes."""
    r = client.get("/model", headers={**LOCAL, "Origin": "http://evil.example",
                                      "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize(("origin", "hosts", "same"), [
    ("http://127.0.0.1:8000", ["127.0.0.1:8000"], True),
    ("http://LOCALHOST:8000", ["localhost:8000"], True),
    ("http://[::1]:8000", ["[::1]:8000"], True),
    ("http://gate.example", ["gate.example:80"], True),
    ("https://gate.example", ["gate.example"], True),
    ("https://gate.example", ["127.0.0.1:8000", "gate.example"], True),
    ("http://127.0.0.1:8001", ["127.0.0.1:8000"], False),
    ("http://evil.example", ["127.0.0.1:8000"], False),
    ("http://127.0.0.1:8000/x", ["127.0.0.1:8000"], False),
    ("null", ["127.0.0.1:8000"], False),
    ("", [""], False),
    ("http://127.0.0.1:x", ["127.0.0.1:x"], False),
])
def test_same_origin(origin: str, hosts: list[str], same: bool) -> None:
    assert same_origin(origin, hosts) is same


def test_cross_site_names_the_header() -> None:
    def scope(method: str, *headers: tuple[bytes, bytes]) -> dict[str, object]:
        return {"method": method, "headers": [(b"host", b"127.0.0.1:8000"), *headers]}

    evil = (b"origin", b"http://evil.example")
    assert cross_site(scope("POST", evil)) == "Origin: http://evil.example"
    assert cross_site(scope("PUT", (b"sec-fetch-site", b"cross-site"))) == \
        "Sec-Fetch-Site: cross-site"
    assert cross_site(scope("GET", evil)) is None
    assert cross_site(scope("POST")) is None


# ------------------------------------------------------------------ trickled bodies
IDLE_S = 15
BODY = (b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\n' + b"e" * 200 +
        b"\r\n--b--\r\n")
"""A whole multipart form (a name, no file: answered 422 once read)."""


class Trickle:
    """A client sending ``BODY`` a byte at a time, one second of a fake clock apart: the
    event loop's clock is this one, so no timer depends on how fast the machine is."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sent = 0
        self.answer: list[dict[str, object]] = []

    def time(self) -> float:
        return self.now

    async def receive(self) -> dict[str, object]:
        self.now += 1.0
        self.sent += 1
        return {"type": "http.request", "body": BODY[self.sent - 1:self.sent],
                "more_body": self.sent < len(BODY)}

    async def send(self, message: dict[str, object]) -> None:
        self.answer.append(message)


def test_trickled_body_is_cut_once_below_the_minimum_rate(tmp_path: Path) -> None:
    """A body trickled at 1 byte/s is never idle for a whole second, so the idle limit never
    cut it: it is cut once its first IDLE_S seconds are over, with 408 and Connection:
    close. A body sent at full speed is read whole (422: it holds no file)."""
    app = create_app(load(build_band_gate(tmp_path / "band.pt")),
                     settings=ServeSettings(idle_timeout_s=IDLE_S))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/enroll", "raw_path": b"/enroll",
             "root_path": "", "query_string": b"", "server": ("127.0.0.1", 8000),
             "client": ("127.0.0.1", 50000),
             "headers": [(b"host", b"127.0.0.1:8000"), (b"content-length", b"%d" % len(BODY)),
                         (b"content-type", b"multipart/form-data; boundary=b")]}
    trickle = Trickle()
    loop = asyncio.new_event_loop()
    loop.time = trickle.time  # type: ignore[method-assign]
    try:
        loop.run_until_complete(app(scope, trickle.receive, trickle.send))
    finally:
        loop.close()
    start = trickle.answer[0]
    assert start["status"] == 408, trickle.answer
    assert (b"connection", b"close") in start["headers"]  # type: ignore[operator]
    assert b"request body too slow" in trickle.answer[1]["body"]  # type: ignore[operator]
    assert trickle.sent == IDLE_S + 1 < len(BODY)  # cut at the first byte past the limit
    whole = TestClient(app).post("/enroll", headers={
        **LOCAL, "content-type": "multipart/form-data; boundary=b"}, content=BODY)
    assert whole.status_code == 422, whole.text
