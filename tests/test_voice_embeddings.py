"""Clip embeddings: equal to embedding the decoded waves directly, cached by content, computed
again only for changed files, the same in parallel; VAD trimming removes silence's effect."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from audiogate.data.audio_io import load_audio, write_wav
from audiogate.data.discover import Clip
from audiogate.data.synth import voice_like
from audiogate.errors import ConfigError
from audiogate.speech import embeddings
from audiogate.speech.embeddings import (
    Embedder,
    EmbeddingCache,
    EmbedSettings,
    EmbedSpec,
    embed_clips,
)
from audiogate.speech.encoder import EMBED_DIM, SAMPLE_RATE, EncoderSettings
from audiogate.speech.vad import VadSettings

from .speech import espeak, needs_espeak, speech_extent

NO_VAD = EmbedSettings(vad=None)


def write_clips(root: Path, *, n: int = 4, seed: int = 0) -> list[Clip]:
    """``n`` speech-like clips of 0.5-2.5 s at alternating rates, labelled 1, 0, 1, ..."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        sr = (16000, 22050)[i % 2]
        y = 0.5 * voice_like(rng=rng, duration=float(rng.uniform(0.5, 2.5)), sr=sr,
                             snr_db=25.0)
        path = root / f"clip{i}.wav"
        write_wav(path, y, sr=sr)
        clips.append(Clip(str(path), (i + 1) % 2))
    return clips


def direct(clips: list[Clip], settings: EmbedSettings) -> np.ndarray:
    return Embedder(settings).embed([load_audio(c.path, sr=SAMPLE_RATE) for c in clips]).vectors


def test_embed_clips_equals_embedding_the_decoded_waves(tmp_path: Path) -> None:
    clips = write_clips(tmp_path / "data")
    cache = EmbeddingCache(tmp_path / "cache", EmbedSpec.of(NO_VAD))
    got, skipped = embed_clips(clips, cache=cache, workers=1, progress=False)
    assert skipped == []
    assert [c.path for c in got.clips] == [c.path for c in clips]
    assert got.labels.tolist() == [1, 0, 1, 0]
    assert got.vectors.shape == (4, EMBED_DIM)
    np.testing.assert_allclose(got.vectors, direct(clips, NO_VAD), atol=1e-6)
    durations = [load_audio(c.path, sr=SAMPLE_RATE).size / SAMPLE_RATE for c in clips]
    np.testing.assert_allclose(got.speech_s, durations)  # VAD off: the whole clip


def test_only_the_first_max_seconds_count(tmp_path: Path) -> None:
    clips = write_clips(tmp_path / "data", n=4)
    long = max(clips, key=lambda c: load_audio(c.path, sr=SAMPLE_RATE).size)
    short = EmbedSettings(vad=None, max_seconds=0.4)
    cache = EmbeddingCache(tmp_path / "cache", EmbedSpec.of(short))
    got, _ = embed_clips([long], cache=cache, workers=1, progress=False)
    head = load_audio(long.path, sr=SAMPLE_RATE)[:round(0.4 * SAMPLE_RATE)]
    np.testing.assert_allclose(got.vectors[0], Embedder(NO_VAD).embed([head]).vectors[0],
                               atol=1e-6)
    assert got.speech_s[0] == pytest.approx(0.4)


def test_unusable_files_are_skipped_with_a_reason(tmp_path: Path) -> None:
    clips = write_clips(tmp_path / "data", n=2)
    (tmp_path / "data" / "broken.wav").write_bytes(b"RIFF....WAVEfmt junk")
    bad = [Clip(str(tmp_path / "data" / "broken.wav"), 1),
           Clip(str(tmp_path / "data" / "missing.wav"), 0)]
    cache = EmbeddingCache(tmp_path / "cache", EmbedSpec.of(NO_VAD))
    got, skipped = embed_clips([*clips, *bad], cache=cache, workers=1, progress=False)
    assert [c.path for c in got.clips] == [c.path for c in clips]
    assert [s.path for s in skipped] == [c.path for c in bad]
    assert "not a readable audio file" in skipped[0].reason
    assert "does not exist" in skipped[1].reason


def test_the_cache_is_reused_and_edited_files_are_embedded_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clips = write_clips(tmp_path / "data")
    spec = EmbedSpec.of(NO_VAD)
    first, _ = embed_clips(clips, cache=EmbeddingCache(tmp_path / "cache", spec), workers=1,
                           progress=False)
    embedded: list[str] = []
    real_chunk = embeddings._embed_chunk

    def counting(paths: list[str], settings: EmbedSettings) -> list:  # type: ignore[type-arg]
        embedded.extend(paths)
        return real_chunk(paths, settings)

    monkeypatch.setattr(embeddings, "_embed_chunk", counting)
    again, _ = embed_clips(clips, cache=EmbeddingCache(tmp_path / "cache", spec), workers=1,
                           progress=False)  # a new object reads the shards back
    assert embedded == []
    np.testing.assert_array_equal(again.vectors, first.vectors)

    rng = np.random.default_rng(9)
    write_wav(clips[1].path, 0.5 * voice_like(rng=rng, duration=1.0, sr=16000), sr=16000)
    edited, _ = embed_clips(clips, cache=EmbeddingCache(tmp_path / "cache", spec), workers=1,
                            progress=False)
    assert embedded == [clips[1].path]
    assert float(edited.vectors[1] @ first.vectors[1]) < 0.9999
    np.testing.assert_array_equal(edited.vectors[[0, 2, 3]], first.vectors[[0, 2, 3]])
    np.testing.assert_allclose(edited.vectors[1], direct([clips[1]], NO_VAD)[0], atol=1e-6)


def test_copies_share_one_entry(tmp_path: Path) -> None:
    clips = write_clips(tmp_path / "data", n=1)
    copy = tmp_path / "data" / "copy.wav"
    copy.write_bytes(Path(clips[0].path).read_bytes())
    cache = EmbeddingCache(tmp_path / "cache", EmbedSpec.of(NO_VAD))
    got, _ = embed_clips([clips[0], Clip(str(copy), 0)], cache=cache, workers=1,
                         progress=False)
    np.testing.assert_array_equal(got.vectors[0], got.vectors[1])
    index, = cache.folder.glob("shard-*.json")
    assert len(json.loads(index.read_text())["entries"]) == 1


def test_parallel_workers_give_the_same_embeddings(tmp_path: Path) -> None:
    clips = write_clips(tmp_path / "data", n=40)  # more than one chunk of files
    spec = EmbedSpec.of(NO_VAD)
    one, _ = embed_clips(clips, cache=EmbeddingCache(tmp_path, spec, temporary=True),
                         workers=1, progress=False)
    two, _ = embed_clips(clips, cache=EmbeddingCache(tmp_path, spec, temporary=True),
                         workers=2, progress=False)
    np.testing.assert_allclose(two.vectors, one.vectors, atol=1e-6)


def test_settings_and_models_name_the_namespace(tmp_path: Path) -> None:
    base = EmbedSpec.of(EmbedSettings())
    specs = [base, EmbedSpec.of(NO_VAD),
             EmbedSpec.of(EmbedSettings(encoder=EncoderSettings(partial_step=40))),
             EmbedSpec.of(EmbedSettings(vad=VadSettings(threshold=0.6))),
             EmbedSpec(base.settings, "0" * 64, base.vad_sha256)]
    names = {EmbeddingCache(tmp_path, spec).folder.name for spec in specs}
    assert len(names) == 5 and all(n.startswith("embeddings-") for n in names)
    assert EmbedSpec.from_dict(base.as_dict()) == base
    with pytest.raises(ConfigError, match="embedding version"):
        EmbedSpec.from_dict({**base.as_dict(), "version": 0})
    with pytest.raises(ConfigError, match="max_seconds"):
        EmbedSettings(max_seconds=0)


def test_a_damaged_shard_is_ignored_and_rebuilt(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    clips = write_clips(tmp_path / "data", n=2)
    spec = EmbedSpec.of(NO_VAD)
    cache = EmbeddingCache(tmp_path / "cache", spec)
    first, _ = embed_clips(clips, cache=cache, workers=1, progress=False)
    index, = cache.folder.glob("shard-*.json")
    index.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        again, skipped = embed_clips(clips, cache=EmbeddingCache(tmp_path / "cache", spec),
                                     workers=1, progress=False)
    assert f"embedding cache shard {index.with_suffix('')} is damaged" in caplog.text
    assert not index.exists()  # dropped: its clips were embedded again into a new shard
    assert skipped == []
    np.testing.assert_allclose(again.vectors, first.vectors, atol=1e-6)


def test_a_temporary_cache_leaves_nothing(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, EmbedSpec.of(NO_VAD), temporary=True)
    folder = cache.folder
    embed_clips(write_clips(tmp_path / "data", n=1), cache=cache, workers=1, progress=False)
    assert folder.is_dir()
    del cache
    assert not folder.exists()


def test_a_clip_without_speech_is_embedded_whole_with_zero_speech(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    path = tmp_path / "hiss.wav"
    write_wav(path, 0.05 * rng.standard_normal(SAMPLE_RATE).astype(np.float32), sr=SAMPLE_RATE)
    cache = EmbeddingCache(tmp_path / "cache", EmbedSpec.of(EmbedSettings()))
    got, skipped = embed_clips([Clip(str(path), 0)], cache=cache, workers=1, progress=False)
    assert skipped == []
    assert got.speech_s.tolist() == [0.0]
    np.testing.assert_allclose(got.vectors, direct([Clip(str(path), 0)], NO_VAD), atol=1e-6)


@needs_espeak
def test_vad_removes_the_effect_of_silence_around_a_word() -> None:
    """Known answer: with VAD, a word padded by long silences embeds (nearly) as the tight
    word does, and much closer to it than without VAD; the speech time is the word's."""
    rng = np.random.default_rng(5)
    word = espeak("yellow garden", voice="en+f2", sr=SAMPLE_RATE)
    first, last = speech_extent(word, sr=SAMPLE_RATE)
    tight = word[int(first * SAMPLE_RATE):int(last * SAMPLE_RATE)]
    noise = 1e-3 * rng.standard_normal(2 * SAMPLE_RATE).astype(np.float32)
    padded = np.concatenate([noise, tight, noise])
    with_vad = Embedder(EmbedSettings()).embed([tight, padded])
    without = Embedder(NO_VAD).embed([tight, padded])
    cos_vad = float(with_vad.vectors[0] @ with_vad.vectors[1])
    cos_raw = float(without.vectors[0] @ without.vectors[1])
    assert cos_vad > 0.97
    assert 1 - cos_vad < (1 - cos_raw) / 3
    assert with_vad.speech_s[1] == pytest.approx(tight.size / SAMPLE_RATE, abs=0.15)
