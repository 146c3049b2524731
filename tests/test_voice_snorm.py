"""Voice gate scoring rules (top-k, centroid, S-norm) and calibration on the cohort, on
synthetic embeddings whose answers are known: the formulas, leaving a speaker or a clip out,
checkpoints old and new, the whole-gate graph (and its ONNX export) against the scorer, and
the fit's threshold trials."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from audiogate.config import Config
from audiogate.core.checkpoint import StoredGate
from audiogate.data import Clip
from audiogate.data.split import Split
from audiogate.errors import CheckpointError, ConfigError
from audiogate.gates.voice.checkpoint import (
    VoiceCheckpoint,
    load_voice_checkpoint,
    save_voice_checkpoint,
)
from audiogate.gates.voice.data import VoiceData
from audiogate.gates.voice.fit import build_gate, gate_scores
from audiogate.gates.voice.onnx import GateGraph
from audiogate.reporting.metrics import error_rates
from audiogate.speech.embeddings import EmbeddedClips, EmbedSettings, EmbedSpec
from audiogate.speech.encoder import EMBED_DIM, WINDOW_SAMPLES
from audiogate.speech.impostors import Impostors
from audiogate.speech.profile import VoiceProfile
from audiogate.speech.scoring import LogisticHead, VoiceScorer
from audiogate.speech.snorm import SCALE, STD_FLOOR, ScoreRule

SPEC = EmbedSpec(EmbedSettings(), "0" * 64, None)


def basis(*weights: dict[int, float]) -> np.ndarray:
    out = np.zeros((len(weights), EMBED_DIM))
    for row, w in enumerate(weights):
        for i, x in w.items():
            out[row, i] = x
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def people(rng: np.random.Generator, n: int, *, spread: float = 0.6) -> np.ndarray:
    """``n`` speaker directions around one common direction (speaker embeddings share most of
    it), non-negative like the encoder's."""
    common = np.abs(rng.standard_normal(EMBED_DIM))
    return unit(np.abs(common / np.linalg.norm(common)
                       + spread * np.abs(rng.standard_normal((n, EMBED_DIM))) / 16))


def clips_of(rng: np.random.Generator, person: np.ndarray, n: int,
             noise: float = 0.05) -> np.ndarray:
    return unit(np.abs(person + noise * rng.standard_normal((n, EMBED_DIM))))


def test_centroid_rule_scores_by_each_voices_mean() -> None:
    profile = VoiceProfile(spec=SPEC, top_k=1).enrol("ann", basis({0: 1}, {1: 1})) \
        .enrol("bob", basis({2: 1}))
    probe = basis({0: 1}, {2: 1}, {3: 1})
    topk = VoiceScorer(profile=profile, cohort=np.zeros((0, EMBED_DIM)))
    centroid = VoiceScorer(profile=profile, cohort=np.zeros((0, EMBED_DIM)),
                           rule=ScoreRule("centroid"))
    np.testing.assert_allclose(topk.score(probe), [1.0, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(centroid.score(probe), [np.sqrt(0.5), 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(profile.centroids()[0], basis({0: 1, 1: 1})[0], atol=1e-12)


def snorm_by_hand(clip: np.ndarray, voices: list[np.ndarray], cohort: list[np.ndarray], *,
                  top: int) -> float:
    """S-norm written out with loops, for the known answer."""
    best = -np.inf
    for voice in voices:
        c = unit(np.mean(voice, axis=0))
        s = float(clip @ c)
        z = sorted((float(c @ k) for k in cohort), reverse=True)[:top]
        t = sorted((float(clip @ k) for k in cohort), reverse=True)[:top]
        zn = (s - np.mean(z)) / max(np.std(z), STD_FLOOR)
        tn = (s - np.mean(t)) / max(np.std(t), STD_FLOOR)
        best = max(best, 0.5 * (zn + tn))
    return float(1 / (1 + np.exp(-best / SCALE)))


def test_snorm_is_the_mean_of_the_voice_and_clip_normalisations() -> None:
    rng = np.random.default_rng(0)
    who = people(rng, 6)
    voices = [clips_of(rng, who[0], 4), clips_of(rng, who[1], 3)]
    cohort = [who[2], who[3], who[4], who[5]]
    profile = VoiceProfile(spec=SPEC).enrol("ann", voices[0]).enrol("bob", voices[1])
    scorer = VoiceScorer(profile=profile, cohort=np.zeros((0, EMBED_DIM)),
                         rule=ScoreRule("snorm", top=3), speakers=np.stack(cohort))
    probes = np.concatenate([clips_of(rng, who[0], 2), clips_of(rng, who[4], 2)])
    want = [snorm_by_hand(p, voices, cohort, top=3) for p in probes]
    np.testing.assert_allclose(scorer.score(probes), want, atol=1e-5)
    assert scorer.score(probes[:2]).min() > scorer.score(probes[2:]).max()


def test_score_unheard_leaves_each_speaker_out_of_the_cohort() -> None:
    rng = np.random.default_rng(1)
    who = people(rng, 5)
    profile = VoiceProfile(spec=SPEC).enrol("ann", clips_of(rng, who[0], 3))
    scorer = VoiceScorer(profile=profile, cohort=np.zeros((0, EMBED_DIM)),
                         rule=ScoreRule("snorm"), speakers=who[1:])
    clips = np.concatenate([clips_of(rng, who[1], 2), clips_of(rng, who[3], 2)])
    speaker = np.array([0, 0, 2, 2])
    unheard = scorer.score_unheard(clips, speaker)
    for rows, j in ((slice(0, 2), 0), (slice(2, 4), 2)):
        without = VoiceScorer(profile=profile, cohort=np.zeros((0, EMBED_DIM)),
                              rule=ScoreRule("snorm"), speakers=np.delete(who[1:], j, axis=0))
        np.testing.assert_allclose(unheard[rows], without.score(clips[rows]), atol=1e-12)
    assert not np.allclose(unheard, scorer.score(clips))
    plain = VoiceScorer(profile=profile, cohort=np.zeros((0, EMBED_DIM)),
                        rule=ScoreRule("centroid"))
    np.testing.assert_allclose(plain.score_unheard(clips, speaker), plain.score(clips))


def test_leave_one_out_scores_each_clip_without_itself() -> None:
    clips = basis({0: 1}, {1: 1}, {0: 1, 1: 1})
    profile = VoiceProfile(spec=SPEC).enrol("ann", clips).enrol("solo", basis({5: 1}))
    scorer = VoiceScorer(profile=profile, cohort=np.zeros((0, EMBED_DIM)),
                         rule=ScoreRule("centroid"))
    want = [clips[i] @ unit(np.delete(clips, i, axis=0).mean(axis=0)) for i in range(3)]
    np.testing.assert_allclose(scorer.leave_one_out("ann"), want, atol=1e-6)
    assert scorer.leave_one_out("solo").shape == (0,)  # one clip: nothing to compare with


def test_rules_are_checked() -> None:
    profile = VoiceProfile(spec=SPEC).enrol("ann", basis({0: 1}))
    with pytest.raises(ConfigError, match="one of topk, centroid, snorm"):
        ScoreRule("mean")
    with pytest.raises(CheckpointError, match="at least 3 cohort speakers"):
        VoiceScorer(profile=profile, cohort=np.zeros((0, EMBED_DIM)), rule=ScoreRule("snorm"),
                    speakers=basis({1: 1}, {2: 1}))
    with pytest.raises(CheckpointError, match="top-k"):
        VoiceScorer(profile=profile, cohort=basis({1: 1}), rule=ScoreRule("centroid"),
                    head=LogisticHead(coef=(1.0, 0.0), intercept=0.0))
    for field, value in (("voice_score", "mean"), ("voice_snorm_top", 0),
                         ("voice_snorm_top", 1001), ("voice_calibration", "test")):
        with pytest.raises(ConfigError, match=field):
            Config(**{field: value})
    voice = Config(recipe="voice")
    assert (voice.voice_score, voice.voice_calibration, voice.voice_snorm_top) == \
        ("snorm", "cohort", 10)


def snorm_checkpoint(rng: np.random.Generator) -> VoiceCheckpoint:
    who = people(rng, 6)
    profile = VoiceProfile(spec=SPEC).enrol("ann", clips_of(rng, who[0], 4)) \
        .enrol("bob", clips_of(rng, who[1], 2))
    scorer = VoiceScorer(profile=profile, cohort=clips_of(rng, who[2], 3),
                         rule=ScoreRule("snorm", top=2), speakers=who[2:])
    return VoiceCheckpoint(config=Config(recipe="voice"), classes=("not_allowed", "allowed"),
                           scorer=scorer, gate={"threshold": 0.7, "positive": "allowed"})


def test_the_rule_and_the_cohort_speakers_round_trip_and_old_checkpoints_score_topk(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    ckpt = snorm_checkpoint(rng)
    save_voice_checkpoint(tmp_path / "gate.pt", ckpt)
    back = load_voice_checkpoint(tmp_path / "gate.pt")
    probes = clips_of(rng, people(rng, 1)[0], 5)
    assert back.scorer.rule == ScoreRule("snorm", top=2)
    np.testing.assert_allclose(back.scorer.score(probes), ckpt.scorer.score(probes), atol=1e-6)
    # a body written before the rule existed: no "rule", no "speakers"
    body = {"spec": SPEC.as_dict(), "top_k": 5, "head": None,
            "voices": {k: torch.from_numpy(v.astype(np.float32))
                       for k, v in ckpt.profile.voices.items()},
            "cohort": torch.from_numpy(ckpt.scorer.cohort)}
    old = VoiceCheckpoint.of(StoredGate(kind="voice", config=Config(recipe="voice"),
                                        classes=ckpt.classes, body=body, gate=ckpt.gate),
                             where="old.pt")
    assert old.scorer.rule.kind == "topk" and old.config.voice_score == "topk"
    np.testing.assert_allclose(old.scorer.score(probes), ckpt.profile.score(probes), atol=1e-6)


class Identity(nn.Module):
    """A stand-in speaker encoder: a window's first EMBED_DIM samples are its embedding."""

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return windows[:, :EMBED_DIM]


@pytest.mark.parametrize("kind", ["topk", "centroid", "snorm"])
def test_gate_graph_and_its_onnx_export_equal_the_scorer(kind: str) -> None:
    from audiogate.gates.voice.onnx import INPUT_NAMES, OUTPUT_NAME, _session, _to_onnx_bytes

    rng = np.random.default_rng(3)
    ckpt = snorm_checkpoint(rng)
    scorer = VoiceScorer(profile=ckpt.profile, cohort=ckpt.scorer.cohort,
                         rule=ScoreRule(kind, top=2), speakers=ckpt.scorer.speakers)
    who = people(rng, 2)
    vectors = np.concatenate([clips_of(rng, who[0], 3), ckpt.profile.voices["ann"][:2]])
    windows = np.zeros((len(vectors), WINDOW_SAMPLES), np.float32)
    windows[:, :EMBED_DIM] = vectors
    pool = np.eye(len(vectors), dtype=np.float32)
    graph = GateGraph(encoder=Identity(), scorer=scorer).eval()  # type: ignore[arg-type]
    want = scorer.score(vectors)
    with torch.no_grad():
        got = graph(torch.from_numpy(windows), torch.from_numpy(pool)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    session = _session(_to_onnx_bytes(graph))
    onnx = session.run([OUTPUT_NAME], dict(zip(INPUT_NAMES, (windows, pool), strict=True)))[0]
    np.testing.assert_allclose(onnx, want, atol=1e-5)


def synthetic_task(seed: int, *, cohort_people: int = 15, val_people: int = 2,
                   unheard_people: int = 30, per_person: int = 20) -> tuple[VoiceData,
                                                                          EmbeddedClips]:
    """Three allowed people (clips split within each), impostors split by person: the cohort,
    the validation impostors, and people never heard (returned apart)."""
    rng = np.random.default_rng(seed)
    who = people(rng, 3 + cohort_people + val_people + unheard_people, spread=0.5)
    clips: list[Clip] = []
    vectors: list[np.ndarray] = []
    parts: dict[str, list[Clip]] = {"train": [], "val": [], "test": []}
    roles = ["allowed"] * 3 + ["train"] * cohort_people + ["val"] * val_people
    for p, role in enumerate(roles):
        label = "allowed" if role == "allowed" else "not_allowed"
        for i, v in enumerate(clips_of(rng, who[p], per_person, noise=0.08)):
            clip = Clip(f"/d/{label}/p{p}/{i}.wav", int(label == "allowed"), f"p{p}")
            clips.append(clip)
            vectors.append(v)
            subset = role if role != "allowed" else ("train" if i < 12 else
                                                     "val" if i < 16 else "test")
            parts[subset].append(clip)
    embedded = EmbeddedClips(clips=clips, labels=np.array([c.label for c in clips]),
                             vectors=np.stack(vectors).astype(np.float32),
                             speech_s=np.ones(len(clips)))
    data = VoiceData(("not_allowed", "allowed"), embedded, Split(**parts),
                     SimpleNamespace(spec=SPEC))  # type: ignore[arg-type]
    unheard = np.concatenate([clips_of(rng, who[p], per_person, noise=0.08)
                              for p in range(len(roles), len(who))])
    never = EmbeddedClips(clips=[Clip(f"/u/{i}.wav", 0) for i in range(len(unheard))],
                          labels=np.zeros(len(unheard), np.int64),
                          vectors=unheard.astype(np.float32), speech_s=np.ones(len(unheard)))
    return data, never


def no_impostors(data: VoiceData) -> Impostors:
    empty = data.part("train")
    keep = np.zeros(len(empty.clips), bool)
    return Impostors("none", EmbeddedClips([], empty.labels[keep], empty.vectors[keep],
                                           empty.speech_s[keep]))


def fit(data: VoiceData, **fields: Any) -> Any:
    config = Config(recipe="voice", data="/d", group_by="folder", impostors="none", **fields)
    return build_gate(data, no_impostors(data), config)


def test_cohort_calibration_sets_the_threshold_on_every_cohort_clip_as_unheard() -> None:
    data, never = synthetic_task(0)
    cohort = fit(data, voice_calibration="cohort", operating_point="far=0.05")
    val = fit(data, voice_calibration="validation", operating_point="far=0.05")
    trials = cohort.record["threshold_trials"]
    assert trials == {"genuine": 12, "validation_impostors": 40, "impostor_voices": 0,
                      "cohort": 300}
    assert val.record["threshold_trials"]["cohort"] == 0
    assert cohort.record["score"]["kind"] == "snorm" and cohort.record["cohort_people"] == 15
    assert cohort.gate["validation"]["far"] <= 0.05
    # the threshold meets the target on people never heard, within a factor of 2; set on
    # this draw's two validation impostors alone, it lets three times the target in
    y = np.zeros(len(never.clips))
    far, _ = error_rates(y, gate_scores(cohort.scorer, never, vad=True),
                         threshold=cohort.gate["threshold"])
    assert 0.025 <= far <= 0.10
    far_val, _ = error_rates(y, gate_scores(val.scorer, never, vad=True),
                             threshold=val.gate["threshold"])
    assert far_val > 0.10


def test_snorm_falls_back_to_centroid_with_too_few_cohort_people(
        caplog: pytest.LogCaptureFixture) -> None:
    data, _ = synthetic_task(1, cohort_people=2)
    with caplog.at_level(logging.WARNING):
        built = fit(data)
    assert built.scorer.rule.kind == "centroid" and built.record["score"]["kind"] == "centroid"
    assert "needs the training not_allowed clips of at least 3 people" in caplog.text
    with pytest.raises(ConfigError, match="voice_score = topk"):
        fit(data, voice_head="logistic")
    assert fit(data, voice_head="logistic", voice_score="topk").scorer.rule.kind == "topk"
