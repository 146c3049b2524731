"""Enrolment quality checks: clips without speech, clips far from the rest of the voice, too
little speech, and the voice's expected false-reject rate; on synthetic embeddings (known
answers), in a run's fit, and (with the encoder) through ``gate.enroll``, ``audiogate enroll``
and ``POST /enroll``."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from audiogate.speech.encoder import EMBED_DIM
from audiogate.speech.quality import (
    MIN_SPEECH_S,
    check_voice,
    leave_one_out_similarity,
    outliers,
)

from .test_voice_snorm import clips_of, fit, people, synthetic_task, unit
from .voice_data import ALLOWED, NEW_VOICE, VoiceWords, needs_voice


def test_leave_one_out_similarity_is_to_the_other_clips_centroid() -> None:
    v = np.eye(3, EMBED_DIM)
    np.testing.assert_allclose(leave_one_out_similarity(v), [0.0, 0.0, 0.0], atol=1e-12)
    v = unit(np.array([[1.0, 0, 0], [1, 1, 0], [0, 1, 0]]))
    rest0 = unit(v[1] + v[2])
    assert leave_one_out_similarity(v)[0] == pytest.approx(float(v[0] @ rest0))
    assert leave_one_out_similarity(v[:1]).shape == (0,)


def test_a_clip_of_another_person_is_an_outlier_and_clean_clips_are_not() -> None:
    rng = np.random.default_rng(0)
    who = people(rng, 2)
    own = clips_of(rng, who[0], 20, noise=0.01)
    _, clean = outliers(own)
    assert not clean.any()
    mixed = np.concatenate([own[:10], clips_of(rng, who[1], 1, noise=0.01), own[10:]])
    sims, flagged = outliers(mixed)
    assert np.flatnonzero(flagged).tolist() == [10]
    assert sims[10] < np.median(sims)
    _, few = outliers(mixed[6:11])  # under 5 clips: no spread to judge by
    assert not outliers(mixed[7:11])[1].any() and few.shape == (5,)


def test_check_voice_reports_each_problem_and_the_expected_frr() -> None:
    rng = np.random.default_rng(1)
    who = people(rng, 2)
    vectors = np.concatenate([clips_of(rng, who[0], 8, noise=0.01),
                              clips_of(rng, who[1], 1, noise=0.01)])
    sources = [f"c{i}.wav" for i in range(9)]
    check = check_voice(name="ann", vectors=vectors, sources=sources,
                        speech_s=np.full(9, 0.5), no_speech=["quiet.wav"],
                        genuine=np.array([0.9, 0.8, 0.7, 0.6]), threshold=0.75)
    assert check.expected_frr == 0.5 and check.speech_s == pytest.approx(4.5)
    assert check.too_little_speech and [s for s, _ in check.outliers] == ["c8.wav"]
    problems = check.problems()
    assert len(problems) == 3
    assert "quiet.wav" in problems[0] and "c8.wav" in problems[1]
    assert f"under {MIN_SPEECH_S:g} s" in problems[2]
    as_dict = check.as_dict()
    assert as_dict["expected_frr"] == 0.5 and as_dict["outliers"][0]["source"] == "c8.wav"
    assert "expected false-reject rate 0.50" in check.summary()
    enough = check_voice(name="ann", vectors=vectors[:8], sources=sources[:8],
                         speech_s=np.full(8, 1.0), genuine=np.zeros(0), threshold=0.5)
    assert enough.problems() == [] and enough.expected_frr is None


def test_a_run_checks_each_training_voice_before_it_is_saved() -> None:
    data, _ = synthetic_task(2)
    clips = data.clips
    # person p0's first training clip becomes a bad recording (far from every voice); p1's
    # second holds no speech
    vectors, speech = clips.vectors.copy(), clips.speech_s.copy()
    first = next(i for i, c in enumerate(clips.clips) if c.path == "/d/allowed/p0/0.wav")
    silent = next(i for i, c in enumerate(clips.clips) if c.path == "/d/allowed/p1/1.wav")
    vectors[first] = np.eye(1, EMBED_DIM)[0]
    speech[silent] = 0.0
    built = fit(replace(data, clips=replace(clips, vectors=vectors, speech_s=speech)))
    checks = built.record["enrolment"]
    assert set(checks) == {"p0", "p1", "p2"}
    assert [o["source"] for o in checks["p0"]["outliers"]] == ["/d/allowed/p0/0.wav"]
    assert checks["p1"]["no_speech"] == ["/d/allowed/p1/1.wav"] and checks["p1"]["clips"] == 11
    assert checks["p2"]["problems"] == [] and checks["p2"]["speech_s"] == 12.0
    for check in checks.values():
        assert 0.0 <= check["expected_frr"] <= 1.0
        assert check["threshold"] == built.gate["threshold"]


@pytest.mark.slow
@needs_voice
def test_enrol_cli_and_service_report_the_checks(voice_run: Path, voice_words: VoiceWords,
                                                 tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    import audiogate
    from audiogate.data.audio_io import load_audio
    from audiogate.deploy.serve import ServeSettings, create_app

    best = voice_run / "models" / "best.pt"
    kai = sorted(str(p) for p in voice_words.enrol.iterdir())
    ava = sorted(str(p) for p in (voice_words.held_out / ALLOWED).iterdir())[0]
    gate = audiogate.load(best)
    done = gate.enroll(NEW_VOICE, [*kai, ava])
    quality = done.quality
    assert quality is not None and quality["clips"] == 11
    assert [o["source"] for o in quality["outliers"]] == [ava]  # another person's clip
    assert quality["speech_s"] > 0 and 0.0 <= quality["expected_frr"] <= 1.0
    assert quality["threshold"] == gate.threshold
    silence = np.zeros(16000, np.float32)
    arrays = gate.enroll("arrays", [silence, *(load_audio(p, sr=16000) for p in kai[:2])],
                         sr=16000)
    assert arrays.quality is not None and arrays.quality["no_speech"] == ["<array 1>"]
    done_cli = subprocess.run(
        [sys.executable, "-m", "audiogate", "-q", "enroll", "--checkpoint", str(best),
         "--allowed", *kai, ava, "--name", NEW_VOICE, "--out", str(tmp_path / "g.pt")],
        capture_output=True, text=True, timeout=300)
    assert done_cli.returncode == 0, done_cli.stderr
    assert "checks: 11 clip(s)" in done_cli.stdout and "expected false-reject rate" in \
        done_cli.stdout
    assert "warning: 1 clip(s) far from the rest of the voice" in done_cli.stdout
    assert Path(ava).name in done_cli.stdout
    client = TestClient(create_app(audiogate.load(best), settings=ServeSettings(
        enroll_out=str(tmp_path / "served.pt"))))
    upload = [("files", (Path(p).name, Path(p).read_bytes(), "audio/wav")) for p in [*kai, ava]]
    served = client.post("/enroll", data={"name": NEW_VOICE}, files=upload)
    assert served.status_code == 200, served.text
    body = served.json()["quality"]
    assert body["clips"] == 11 and [o["source"] for o in body["outliers"]] == ["<array 11>"]
    assert body["expected_frr"] == pytest.approx(quality["expected_frr"], abs=0.1)
