"""The built-in impostor voices come from the shipped embeddings: no program needed, the same
scores as embedding freshly spoken clips, and a clear refusal when the run's models or settings
are not the ones they were made with."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from bench import impostors as generator
from bench.speech_gen import SPEAKERS, generate_words

from audiogate.config import Config
from audiogate.data.discover import Clip
from audiogate.errors import ConfigError, DataError
from audiogate.gates.voice.data import embed_settings
from audiogate.speech.builtin import BUILTIN_FILE, builtin_embeddings, read_builtin, write_builtin
from audiogate.speech.embeddings import EmbeddingCache, EmbedSettings, EmbedSpec, embed_clips
from audiogate.speech.encoder import EncoderSettings
from audiogate.speech.impostors import load_impostors
from audiogate.speech.profile import VoiceProfile

from .speech import needs_espeak

VOICES = [s.name for s in SPEAKERS]


def shipped_spec(*, vad: bool = True) -> EmbedSpec:
    """The spec the file holds for VAD on or off, with a run's default ``max_clip_s``."""
    stored = next(s for s in read_builtin().specs if (s["vad_sha256"] is not None) == vad)
    spec = EmbedSpec.from_dict(stored)
    return replace(spec, settings=replace(spec.settings, max_seconds=10.0))


def test_the_shipped_file_holds_every_voice_for_vad_on_and_off() -> None:
    s = read_builtin()
    assert BUILTIN_FILE.stat().st_size < 400_000
    assert sorted(set(s.voices.tolist())) == sorted(VOICES) and len(s.names) == 320
    assert s.vectors.dtype == np.float32 and s.vectors.shape == (2, 320, 256)
    assert np.allclose(np.linalg.norm(s.vectors, axis=2), 1.0, atol=1e-5)
    assert sorted(sp["vad_sha256"] is None for sp in s.specs) == [False, True]
    assert s.seconds.min() >= 0.2 and s.seconds.max() <= 2.0


@pytest.mark.parametrize("vad", [True, False])
def test_builtin_impostors_need_no_program(monkeypatch: pytest.MonkeyPatch, vad: bool) -> None:
    monkeypatch.setenv("PATH", "")  # no espeak-ng, nor anything else
    spec = EmbedSpec.of(embed_settings(Config(model="ge2e", voice_vad=vad)))
    impostors = load_impostors("builtin", cache=EmbeddingCache("", spec, temporary=True),
                               workers=1, progress=False)
    described = impostors.describe()
    assert described == {"source": "builtin", "clips": 320, "voices": sorted(VOICES),
                         "skipped": 0}
    assert impostors.clips.vectors.dtype == np.float32
    assert (impostors.clips.labels == 0).all()


def test_the_installed_package_does_not_import_the_generator() -> None:
    code = ("import sys, audiogate.gates.voice.fit, audiogate.speech.impostors, audiogate.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'bench'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env={"PATH": ""}, cwd=Path(__file__).parent.parent / "src")
    assert done.stdout.strip() == "[]"


@needs_espeak
@pytest.mark.parametrize("vad", [True, False])
def test_builtin_scores_are_those_of_freshly_spoken_clips(tmp_path: Path, vad: bool) -> None:
    """Two voices (one recorded at 8 kHz, one at 16 kHz) spoken again and embedded as a run
    embeds files: the same embeddings, so the same gate scores."""
    voices = [s for s in SPEAKERS if s.name in ("ava", "ben")]
    spoken = generate_words(root=tmp_path, seed=generator.SEED, takes=generator.TAKES,
                            speakers=voices, workers=1)
    spec = EmbedSpec.of(EmbedSettings(vad=embed_settings(Config(model="ge2e",
                                                                voice_vad=vad)).vad))
    fresh, skipped = embed_clips([Clip(c.path, 0, c.speaker) for c in spoken],
                                 cache=EmbeddingCache("", spec, temporary=True), workers=1,
                                 progress=False)
    assert not skipped
    shipped = builtin_embeddings(spec)
    rows = {c.path.removeprefix("builtin:"): i for i, c in enumerate(shipped.clips)}
    take = [rows[f"{c.speaker}/{c.word}_{c.take:03d}"] for c in spoken]
    assert [shipped.clips[i].group for i in take] == [c.speaker for c in spoken]
    np.testing.assert_allclose(shipped.speech_s[take], fresh.speech_s, atol=1e-9)
    others = shipped.vectors[[i for i, c in enumerate(shipped.clips)
                              if c.group in ("cleo", "dan")]]
    profile = VoiceProfile(spec=spec).enrol("someone", others)
    difference = np.abs(profile.score(shipped.vectors[take]) - profile.score(fresh.vectors))
    assert difference.max() < 1e-5, difference.max()


@pytest.mark.parametrize(("change", "message"), [
    ({"encoder_sha256": "0" * 64}, "other encoder weights"),
    ({"vad_sha256": "0" * 64}, "another VAD model"),
    ({"settings": EmbedSettings(encoder=EncoderSettings(partial_step=40))}, "embedding settings"),
])
def test_other_models_or_settings_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(DataError, match=message) as raised:
        builtin_embeddings(replace(shipped_spec(), **change))  # type: ignore[arg-type]
    assert "impostors = <a folder of recordings of other people>" in str(raised.value)
    assert "python -m bench.impostors" in str(raised.value)


def test_another_embedding_version_is_refused(tmp_path: Path) -> None:
    s = read_builtin()
    path = tmp_path / "builtin_impostors.npz"
    write_builtin(path, replace(s, specs=[{**spec, "version": 99} for spec in s.specs]))
    with pytest.raises(DataError, match="embedding version 99"):
        builtin_embeddings(shipped_spec(), path=path)


def test_max_clip_s_only_matters_when_it_cuts_a_clip() -> None:
    longest = float(read_builtin().seconds.max())
    spec = shipped_spec()
    fits = replace(spec, settings=replace(spec.settings, max_seconds=longest + 0.01))
    assert len(builtin_embeddings(fits).clips) == 320
    cuts = replace(spec, settings=replace(spec.settings, max_seconds=1.0))
    with pytest.raises(ConfigError, match=r"max_clip_s = 1 s cuts \d+ of the 320") as raised:
        builtin_embeddings(cuts)
    assert f"at least {np.ceil(longest * 100) / 100:g}" in str(raised.value)


def test_a_damaged_file_is_a_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "builtin_impostors.npz"
    bad.write_bytes(BUILTIN_FILE.read_bytes()[:1000])
    with pytest.raises(DataError, match="missing or damaged"):
        builtin_embeddings(shipped_spec(), path=bad)
    with pytest.raises(DataError, match="missing or damaged"):
        builtin_embeddings(shipped_spec(), path=tmp_path / "absent.npz")
