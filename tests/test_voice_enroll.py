"""Enrolment without retraining: the Python API, `audiogate enroll`, and the service's
`POST /enroll` / `DELETE /enroll/{name}` behind the token."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

import audiogate
from audiogate.deploy.serve import ServeSettings, create_app
from audiogate.errors import ConfigError, DataError
from audiogate.gates import load
from audiogate.gates.voice.classifier import VoiceClassifier

from .conftest import build_band_gate, running_server
from .voice_data import ALLOWED, NEW_VOICE, UNHEARD, VoiceWords, needs_voice

pytestmark = [pytest.mark.slow, needs_voice]

TOKEN = "enrol-token-0123456789abcdef"


def files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.iterdir())


def labels(gate: VoiceClassifier, paths: list[str]) -> list[str | None]:
    return [p.label for p in gate.predict_many(paths)]


def test_enrol_accepts_the_new_voice_and_remove_forgets_it(voice_run: Path,
                                                           voice_words: VoiceWords,
                                                           tmp_path: Path) -> None:
    gate = audiogate.load(voice_run / "models" / "best.pt")
    threshold = gate.threshold
    kai = files(voice_words.held_out / NEW_VOICE)
    ava = files(voice_words.held_out / ALLOWED)
    assert set(labels(gate, kai)) == {"not_allowed"}
    done = gate.enroll(NEW_VOICE, files(voice_words.enrol))
    assert done.n_clips == 10 and not done.skipped
    assert gate.voices[NEW_VOICE] == 10 and gate.threshold == threshold
    # kai gets in at the kept threshold (S-norm: one of its four new clips sits just under
    # it, as the male voices the gate was calibrated on are near-clones of kai to the
    # encoder), ava still does, and enrolling kai lets no male voice never heard in
    assert labels(gate, kai).count("allowed") >= 3
    assert set(labels(gate, ava)) == {"allowed"}
    unheard = [f for other in UNHEARD for f in files(voice_words.held_out / other)]
    assert set(labels(gate, unheard)) == {"not_allowed"}
    gate.save(tmp_path / "with-kai.pt")
    again = audiogate.load(tmp_path / "with-kai.pt")
    assert again.voices == gate.voices
    assert [e["action"] for e in again.checkpoint.history] == ["enrol"]
    np.testing.assert_allclose(again.scores([np.zeros(8000, np.float32)]), [0.0])
    with pytest.raises(ConfigError, match="already enrolled"):
        gate.enroll(NEW_VOICE, files(voice_words.enrol)[:2])
    gate.remove(NEW_VOICE)
    assert set(labels(gate, kai)) == {"not_allowed"}
    with pytest.raises(DataError, match="only enrolled voice"):
        gate.remove(ALLOWED)
    with pytest.raises(ConfigError, match="no voice named"):
        gate.remove("nobody")


def test_enrol_leaves_out_clips_without_speech(voice_run: Path, voice_words: VoiceWords) -> None:
    gate = audiogate.load(voice_run / "models" / "best.pt")
    silence = np.zeros(16000, np.float32)
    with pytest.raises(DataError, match="none of the 1 clip"):
        gate.enroll("quiet", [silence], sr=16000)
    y, sr = sf.read(files(voice_words.enrol)[0], dtype="float32")
    done = gate.enroll("arrays", [y, silence], sr=sr)
    assert done.n_clips == 1 and [reason for _, reason in done.skipped] == [
        "no speech found (the VAD found no voice in it)"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "audiogate", *args], capture_output=True,
                          text=True, timeout=300)


def test_enroll_command(voice_run: Path, voice_words: VoiceWords, tmp_path: Path) -> None:
    best = str(voice_run / "models" / "best.pt")
    out = tmp_path / "gate.pt"
    done = run_cli("-q", "enroll", "--checkpoint", best, "--allowed", str(voice_words.enrol),
                   "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert f"enrolled '{NEW_VOICE}' from 10 clip(s)" in done.stdout
    voices = audiogate.load(out).voices
    assert list(voices) == [ALLOWED, NEW_VOICE] and voices[NEW_VOICE] == 10
    done = run_cli("-q", "enroll", "--checkpoint", str(out), "--remove", NEW_VOICE, "--out",
                   str(out))
    assert done.returncode == 0 and f"removed '{NEW_VOICE}'" in done.stdout
    assert list(audiogate.load(out).voices) == [ALLOWED]
    both = run_cli("-q", "enroll", "--checkpoint", best, "--remove", "x", "--allowed",
                   str(voice_words.enrol), "--out", str(out))
    assert both.returncode == 2 and "either --allowed" in both.stderr
    band = build_band_gate(tmp_path / "band.pt")
    other = run_cli("-q", "enroll", "--checkpoint", str(band), "--allowed",
                    str(voice_words.enrol), "--out", str(out))
    assert other.returncode == 2 and "not a voice gate" in other.stderr


def wav(path: str) -> tuple[str, bytes, str]:
    return (Path(path).name, Path(path).read_bytes(), "audio/wav")


def test_service_enrols_and_removes_behind_the_token(voice_run: Path, voice_words: VoiceWords,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "served.pt"
    with running_server(voice_run / "models" / "best.pt", tmpdir=tmp_path / "tmp",
                        extra=("--enroll-out", str(out)),
                        env={"AUDIOGATE_TOKEN": TOKEN}) as srv:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        upload = [("files", wav(p)) for p in files(voice_words.enrol)]
        assert httpx.post(f"{srv.url}/enroll", data={"name": NEW_VOICE}, files=upload,
                          timeout=60).status_code == 401
        r = httpx.post(f"{srv.url}/enroll", data={"name": NEW_VOICE}, files=upload,
                       headers=auth, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["clips"] == 10 and NEW_VOICE in r.json()["voices"]
        assert NEW_VOICE in audiogate.load(out).voices  # persisted
        model = httpx.get(f"{srv.url}/model", headers=auth, timeout=30).json()
        assert NEW_VOICE in model["voices"]
        kai = files(voice_words.held_out / NEW_VOICE)[0]
        verdict = httpx.post(f"{srv.url}/predict", files={"file": wav(kai)}, headers=auth,
                             timeout=60).json()
        assert verdict["label"] == "allowed"
        again = httpx.post(f"{srv.url}/enroll", data={"name": NEW_VOICE}, files=upload[:1],
                           headers=auth, timeout=60)
        assert again.status_code == 409
        assert httpx.delete(f"{srv.url}/enroll/{NEW_VOICE}", timeout=30).status_code == 401
        gone = httpx.delete(f"{srv.url}/enroll/{NEW_VOICE}", headers=auth, timeout=60)
        assert gone.status_code == 200 and NEW_VOICE not in gone.json()["voices"]
        assert NEW_VOICE not in audiogate.load(out).voices
        assert httpx.delete(f"{srv.url}/enroll/nobody", headers=auth,
                            timeout=30).status_code == 404


def test_a_page_of_another_site_cannot_enrol_on_a_tokenless_service(
        voice_run: Path, voice_words: VoiceWords, tmp_path: Path) -> None:
    """Issue 22, item 3: a form POST any page can make the browser send to a token-less
    service on loopback (its Host is 127.0.0.1) enrolled the sender's voice. Refused now, by
    its Origin; the service's own page still enrols."""
    voice = audiogate.load(voice_run / "models" / "best.pt")
    out = tmp_path / "served.pt"
    client = TestClient(create_app(voice, settings=ServeSettings(enroll_out=str(out),
                                                                 local_only=True)))
    upload = [("files", wav(p)) for p in files(voice_words.enrol)]
    local = {"Host": "127.0.0.1:8000"}
    r = client.post("/enroll", data={"name": NEW_VOICE}, files=upload,
                    headers={**local, "Origin": "http://evil.example"})
    assert r.status_code == 403, r.text
    assert NEW_VOICE not in voice.voices and not out.exists()
    own = client.post("/enroll", data={"name": NEW_VOICE}, files=upload, headers={
        **local, "Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 200, own.text
    assert NEW_VOICE in voice.voices and NEW_VOICE in audiogate.load(out).voices


def test_service_enrolment_is_off_without_enroll_out_and_for_other_models(
        voice_run: Path, voice_words: VoiceWords, tmp_path: Path) -> None:
    clip = files(voice_words.enrol)[:1]
    voice = audiogate.load(voice_run / "models" / "best.pt")
    band_gate = load(build_band_gate(tmp_path / "band.pt"))
    for gate, settings, status in [(voice, ServeSettings(), 403),
                                   (band_gate, ServeSettings(enroll_out=str(tmp_path / "x.pt")),
                                    409)]:
        client = TestClient(create_app(gate, settings=settings))
        r = client.post("/enroll", data={"name": "x"}, files=[("files", wav(clip[0]))])
        assert r.status_code == status, r.text
        assert client.delete("/enroll/x").status_code == status
    empty = TestClient(create_app(voice, settings=ServeSettings(
        enroll_out=str(tmp_path / "y.pt")))).post("/enroll", data={"name": "x"},
                                                  files=[("files", ("a.wav", io.BytesIO(b""),
                                                                    "audio/wav"))])
    assert empty.status_code == 422
