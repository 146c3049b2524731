"""The voice gate end to end: `train --recipe voice` makes a run folder like any run, its
checkpoint loads safely into a classifier with known answers, `evaluate` reports FAR/FRR/EER on
unheard impostors, and a gate is built from allowed clips only with impostor voices."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import audiogate
from audiogate.config import Config
from audiogate.core.checkpoint import read_gate
from audiogate.data.audio_io import load_audio
from audiogate.data.split import read_split
from audiogate.errors import CheckpointError, ConfigError, DataError
from audiogate.gates import resume, train
from audiogate.gates.voice.checkpoint import load_voice_checkpoint
from audiogate.gates.voice.classifier import VoiceClassifier
from audiogate.gates.voice.data import embed_settings, prepare_voice_data
from audiogate.gates.voice.fit import gate_scores
from audiogate.models.checkpoint import load_checkpoint
from audiogate.reporting.run_table import summarize_run

from .voice_data import ALLOWED, NEW_VOICE, UNHEARD, VoiceWords, needs_voice, voice_config

pytestmark = [pytest.mark.slow, needs_voice]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "audiogate", *args], capture_output=True,
                          text=True, timeout=600)


def test_a_voice_run_folder_is_a_run_folder(voice_run: Path) -> None:
    for name in ("config.toml", "status.json", "split.csv", "skipped.csv", "metrics.json",
                 "test_metrics.json", "test_predictions.csv", "report.html",
                 "models/best.pt", "outputs/confusion_test.png"):
        assert (voice_run / name).is_file(), name
    status = json.loads((voice_run / "status.json").read_text())
    assert status["state"] == "finished" and status["epochs_done"] == 0
    metrics = json.loads((voice_run / "metrics.json").read_text())
    assert metrics["kind"] == "voice" and metrics["classes"] == ["not_allowed", "allowed"]
    assert metrics["best_epoch"] is None and metrics["epochs"] == []  # no made-up epoch
    record = metrics["fit"]
    assert record["voices"] == 1 and record["enrolled_clips"] > 0 and record["cohort_clips"] > 0
    assert metrics["best_val_f1"] == record["val_f1"] and record["seconds"] > 0
    test = json.loads((voice_run / "test_metrics.json").read_text())
    assert {"far", "frr", "eer", "roc_auc", "threshold"} <= set(test["gate"])
    assert record["test_f1"] == test["macro_f1"]
    split = read_split(voice_run / "split.csv")
    assert split.train and split.val and split.test
    summary = summarize_run(voice_run)
    assert (summary.model, summary.state, summary.epochs) == ("ge2e", "finished", 0)
    assert summary.train_time_s == record["seconds"]
    assert "ge2e" in (voice_run / "config.toml").read_text()


def test_the_checkpoint_is_plain_data_and_refuses_code(voice_run: Path, tmp_path: Path) -> None:
    best = voice_run / "models" / "best.pt"
    payload = torch.load(best, weights_only=True)
    assert (payload["format"], payload["version"], payload["kind"]) == (
        "audiogate.checkpoint", 3, "voice")
    assert set(payload["body"]["voices"]) == {ALLOWED}
    assert read_gate(best).kind == "voice"
    with pytest.raises(CheckpointError, match="is a voice gate, not a trained network"):
        load_checkpoint(best)  # the network loader does not take a voice gate
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "audiogate.checkpoint", "x": Path("/")}))
    with pytest.raises(CheckpointError, match=r"unsafe|corrupt"):
        load_voice_checkpoint(evil)
    payload["gate"]["threshold"] = 7.0
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match="threshold"):
        load_voice_checkpoint(bad)


def test_load_gives_a_voice_classifier_with_known_answers(voice_run: Path,
                                                          voice_words: VoiceWords) -> None:
    gate = audiogate.load(voice_run / "models" / "best.pt")
    assert isinstance(gate, VoiceClassifier) and gate.threshold is not None
    assert gate.describe()["voices"] == {ALLOWED: len(gate.checkpoint.profile.voices[ALLOWED])}
    held = voice_words.held_out
    ours = gate.predict_many(sorted(str(p) for p in (held / ALLOWED).iterdir()))
    theirs = gate.predict_many(sorted(str(p) for name in (*UNHEARD, NEW_VOICE)
                                      for p in (held / name).iterdir()))
    assert all(p.label == "allowed" for p in ours), [p.score for p in ours]
    assert all(p.label == "not_allowed" for p in theirs), [p.score for p in theirs]
    assert min(p.score or 0 for p in ours) > max(p.score or 0 for p in theirs) + 0.1
    for p in ours + theirs:
        assert p.score == pytest.approx(p.probabilities["allowed"])
        assert p.probabilities["not_allowed"] == pytest.approx(1 - p.probabilities["allowed"])
    silence = gate.predict(np.zeros(16000, np.float32), sr=16000)
    assert silence.score == 0.0 and silence.label == "not_allowed"


def test_predict_scores_equal_the_cached_embeddings_scores(voice_run: Path) -> None:
    """Training scored validation clips from the embedding cache; predict embeds them anew:
    the two must agree, or the threshold would not mean what it says."""
    gate = audiogate.load(voice_run / "models" / "best.pt")
    config = gate.checkpoint.config
    data = prepare_voice_data(config, progress=False)
    assert data.cache.spec.settings == embed_settings(config)
    val = data.part("val")
    cached = gate_scores(gate.checkpoint.scorer, val, vad=config.voice_vad)
    fresh = gate.scores([load_audio(c.path, sr=16000) for c in val.clips])
    np.testing.assert_allclose(fresh, cached, atol=1e-5)


def test_evaluate_reports_far_frr_eer_on_unheard_impostors(voice_run: Path,
                                                           voice_words: VoiceWords,
                                                           tmp_path: Path) -> None:
    done = cli("-q", "evaluate", "--checkpoint", str(voice_run / "models" / "best.pt"),
               "--data", str(voice_words.evaluate), "--out", str(tmp_path / "ev"))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    gate = report["gate"]
    assert gate["n_negative"] == 4 * len(UNHEARD) and gate["n_positive"] == 4
    assert gate["far"] == 0.0 and gate["frr"] == 0.0 and gate["eer"] == 0.0
    assert "false-accept rate" in done.stdout and (tmp_path / "ev" / "report.html").is_file()


def test_a_voice_run_cannot_be_resumed(voice_run: Path) -> None:
    with pytest.raises(ConfigError, match="voice gate run"):
        resume(voice_run)


def test_train_cli_builds_a_gate_from_allowed_clips_and_an_impostor_folder(
        voice_words: VoiceWords, tmp_path: Path) -> None:
    done = cli("train", "--recipe", "voice", "--data", str(voice_words.allowed_only),
               "--impostors", str(voice_words.impostor_folder), "--runs-dir",
               str(tmp_path), "--name", "only", "--cache-dir", str(voice_words.cache),
               "--operating-point", "far=0.05", "--workers", "1")
    assert done.returncode == 0, done.stderr
    assert "operating point: P(allowed) >=" in done.stdout
    ckpt = load_voice_checkpoint(tmp_path / "only" / "models" / "best.pt")
    assert ckpt.gate is not None
    assert ckpt.gate["impostors"]["source"] == str(voice_words.impostor_folder)
    assert ckpt.gate["impostors"]["voices"] == ["cleo", "jon", "nia"]
    assert ckpt.gate["validation"]["far"] <= 0.05
    assert len(ckpt.scorer.cohort) == 0 and ckpt.scorer.head is None
    test = json.loads((tmp_path / "only" / "test_metrics.json").read_text())
    assert test["gate"]["n_negative"] == 0  # impostors set the threshold, never the test


def test_allowed_only_needs_the_voice_model_and_an_impostor_source(
        voice_words: VoiceWords, tmp_path: Path) -> None:
    done = cli("train", "--data", str(voice_words.allowed_only), "--runs-dir", str(tmp_path))
    assert done.returncode == 2 and "--recipe voice" in done.stderr
    config = voice_config(voice_words, tmp_path, "none", data=str(voice_words.allowed_only),
                          impostors="none")
    with pytest.raises(DataError, match="no impostor clip"):
        train(config, progress=False)
    assert not (tmp_path / "none").exists()  # nothing left behind


def test_builtin_impostors_are_shipped_embeddings_and_need_no_program(
        voice_words: VoiceWords, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = voice_config(voice_words, tmp_path, "builtin", data=str(voice_words.allowed_only))
    assert config.impostors == "auto"  # no not_allowed/: the built-in voices
    monkeypatch.setenv("PATH", "")  # no espeak-ng: the data above was spoken before
    result = train(config, progress=False)
    gate = load_voice_checkpoint(result.run.best).gate
    assert gate is not None and gate["validation"]["n_negative"] == 320
    assert gate["impostors"]["source"] == "builtin" and len(gate["impostors"]["voices"]) == 16
    with pytest.raises(ConfigError, match="max_clip_s = 1 s cuts"):
        train(voice_config(voice_words, tmp_path, "short", data=str(voice_words.allowed_only),
                           max_clip_s=1.0), progress=False)
    assert not (tmp_path / "short").exists()


def test_train_refuses_callbacks_and_a_used_name(voice_run: Path) -> None:
    config = load_voice_checkpoint(voice_run / "models" / "best.pt").config
    with pytest.raises(ConfigError, match="callbacks"):
        train(config, progress=False, callbacks=(object(),))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="already holds a model"):
        train(Config.from_dict({**config.to_dict(), "runs_dir": str(voice_run.parent),
                                "name": voice_run.name}), progress=False)


def test_group_by_folder_enrols_every_allowed_person(voice_words: VoiceWords,
                                                      tmp_path: Path) -> None:
    """README's way to train a voice gate (one sub-folder per person, ``--group-by folder``)
    used to hold whole allowed people out for validation and test: never enrolled, always
    rejected. Every allowed person is now enrolled and judged on held-out clips of their own;
    impostors stay whole."""
    data = tmp_path / "data"
    for name, src in ((ALLOWED, voice_words.data / "allowed" / ALLOWED),
                      (NEW_VOICE, voice_words.enrol)):
        (data / "allowed" / name).mkdir(parents=True)
        for f in src.iterdir():
            os.link(f, data / "allowed" / name / f.name)
    shutil.copytree(voice_words.data / "not_allowed", data / "not_allowed")
    result = train(voice_config(voice_words, tmp_path / "runs", "people", data=str(data),
                                group_by="folder"), progress=False)
    assert set(load_voice_checkpoint(result.run.best).profile.voices) == {ALLOWED, NEW_VOICE}
    split = read_split(result.run.split)
    for subset in ("train", "test"):
        people = {Path(c.path).parent.name for c in getattr(split, subset) if c.label == 1}
        assert people == {ALLOWED, NEW_VOICE}, subset
    impostors = [{c.group for c in getattr(split, s) if c.label == 0}
                 for s in ("train", "val", "test")]
    assert not (impostors[0] & impostors[2]) and not (impostors[1] & impostors[2])
