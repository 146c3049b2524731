"""The voice profile: top-k scoring with known answers, enrol/remove, nearest voice, and safe,
atomic, self-describing files."""

from __future__ import annotations

import errno
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from audiogate import files
from audiogate.errors import CheckpointError, ConfigError, DataError
from audiogate.files import DiskFullError
from audiogate.reporting.metrics import choose_threshold, error_rates
from audiogate.speech import profile as gate
from audiogate.speech.embeddings import EmbedSettings, EmbedSpec
from audiogate.speech.encoder import EMBED_DIM
from audiogate.speech.profile import VoiceProfile


@pytest.fixture(scope="module")
def spec() -> EmbedSpec:
    return EmbedSpec.of(EmbedSettings())


def basis(*indices: int) -> np.ndarray:
    out = np.zeros((len(indices), EMBED_DIM), np.float32)
    out[np.arange(len(indices)), indices] = 1.0
    return out


def mix(weights: dict[int, float]) -> np.ndarray:
    v = np.zeros(EMBED_DIM, np.float32)
    for i, w in weights.items():
        v[i] = w
    return v


def test_score_is_the_mean_of_the_top_k_similarities(spec: EmbedSpec) -> None:
    profile = VoiceProfile(spec=spec).enrol("ann", basis(0, 1)).enrol("bob", basis(2))
    clip = mix({0: 0.6, 1: 0.8})  # similarities 0.6, 0.8, 0.0
    for k, want in [(1, 0.8), (2, 0.7), (3, 1.4 / 3), (10, 1.4 / 3)]:
        scored = VoiceProfile(spec=spec, voices=profile.voices, top_k=k).score(clip)
        assert scored.shape == (1,)
        assert scored[0] == pytest.approx(want, abs=1e-6)
    # not unit length: only the direction counts; zero (no voice) scores 0
    scores = VoiceProfile(spec=spec, voices=profile.voices, top_k=1).score(
        np.stack([3 * mix({2: 1.0}), np.zeros(EMBED_DIM, np.float32)]))
    np.testing.assert_allclose(scores, [1.0, 0.0], atol=1e-6)
    assert profile.nearest(np.stack([mix({0: 0.6, 1: 0.8}), mix({2: 0.9, 0: 0.1})])) == \
        ["ann", "bob"]


def test_enrol_remove_and_replace_return_new_profiles(spec: EmbedSpec) -> None:
    empty = VoiceProfile(spec=spec)
    one = empty.enrol("ann", basis(0))
    two = one.enrol("bob", basis(1, 2))
    assert empty.names == [] and one.names == ["ann"] and two.names == ["ann", "bob"]
    assert two.remove("ann").names == ["bob"]
    with pytest.raises(ConfigError, match="already enrolled"):
        two.enrol("bob", basis(3))
    replaced = two.enrol("bob", basis(3), replace_existing=True)
    assert replaced.score(mix({3: 1.0}))[0] == pytest.approx(1 / 2)  # top-5 of 2 vectors
    with pytest.raises(ConfigError, match="no voice named 'eve'"):
        two.remove("eve")
    with pytest.raises(DataError, match="no voice is enrolled"):
        empty.score(mix({0: 1.0}))


@pytest.mark.parametrize(("vectors", "match"), [
    (np.zeros((0, EMBED_DIM)), "no enrolment clip"),
    (np.zeros((2, 3)), "shape"),
    (np.full((1, EMBED_DIM), np.nan), "NaN"),
    (np.zeros((1, EMBED_DIM)), "not unit length"),
    (2 * basis(0), "not unit length"),
])
def test_bad_enrolment_vectors_are_refused(spec: EmbedSpec, vectors: np.ndarray,
                                           match: str) -> None:
    with pytest.raises(DataError, match=match):
        VoiceProfile(spec=spec).enrol("ann", vectors)


@pytest.mark.parametrize("name", ["", "   ", "a\nb", "x" * 101])
def test_bad_names_are_refused(spec: EmbedSpec, name: str) -> None:
    with pytest.raises(ConfigError, match="voice name"):
        VoiceProfile(spec=spec).enrol(name, basis(0))


@pytest.mark.parametrize("k", [0, -1])
def test_bad_top_k_is_refused(spec: EmbedSpec, k: int) -> None:
    with pytest.raises(ConfigError, match="top_k"):
        VoiceProfile(spec=spec, top_k=k)


def test_save_and_load_round_trip(spec: EmbedSpec, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3, EMBED_DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    profile = VoiceProfile(spec=spec, top_k=2).enrol("ann", vectors).enrol("bob", basis(7))
    profile.save(tmp_path / "profile.pt")
    back = VoiceProfile.load(tmp_path / "profile.pt")
    assert back.names == ["ann", "bob"] and back.top_k == 2 and back.spec == spec
    np.testing.assert_array_equal(back.voices["ann"], profile.voices["ann"])
    probe = rng.standard_normal((4, EMBED_DIM)).astype(np.float32)
    np.testing.assert_array_equal(back.score(probe), profile.score(probe))
    raw = torch.load(tmp_path / "profile.pt", weights_only=True)  # plain data and tensors
    assert raw["format"] == gate.FORMAT
    back.require_installed_models()


def test_a_profile_of_other_models_is_refused(spec: EmbedSpec) -> None:
    other = EmbedSpec(spec.settings, "0" * 64, spec.vad_sha256)
    with pytest.raises(CheckpointError, match="enrol its voices again"):
        VoiceProfile(spec=other).require_installed_models()


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch PWNED",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_unsafe_or_foreign_files_are_refused(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.save({"format": gate.FORMAT, "voices": _Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="unsafe"):
        VoiceProfile.load(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED").exists()
    with open(tmp_path / "raw.pkl", "wb") as fh:
        pickle.dump(_Exploit(), fh)
    with pytest.raises(CheckpointError):
        VoiceProfile.load(tmp_path / "raw.pkl")
    assert not (tmp_path / "PWNED").exists()
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an audiogate voice profile"):
        VoiceProfile.load(tmp_path / "other.pt")
    torch.save({"format": gate.FORMAT, "version": 99}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        VoiceProfile.load(tmp_path / "future.pt")
    torch.save({"format": gate.FORMAT, "version": gate.VERSION}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="incomplete"):
        VoiceProfile.load(tmp_path / "partial.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="corrupt"):
        VoiceProfile.load(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="not found"):
        VoiceProfile.load(tmp_path / "missing.pt")


def test_a_failed_save_keeps_the_old_file(spec: EmbedSpec, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "profile.pt"
    VoiceProfile(spec=spec).enrol("ann", basis(0)).save(path)
    before = path.read_bytes()

    class FullDisk(io.FileIO):
        def write(self, data: Any) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_open(name: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        return FullDisk(name, "wb") if mode == "wb" else open(name, mode, *args, **kwargs)

    monkeypatch.setattr(files, "open", full_open, raising=False)
    profile = VoiceProfile(spec=spec).enrol("bob", basis(1))
    buffer = io.BytesIO()
    torch.save({"format": gate.FORMAT, "version": gate.VERSION, "top_k": profile.top_k,
                "spec": profile.spec.as_dict(),
                "voices": {k: torch.from_numpy(v) for k, v in profile.voices.items()}}, buffer)
    needed = files.human_bytes(len(buffer.getvalue()))  # the profile is serialised whole first
    with pytest.raises(DiskFullError, match=rf"^disk full: cannot write .*profile\.pt: it "
                                            rf"needs {needed}, .* free on ") as failed:
        profile.save(path)
    assert "\n" not in str(failed.value) and failed.value.filename == str(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["profile.pt"]


def test_scores_feed_the_operating_point_rules(spec: EmbedSpec) -> None:
    """Allowed clips near an enrolled voice score above impostors far from it, and the
    threshold for FAR 0 chosen on these scores accepts every allowed clip."""
    rng = np.random.default_rng(1)
    centre = mix({0: 1.0})

    def around(direction: np.ndarray, n: int, spread: float) -> np.ndarray:
        v = direction + spread * rng.standard_normal((n, EMBED_DIM)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    profile = VoiceProfile(spec=spec).enrol("ann", around(centre, 10, 0.03))
    allowed, impostors = around(centre, 20, 0.03), around(mix({1: 1.0}), 20, 0.03)
    labels = np.r_[np.ones(20), np.zeros(20)]
    scores = profile.score(np.concatenate([allowed, impostors]))
    threshold = choose_threshold(labels, scores, rule="far=0")
    assert error_rates(labels, scores, threshold=threshold) == (0.0, 0.0)
