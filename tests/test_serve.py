"""The HTTP service, tested through a real `audiogate serve` process on a free localhost port."""

from __future__ import annotations

import base64
import io
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from audiogate.data.synth import voice_like
from audiogate.deploy.serve import create_app
from audiogate.gates import load
from audiogate.models.checkpoint import load_checkpoint, save_checkpoint

from .conftest import SR, Server, build_band_gate, hiss, running_server

LIMIT_MB = 1.0
MAX_SECONDS = 30.0

pytestmark = pytest.mark.slow


def wav_bytes(y: np.ndarray, *, sr: int = SR, fmt: str = "WAV", subtype: str = "PCM_16"
              ) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("serve")
    ckpt = build_band_gate(root / "band.pt")
    with running_server(ckpt, tmpdir=root / "tmp",
                        extra=("--max-upload-mb", str(LIMIT_MB), "--max-seconds",
                               str(MAX_SECONDS), "--hop", "0.25")) as srv:
        yield srv


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {"voice": 0.5 * voice_like(rng=rng, duration=2.0, sr=SR),
            "hiss": 0.5 * hiss(rng=rng, duration=1.5)}


def post(server: Server, content: bytes, name: str = "clip.wav",
         mime: str = "audio/wav") -> httpx.Response:
    return httpx.post(f"{server.url}/predict", files={"file": (name, content, mime)},
                      timeout=30)


# ------------------------------------------------------------------ good requests
def test_health_model_openapi_and_page(server: Server) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    info = httpx.get(f"{server.url}/model").json()
    assert info["classes"] == ["not_allowed", "allowed"]
    assert info["features"]["sr"] == SR and info["epoch"] == 1 and info["val_f1"] == 1.0
    assert info["backend"] == "torch" and info["max_upload_mb"] == LIMIT_MB
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert set(spec["paths"]) >= {"/predict", "/health", "/model"}
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "<canvas id=\"spectrogram\"" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.split("<body>")[0].replace("http-equiv", "")
    for name in ("app.js", "style.css", "recorder-worklet.js"):
        assert httpx.get(f"{server.url}/static/{name}").status_code == 200
    assert httpx.get(f"{server.url}/docs").status_code == 404  # Swagger UI needs a CDN


@pytest.mark.parametrize(("clip", "fmt", "label"), [
    ("voice", "WAV", "allowed"), ("hiss", "FLAC", "not_allowed"), ("voice", "OGG", "allowed")])
def test_predict_verdicts(server: Server, clips: dict[str, np.ndarray], clip: str, fmt: str,
                          label: str) -> None:
    subtype = "VORBIS" if fmt == "OGG" else "PCM_16"
    content = wav_bytes(clips[clip], fmt=fmt, subtype=subtype)
    r = post(server, content, name=f"x.{fmt.lower()}", mime="application/octet-stream")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["label"] == label
    assert sum(out["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert out["duration_s"] == pytest.approx(len(clips[clip]) / SR, abs=0.01)
    assert out["segments"][0]["start"] == 0.0
    assert out["segments"][-1]["end"] == pytest.approx(out["duration_s"], abs=1e-3)
    spec = out["spectrogram"]
    assert len(base64.b64decode(spec["data"])) == spec["n_mels"] * spec["n_frames"] > 0


def test_predict_matches_the_python_api(server: Server, clips: dict[str, np.ndarray],
                                        tmp_path: Path) -> None:
    path = tmp_path / "voice.wav"
    path.write_bytes(wav_bytes(clips["voice"]))
    expected = load(server.checkpoint).predict(str(path))
    out = post(server, path.read_bytes()).json()
    for name, p in expected.probabilities.items():
        assert out["probabilities"][name] == pytest.approx(p, abs=1e-5)
    assert out["score"] == pytest.approx(expected.score, abs=1e-5)
    assert (out["threshold"], out["n_windows"]) == (expected.threshold, expected.n_windows)
    assert out["positive"] == expected.positive == "allowed"


def test_predict_names_the_class_the_gate_accepts(tmp_path: Path,
                                                  clips: dict[str, np.ndarray]) -> None:
    """``/predict`` says which class its score is the probability of, as ``predict --json``
    does: here a gate whose classes are ``accept`` and ``reject`` and which accepts the first
    (the older rule, label 1, would have said ``reject``)."""
    band = load_checkpoint(build_band_gate(tmp_path / "band.pt"))
    path = tmp_path / "accept.pt"
    save_checkpoint(path, net=band.build_net(), spec=band.spec, config=band.config,
                    classes=("accept", "reject"), epoch=1, metrics={},
                    gate={"positive": "accept", "threshold": 0.5, "operating_point": "f1",
                          "validation": None})
    gate = load(path)
    client = TestClient(create_app(gate))
    for clip in clips.values():
        content = wav_bytes(clip)
        out = client.post("/predict", files={"file": ("x.wav", content, "audio/wav")}).json()
        wav = tmp_path / "clip.wav"
        wav.write_bytes(content)
        expected = gate.predict(str(wav))
        assert out["positive"] == expected.positive == "accept"
        assert out["score"] == pytest.approx(out["probabilities"]["accept"], abs=1e-6)
        assert out["label"] == expected.label


def test_long_upload_gets_segments(server: Server) -> None:
    rng = np.random.default_rng(3)
    y = 0.5 * np.concatenate([hiss(rng=rng, duration=4.0),
                              voice_like(rng=rng, duration=5.0, sr=SR)])
    out = post(server, wav_bytes(y)).json()
    assert [s["label"] for s in out["segments"]] == ["not_allowed", "allowed"]
    assert out["segments"][0]["end"] == pytest.approx(4.0, abs=0.5)


def test_concurrent_requests(server: Server, clips: dict[str, np.ndarray]) -> None:
    jobs = [("voice", "allowed"), ("hiss", "not_allowed")] * 6
    payload = {k: wav_bytes(v) for k, v in clips.items()}
    alone = {k: post(server, payload[k]).json()["probabilities"] for k in ("voice", "hiss")}
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(lambda job: post(server, payload[job[0]]), jobs))
    assert [r.status_code for r in responses] == [200] * len(jobs)
    assert [r.json()["label"] for r in responses] == [label for _, label in jobs]
    # requests in flight together do not disturb each other: same numbers as one at a time
    assert [r.json()["probabilities"] for r in responses] == [alone[k] for k, _ in jobs]


# ------------------------------------------------------------------- bad requests
def test_no_file_and_wrong_content_type(server: Server) -> None:
    r = httpx.post(f"{server.url}/predict", data={"other": "x"}, files={"x": ("a", b"1")})
    assert r.status_code == 422 and "field 'file'" in r.json()["detail"]
    r = httpx.post(f"{server.url}/predict", json={"file": "clip.wav"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]


@pytest.mark.parametrize(("content", "status", "words"), [
    (b"", 422, "empty upload"),
    (b"hello, this is plain text and not audio at all" * 10, 415, "unsupported audio file"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", 415, "unsupported audio file"),
])
def test_unreadable_uploads(server: Server, content: bytes, status: int, words: str) -> None:
    r = post(server, content)
    assert r.status_code == status
    assert words in r.json()["detail"]


def test_unusable_audio(server: Server) -> None:
    r = post(server, wav_bytes(np.zeros(100, np.float32)))
    assert r.status_code == 422 and "too short" in r.json()["detail"]
    bad = np.zeros(SR, np.float32)
    bad[10] = np.nan
    r = post(server, wav_bytes(bad, subtype="FLOAT"))
    assert r.status_code == 422 and "NaN" in r.json()["detail"]
    r = post(server, wav_bytes(np.zeros(int((MAX_SECONDS + 5) * 8000), np.float32), sr=8000,
                               subtype="PCM_U8"))
    assert r.status_code == 413 and "too long" in r.json()["detail"]


def test_upload_size_limit(server: Server) -> None:
    big = b"\0" * int(1.5 * LIMIT_MB * 1024 * 1024)
    r = post(server, big)
    assert r.status_code == 413 and "upload too large" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        boundary = b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\""
        yield boundary + b"\r\nContent-Type: audio/wav\r\n\r\n"
        for _ in range(24):
            yield b"\0" * 65536
        yield b"\r\n--xyz--\r\n"

    r = httpx.post(f"{server.url}/predict", content=chunks(), timeout=30,
                   headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 413
    # a request that only announces a huge body is refused before it is sent
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: 999999999999\r\n"
                  b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 413")


def test_nothing_left_in_the_temp_folder(server: Server, clips: dict[str, np.ndarray]) -> None:
    assert post(server, wav_bytes(clips["voice"])).status_code == 200
    assert post(server, b"not audio").status_code == 415
    assert sorted(p.name for p in server.tmpdir.iterdir()) == []
