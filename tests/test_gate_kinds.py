"""One Gate interface, kinds chosen by a registry, one checkpoint format with a kind field
(and the files of audiogate 0.1 and 0.2 still load), and a third kind in one module."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import audiogate
from audiogate.config import Config
from audiogate.core.checkpoint import read_gate
from audiogate.data.audio_io import write_wav
from audiogate.errors import CheckpointError, ConfigError
from audiogate.gates import kind_for, kinds, train
from audiogate.gates.network import Classifier, NetworkKind
from audiogate.gates.voice import VoiceKind

from .conftest import SR, build_band_gate, hiss, sine

EXAMPLE = Path(__file__).parents[1] / "docs" / "examples" / "loudness_gate.py"


def test_the_model_chooses_the_kind_and_an_unknown_one_is_refused_first(
        tmp_path: Path) -> None:
    assert isinstance(kind_for(Config()), NetworkKind)
    assert isinstance(kind_for(Config(model="simple")), NetworkKind)
    assert isinstance(kind_for(Config(recipe="voice")), VoiceKind)
    assert [k.name for k in kinds()][:2] == ["network", "voice"]
    config = Config(model="resnet9000", data=str(tmp_path / "nowhere"),
                    runs_dir=str(tmp_path / "runs"))
    with pytest.raises(ConfigError, match=r"unknown model 'resnet9000'; known models: .*"
                                          r"tcresnet.*ge2e"):
        train(config)
    assert not (tmp_path / "runs").exists()


def test_fields_the_kind_ignores_are_named_once(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    seen = []
    monkeypatch.setattr(NetworkKind, "fit", lambda self, config, **kw: seen.append(config))
    with caplog.at_level(logging.WARNING, logger="audiogate"):
        train(Config(voice_top_k=3, impostors="none", lr=0.01))
    warnings = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert warnings == ["a network gate does not read voice_top_k, impostors; they are "
                        "ignored"]
    assert len(seen) == 1


def _legacy_network(src: Path, dst: Path, *, version: int) -> None:
    """What audiogate 0.2 (version 2) or 0.1 (version 1, weights only) wrote."""
    new = torch.load(src, weights_only=True)
    old = {k: new[k] for k in ("config", "classes", "epoch", "metrics")}
    old.update(format="audiogate.checkpoint", version=version)
    if version == 1:
        old["model"] = new["body"]["weights"]
        for field in ("pad", "model"):  # 0.1 had neither: silence padding, the SimpleConvNet
            del old["config"][field]
    else:
        old.update(model=new["body"]["model"], weights=new["body"]["weights"])
    torch.save(old, dst)


@pytest.mark.parametrize("version", [1, 2])
def test_network_checkpoints_of_0_1_and_0_2_still_load(tmp_path: Path, version: int,
                                                       rng: np.random.Generator) -> None:
    new = build_band_gate(tmp_path / "new.pt", fixed_length=32)
    old = tmp_path / f"v{version}.pt"
    _legacy_network(new, old, version=version)
    stored = read_gate(old)
    assert stored.kind == "network" and stored.body["version"] == version
    gate = audiogate.load(old)
    assert isinstance(gate, Classifier)
    clips = [sine(400, 0.5), hiss(rng=rng, duration=0.5)]
    if version == 2:
        same = audiogate.load(new)
        np.testing.assert_allclose([p.score for p in gate.predict_many(clips, sr=SR)],
                                   [p.score for p in same.predict_many(clips, sr=SR)])
    else:
        assert gate.features.pad == "silence"
        assert [p.label for p in gate.predict_many(clips, sr=SR)] == ["allowed", "not_allowed"]


def test_future_versions_and_unknown_kinds_are_refused_with_a_reason(tmp_path: Path) -> None:
    new = build_band_gate(tmp_path / "new.pt", fixed_length=32)
    payload = torch.load(new, weights_only=True)
    torch.save({**payload, "version": 9}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match=r"version 9 is not supported.*upgrade"):
        audiogate.load(tmp_path / "future.pt")
    torch.save({**payload, "kind": "alien"}, tmp_path / "alien.pt")
    with pytest.raises(CheckpointError, match="kind 'alien', which this audiogate does not "
                                              "know"):
        audiogate.load(tmp_path / "alien.pt")
    torch.save({"weights": payload["body"]["weights"]}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="not an audiogate checkpoint"):
        audiogate.load(tmp_path / "bare.pt")


def test_a_gate_without_enrolled_voices_says_so(tmp_path: Path) -> None:
    gate = audiogate.load(build_band_gate(tmp_path / "g.pt", fixed_length=32))
    assert not gate.enrolls and gate.voices == {}
    with pytest.raises(ConfigError, match="no enrolled voices"):
        gate.enroll("carol", [sine(300, 0.5)], sr=SR)


def test_a_third_kind_is_one_module_and_one_registration(tmp_path: Path,
                                                        rng: np.random.Generator) -> None:
    """The docs' example kind, trained, loaded, saved and judged through the same API."""
    spec = importlib.util.spec_from_file_location("loudness_gate", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["loudness_gate"] = module
    spec.loader.exec_module(module)  # registers the kind
    data = tmp_path / "data"
    for i in range(20):
        write_wav(data / "allowed" / f"loud_{i:02d}.wav", sine(rng.uniform(200, 2000), 0.5,
                                                                amp=rng.uniform(0.3, 0.6)), sr=SR)
        write_wav(data / "not_allowed" / f"quiet_{i:02d}.wav",
                  rng.uniform(0.002, 0.01) * hiss(rng=rng, duration=0.5), sr=SR)
    result = audiogate.train(Config(model="loudness", data=str(data), fixed_length=32,
                                    runs_dir=str(tmp_path / "runs"), name="l", workers=1))
    assert result.test_report is not None and result.test_report["macro_f1"] == 1.0
    gate = audiogate.load(result.run.best)
    assert gate.kind == "loudness" and gate.epoch is None
    assert [p.label for p in gate.predict_many([sine(500, 0.5, amp=0.5),
                                                0.003 * hiss(rng=rng, duration=0.5)],
                                               sr=SR)] == ["allowed", "not_allowed"]
    gate.save(tmp_path / "copy.pt")
    assert audiogate.load(tmp_path / "copy.pt").describe()["kind"] == "loudness"
    assert (result.run.root / "metrics.json").is_file() and result.run.test_report.is_file()
