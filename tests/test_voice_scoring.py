"""Voice gate scoring with known answers (top-k, leaving groups out, the logistic head), its
config fields and recipe, and discovery of a data folder with only allowed/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audiogate.config import Config
from audiogate.data.discover import discover
from audiogate.errors import CheckpointError, ConfigError, DataError
from audiogate.speech.embeddings import EmbedSettings, EmbedSpec
from audiogate.speech.encoder import EMBED_DIM
from audiogate.speech.profile import VoiceProfile
from audiogate.speech.scoring import (
    LogisticHead,
    VoiceScorer,
    fit_head,
    leave_group_out_features,
    top_k_mean,
)

from .conftest import SR, sine


def unit(*weights: dict[int, float]) -> np.ndarray:
    out = np.zeros((len(weights), EMBED_DIM), np.float32)
    for row, w in enumerate(weights):
        for i, x in w.items():
            out[row, i] = x
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def spec() -> EmbedSpec:
    return EmbedSpec(EmbedSettings(), "0" * 64, None)


def test_top_k_mean_skips_excluded_entries() -> None:
    sims = np.array([[0.9, 0.1, 0.5], [-np.inf, 0.4, -np.inf], [-np.inf] * 3])
    np.testing.assert_allclose(top_k_mean(sims, k=2), [0.7, 0.4, 0.0])
    np.testing.assert_allclose(top_k_mean(sims, k=9), [0.5, 0.4, 0.0])
    assert top_k_mean(np.zeros((2, 0)), k=3).tolist() == [0.0, 0.0]


def test_leave_group_out_never_compares_a_clip_with_its_own_group() -> None:
    v = unit({0: 1}, {0: 1}, {0: 1, 1: 1}, {1: 1})  # two copies of one clip in group "a"
    feats = leave_group_out_features(vectors=v, groups=["a", "a", "b", "c"],
                                     enrolled=np.array([True, True, True, False]),
                                     cohort=np.array([False, False, False, True]), top_k=1)
    # clip 0 sees only clip 2 (its twin is in its group): cos 45 deg, not 1
    assert feats[0, 0] == pytest.approx(np.sqrt(0.5), abs=1e-6)
    assert feats[2, 0] == pytest.approx(np.sqrt(0.5), abs=1e-6)  # clips 0, 1 only
    assert feats[3, 1] == 0.0  # the only cohort clip is itself: none left
    assert feats[0, 1] == pytest.approx(0.0, abs=1e-6)


def test_scores_lie_in_0_1_and_rise_with_the_similarity(spec: EmbedSpec) -> None:
    profile = VoiceProfile(spec=spec, top_k=1).enrol("ann", unit({0: 1}))
    clips = unit(*({0: np.cos(a), 1: np.sin(a)} for a in np.linspace(0, np.pi / 2, 5)))
    plain = VoiceScorer(profile=profile, cohort=unit({1: 1}))
    scores = plain.score(clips)
    np.testing.assert_allclose(scores, np.cos(np.linspace(0, np.pi / 2, 5)), atol=1e-6)
    headed = VoiceScorer(profile=profile, cohort=unit({1: 1}),
                         head=LogisticHead(coef=(10.0, -5.0), intercept=-2.0))
    h = headed.score(clips)
    assert ((h > 0) & (h < 1)).all() and (np.diff(h) < 0).all()
    assert plain.score(np.zeros((0, EMBED_DIM))).shape == (0,)


def test_head_checks_its_coefficients_and_scorer_its_cohort(spec: EmbedSpec) -> None:
    with pytest.raises(CheckpointError, match="must be > 0"):
        LogisticHead(coef=(-1.0, 0.0), intercept=0.0)
    with pytest.raises(CheckpointError, match="finite"):
        LogisticHead(coef=(1.0, float("nan")), intercept=0.0)
    profile = VoiceProfile(spec=spec).enrol("ann", unit({0: 1}))
    with pytest.raises(CheckpointError, match="cohort"):
        VoiceScorer(profile=profile, cohort=np.zeros((0, EMBED_DIM)),
                    head=LogisticHead(coef=(1.0, 0.0), intercept=0.0))
    head = LogisticHead(coef=(3.0, -1.0), intercept=0.5)
    assert LogisticHead.from_dict(head.as_dict()) == head


def test_fit_head_weighs_similarity_up_and_impostor_similarity_down() -> None:
    rng = np.random.default_rng(0)
    allowed = np.stack([rng.uniform(0.7, 0.9, 40), rng.uniform(0.3, 0.5, 40)], axis=1)
    impostor = np.stack([rng.uniform(0.5, 0.75, 40), rng.uniform(0.6, 0.9, 40)], axis=1)
    head = fit_head(np.concatenate([allowed, impostor]), np.repeat([1, 0], 40), seed=0)
    assert head is not None and head.coef[0] > 0 and head.coef[1] < 0
    # allowed clips *less* similar to the allowed voices: no head (it would invert the gate)
    assert fit_head(np.concatenate([impostor, allowed]), np.repeat([1, 0], 40), seed=0) is None
    with pytest.raises(DataError, match="both classes"):
        fit_head(allowed, np.ones(40), seed=0)


def test_voice_fields_and_recipe() -> None:
    voice = Config.from_recipe("voice")
    assert (voice.model, voice.voice_head, voice.balance) == ("ge2e", "none", "none")
    assert voice.operating_point.startswith("far=")
    for field, value in [("voice_top_k", 0), ("voice_head", "mlp"), ("impostors", " ")]:
        with pytest.raises(ConfigError, match=field):
            Config(**{field: value})  # type: ignore[arg-type]
    assert Config(model="ge2e", impostors="/some/folder").impostors == "/some/folder"


def test_allowed_only_folder_is_a_voice_gate_data_set(tmp_path: Path) -> None:
    from audiogate.data.audio_io import write_wav

    (tmp_path / "allowed").mkdir()
    write_wav(tmp_path / "allowed" / "a.wav", sine(200, 0.5), sr=SR)
    with pytest.raises(DataError, match="voice gate"):
        discover(tmp_path)
    found = discover(tmp_path, allowed_only=True)
    assert found.classes == ("not_allowed", "allowed")
    assert found.counts() == {"not_allowed": 0, "allowed": 1}
