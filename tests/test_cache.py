"""The on-disk feature cache: exact round trip, hits without decoding, invalidation on file or
config change, interrupt safety, bounded buffering, and a second training run that decodes
nothing."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from audiogate.config import Config
from audiogate.core.runs import RunPaths
from audiogate.data import Clip, npy, store
from audiogate.data import cache as cache_mod
from audiogate.data import decode as clips_mod
from audiogate.data.audio_io import load_audio, write_wav
from audiogate.data.cache import CacheSpec, FeatureCache, quantize
from audiogate.data.decode import ClipSet, cache_clips
from audiogate.errors import DataError
from audiogate.features.frontend import fit_length, log_mel

from .conftest import SR, TINY_FLAGS, make_toy_dataset

FEATS = Config(fixed_length=32, n_fft=512).features()
SPEC = CacheSpec(features=FEATS, n_keep=FEATS.n_samples + 2 * FEATS.hop_length)


def _write_clips(folder: Path, rng: np.random.Generator, n: int = 6) -> list[Clip]:
    clips = []
    for i in range(n):
        seconds = rng.uniform(0.1, 0.6)
        y = (rng.uniform(0.01, 0.9) * rng.standard_normal(int(seconds * SR))).astype(np.float32)
        path = folder / f"clip_{i}.wav"
        write_wav(path, y, sr=SR)
        clips.append(Clip(str(path), i % 2))
    return clips


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded a file that should have come from the cache")
    monkeypatch.setattr(clips_mod, "_cache_chunk", fail)


def _load(clips: list[Clip], root: Path, spec: CacheSpec = SPEC) -> tuple[ClipSet, list]:
    return cache_clips(clips, cache=FeatureCache(root, spec), workers=1, progress=False)


def _entries(root: Path) -> int:
    return sum(len(json.loads(p.read_text())["entries"]) for p in root.glob("*/shard-*.json"))


def test_round_trip_is_exact_for_features(tmp_path: Path, rng: np.random.Generator) -> None:
    clips = _write_clips(tmp_path / "audio", rng)
    got, skipped = _load(clips, tmp_path / "cache")
    assert skipped == [] and [c.path for c in got.clips] == [c.path for c in clips]
    rows = np.arange(len(clips))
    feats, waves = got.features(rows), got.waves(rows)
    assert feats.dtype == np.float32 and waves.dtype == np.float32
    for i, clip in enumerate(clips):
        y = load_audio(clip.path, sr=SR)
        np.testing.assert_array_equal(feats[i], log_mel(y, cfg=FEATS))
        peak = float(np.abs(y).max())
        np.testing.assert_allclose(waves[i], fit_length(y, n_samples=SPEC.n_keep),
                                   atol=peak / cache_mod.INT16_FULL_SCALE, rtol=0)
        assert got.lengths[i] == min(y.size, SPEC.n_keep)
    np.testing.assert_array_equal(got.labels, [c.label for c in clips])


def test_windows_read_only_their_samples_and_equal_slices_of_the_whole(
        tmp_path: Path, rng: np.random.Generator) -> None:
    clips = _write_clips(tmp_path / "audio", rng)
    got, _ = _load(clips, tmp_path / "cache")
    rows = np.arange(len(clips))
    whole = got.waves(rows)
    span = SPEC.n_keep // 3
    starts = rng.integers(0, SPEC.n_keep + span, size=len(rows))  # some past the clip's end
    windows = got.waves(rows, starts=starts, span=span)
    assert windows.shape == (len(rows), span)
    padded = np.pad(whole, ((0, 0), (0, 2 * span)))
    for i, s in enumerate(starts.tolist()):
        np.testing.assert_array_equal(windows[i], padded[i, s:s + span])


def test_second_run_reads_everything_from_the_cache(tmp_path: Path, rng: np.random.Generator,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    clips = _write_clips(tmp_path / "audio", rng)
    first, _ = _load(clips, tmp_path / "cache")
    _no_decoding(monkeypatch)
    second, skipped = _load(clips, tmp_path / "cache")
    rows = np.arange(len(clips))
    assert skipped == []
    np.testing.assert_array_equal(first.features(rows), second.features(rows))
    np.testing.assert_array_equal(first.waves(rows), second.waves(rows))


def test_an_edited_file_is_decoded_again(tmp_path: Path, rng: np.random.Generator) -> None:
    clips = _write_clips(tmp_path / "audio", rng)
    _load(clips, tmp_path / "cache")
    edited = 0.5 * np.sin(np.arange(SR // 2) * 0.3).astype(np.float32)
    write_wav(clips[2].path, edited, sr=SR)
    stamp = time.time() + 10
    os.utime(clips[2].path, (stamp, stamp))
    got, _ = _load(clips, tmp_path / "cache")
    now = log_mel(load_audio(clips[2].path, sr=SR), cfg=FEATS)
    np.testing.assert_array_equal(got.features(np.array([2]))[0], now)
    assert _entries(tmp_path / "cache") == len(clips) + 1


def test_a_touched_but_unchanged_file_is_hashed_not_stored_again(
        tmp_path: Path, rng: np.random.Generator) -> None:
    clips = _write_clips(tmp_path / "audio", rng)
    _load(clips, tmp_path / "cache")
    stamp = time.time() + 10
    os.utime(clips[0].path, (stamp, stamp))
    copy = tmp_path / "audio" / "copy.wav"
    copy.write_bytes(Path(clips[1].path).read_bytes())
    got, skipped = _load([*clips, Clip(str(copy), 1)], tmp_path / "cache")
    assert skipped == [] and len(got) == len(clips) + 1
    assert _entries(tmp_path / "cache") == len(clips)  # same bytes, same entry
    np.testing.assert_array_equal(got.refs[1], got.refs[-1])


def test_a_new_feature_config_is_a_new_namespace(tmp_path: Path,
                                                 rng: np.random.Generator) -> None:
    clips = _write_clips(tmp_path / "audio", rng)
    _load(clips, tmp_path / "cache")
    other = CacheSpec(features=dataclasses.replace(FEATS, n_mels=32), n_keep=0)
    got, _ = _load(clips, tmp_path / "cache", other)
    assert got.features(np.arange(2)).shape == (2, 32, FEATS.fixed_length)
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 2
    with pytest.raises(DataError, match="features only"):
        got.waves(np.arange(2))


def test_unusable_files_are_skipped_and_decode_failures_remembered(
        tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    clips = _write_clips(tmp_path / "audio", rng, n=2)
    corrupt = tmp_path / "audio" / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    missing = str(tmp_path / "audio" / "missing.wav")
    pipe = tmp_path / "audio" / "pipe.wav"
    os.mkfifo(pipe)  # reading it would block: must be rejected, not hashed
    todo = [*clips, Clip(str(corrupt), 0), Clip(missing, 1), Clip(str(pipe), 0)]
    got, skipped = _load(todo, tmp_path / "cache")
    assert len(got) == 2 and [s.path for s in skipped] == [str(corrupt), missing, str(pipe)]
    _no_decoding(monkeypatch)
    with pytest.raises(AssertionError, match="decoded"):
        _load(todo, tmp_path / "cache")  # the missing file is tried again ...
    _, skipped = _load(todo[:3], tmp_path / "cache")  # ... the corrupt one is not
    assert [s.path for s in skipped] == [str(corrupt)]


def test_partial_writes_are_invisible_and_stale_temporaries_removed(
        tmp_path: Path, rng: np.random.Generator) -> None:
    clips = _write_clips(tmp_path / "audio", rng)
    _load(clips, tmp_path / "cache")
    folder = next(p for p in (tmp_path / "cache").iterdir() if p.is_dir())
    index = next(folder.glob("shard-*.json"))
    (folder / "shard-0-orphan.feats.npy").write_bytes(b"half a shard")  # killed before index
    (folder / "shard-1-broken.json").write_text("{not json")  # damaged index
    stale = folder / "shard-2.feats.npy.abc.tmp"
    stale.write_bytes(b"x")
    old = time.time() - 2 * store.STALE_TMP_S
    os.utime(stale, (old, old))
    fresh = FeatureCache(tmp_path / "cache", SPEC)
    assert not stale.exists()
    key = store.fast_key(clips[0].path)
    assert key is not None and fresh.source(key) is not None
    index.unlink()  # a shard without its index does not exist
    assert FeatureCache(tmp_path / "cache", SPEC).source(key) is None


def test_buffering_is_bounded_by_shard_rows(tmp_path: Path, rng: np.random.Generator,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_mod, "SHARD_ROWS", 2)
    clips = _write_clips(tmp_path / "audio", rng, n=7)
    got, _ = _load(clips, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*/shard-*.json"))) == 4
    rows = np.array([6, 0, 3, 5])  # across shards, out of order
    for row, feats in zip(rows, got.features(rows), strict=True):
        np.testing.assert_array_equal(feats, log_mel(load_audio(clips[row].path, sr=SR),
                                                     cfg=FEATS))


def test_feature_matrix_is_a_reused_memory_map(tmp_path: Path,
                                               rng: np.random.Generator) -> None:
    clips = _write_clips(tmp_path / "audio", rng)
    got, _ = _load(clips, tmp_path / "cache")
    part = got.subset([clips[4], clips[1]])
    matrix = part.feature_matrix()
    assert isinstance(matrix, np.memmap)
    np.testing.assert_array_equal(matrix, got.features(np.array([4, 1])))
    again = part.feature_matrix()
    assert again.filename == matrix.filename
    assert len(list((tmp_path / "cache").glob("*/views/*.npy"))) == 1


def test_temporary_cache_leaves_nothing(tmp_path: Path, rng: np.random.Generator) -> None:
    clips = _write_clips(tmp_path / "audio", rng, n=2)
    cache = FeatureCache("unused", SPEC, temporary=True)
    folder = cache.root
    got, _ = cache_clips(clips, cache=cache, workers=1, progress=False)
    assert got.features(np.arange(2)).shape == (2, FEATS.n_mels, FEATS.fixed_length)
    del got, cache
    gc.collect()
    assert not folder.exists()


@pytest.mark.parametrize("peak", [0.0, 1e-4, 0.7, 3e4])
def test_quantisation_error_is_relative_to_the_clip_peak(peak: float,
                                                         rng: np.random.Generator) -> None:
    y = (rng.uniform(-1, 1, 1000) * peak).astype(np.float32)
    q, scale = quantize(y)
    assert q.dtype == np.int16
    np.testing.assert_allclose(q * scale, y, atol=peak / cache_mod.INT16_FULL_SCALE + 1e-12)


def test_unwritable_cache_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match="--no-cache"):
        FeatureCache(blocker / "cache", SPEC)


def _config(data: Path, runs: Path, **changes: object) -> Config:
    flags = dict(zip(TINY_FLAGS[::2], TINY_FLAGS[1::2], strict=True))
    values = {k.lstrip("-").replace("-", "_"): int(v) for k, v in flags.items()}
    return Config(data=str(data), runs_dir=str(runs), max_epochs=1, **values,
                  **changes)  # type: ignore[arg-type]


def test_a_second_training_run_decodes_nothing(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from audiogate.gates import train

    data = make_toy_dataset(tmp_path / "data", n_per_class=12, seconds=0.4)
    first = train(_config(data, tmp_path / "runs"), progress=False)
    assert (tmp_path / "runs" / ".cache").is_dir()
    _no_decoding(monkeypatch)
    second = train(_config(data, tmp_path / "runs"), progress=False)
    assert second.epochs_done == first.epochs_done == 1
    assert second.best_val_f1 == first.best_val_f1


def test_no_cache_keeps_nothing_on_disk(tmp_path: Path) -> None:
    from audiogate.gates import train

    data = make_toy_dataset(tmp_path / "data", n_per_class=12, seconds=0.4)
    train(_config(data, tmp_path / "runs", cache=False, augment=False), progress=False)
    assert not (tmp_path / "runs" / ".cache").exists()


def test_a_truncated_shard_is_a_clear_error(tmp_path: Path, rng: np.random.Generator) -> None:
    clips = _write_clips(tmp_path / "audio", rng)
    got, _ = _load(clips, tmp_path / "cache")
    feats = next((tmp_path / "cache").glob("*/shard-*.feats.npy"))
    feats.write_bytes(feats.read_bytes()[:-100])
    with pytest.raises(DataError, match="was truncated after it was checked; run again"):
        got.features(np.array([len(clips) - 1]))


# --------------------------------------- damaged and edited caches (issue 22, items 7 and 8)
def _truth(clips: list[Clip]) -> np.ndarray:
    return np.stack([log_mel(load_audio(c.path, sr=SR), cfg=FEATS) for c in clips])


def _decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the cache sends to be decoded from now on."""
    decoded: list[str] = []
    real = clips_mod._cache_chunk

    def counting(paths: list[str], spec: CacheSpec) -> list:
        decoded.extend(paths)
        return real(paths, spec)
    monkeypatch.setattr(clips_mod, "_cache_chunk", counting)
    return decoded


def _shard(root: Path, column: str = "") -> Path:
    (found,) = root.glob(f"*/shard-*.{column}.npy" if column else "*/shard-*.json")
    return found


def _zero_data(path: Path) -> None:
    """Zero the array of an .npy file at the same size (its header kept)."""
    with open(path, "rb") as fh:
        start = npy._header(fh)[2]
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(start)
        fh.write(bytes(size - start))


def _permute_digests(index: Path) -> None:
    """Rotate the digests of a shard's entries by one: still valid JSON, every clip mapped to
    another clip's arrays."""
    meta = json.loads(index.read_text())
    digests = [e[0] for e in meta["entries"]]
    for entry, digest in zip(meta["entries"], digests[1:] + digests[:1], strict=True):
        entry[0] = digest
    index.write_text(json.dumps(meta))


DAMAGE = {
    "truncated feats": lambda root: _cut(_shard(root, "feats")),
    "truncated waves": lambda root: _cut(_shard(root, "waves")),
    "zeroed feats": lambda root: _zero_data(_shard(root, "feats")),
    "zeroed waves": lambda root: _zero_data(_shard(root, "waves")),
    "permuted digests": lambda root: _permute_digests(_shard(root)),
}


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_or_edited_shard_is_dropped_and_decoded_again(
        tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, damage: str) -> None:
    """A truncated shard stopped training ('delete it to rebuild'); a shard whose digests were
    permuted, or whose arrays were zeroed at the same size, trained on the wrong audio without
    a word. Now each is found, dropped with a warning and its clips decoded again."""
    clips = _write_clips(tmp_path / "audio", rng)
    _load(clips, tmp_path / "cache")
    index = _shard(tmp_path / "cache")
    DAMAGE[damage](tmp_path / "cache")
    decoded = _decodes(monkeypatch)
    with caplog.at_level("WARNING", logger="audiogate.data.store"):
        got, skipped = _load(clips, tmp_path / "cache")
    assert skipped == [] and sorted(decoded) == sorted(c.path for c in clips)
    assert f"shard {index.with_suffix('')} is damaged" in caplog.text
    assert "dropped, its clips will be decoded again" in caplog.text
    assert not index.exists() and _shard(tmp_path / "cache") != index
    rows = np.arange(len(clips))
    np.testing.assert_array_equal(got.features(rows), _truth(clips))
    peaks = np.array([np.abs(load_audio(c.path, sr=SR)).max() for c in clips])
    assert np.all(np.abs(got.waves(rows)).max(axis=1) > 0.99 * peaks)
    decoded.clear()
    _load(clips, tmp_path / "cache")  # mended: the next run decodes nothing
    assert decoded == []


@pytest.mark.parametrize("damage", ["truncated", "zeroed"])
def test_a_damaged_view_is_computed_again(tmp_path: Path, rng: np.random.Generator,
                                          caplog: pytest.LogCaptureFixture,
                                          damage: str) -> None:
    """A truncated view gave a raw traceback ('mmap length is greater than file size'); a
    view zeroed at the same size was used as it was."""
    clips = _write_clips(tmp_path / "audio", rng)
    got, _ = _load(clips, tmp_path / "cache")
    part = got.subset(clips[1:4])
    part.feature_matrix()
    (view,) = (tmp_path / "cache").glob("*/views/*.npy")
    (_cut if damage == "truncated" else _zero_data)(view)
    again, _ = _load(clips, tmp_path / "cache")  # a new run: a new cache object
    with caplog.at_level("WARNING", logger="audiogate.data.cache"):
        matrix = again.subset(clips[1:4]).feature_matrix()
    assert f"view {view} is damaged" in caplog.text and "computing it again" in caplog.text
    np.testing.assert_array_equal(matrix, _truth(clips[1:4]))


def test_a_read_only_cache_skips_a_damaged_shard_and_deletes_nothing(
        tmp_path: Path, rng: np.random.Generator) -> None:
    clips = _write_clips(tmp_path / "audio", rng)
    _load(clips, tmp_path / "cache")
    files_before = sorted((tmp_path / "cache").rglob("*"))
    _cut(_shard(tmp_path / "cache", "feats"))
    cache = FeatureCache(tmp_path / "cache", SPEC, read_only=True)
    with pytest.raises(DataError, match="6 clip\\(s\\) are not in the feature cache"):
        cache_clips(clips, cache=cache, workers=1, progress=False)
    assert sorted((tmp_path / "cache").rglob("*")) == files_before


def test_shards_and_views_written_before_checks_still_work(
        tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    clips = _write_clips(tmp_path / "audio", rng)
    got, _ = _load(clips, tmp_path / "cache")
    got.feature_matrix()
    index = _shard(tmp_path / "cache")
    meta = json.loads(index.read_text())
    del meta["check"]
    index.write_text(json.dumps(meta))
    for check in (tmp_path / "cache").glob("*/views/*.json"):
        check.unlink()
    decoded = _decodes(monkeypatch)
    again, _ = _load(clips, tmp_path / "cache")
    assert decoded == []
    np.testing.assert_array_equal(again.feature_matrix(), _truth(clips))
    _cut(_shard(tmp_path / "cache", "waves"))  # their headers still tell a truncation
    _load(clips, tmp_path / "cache")
    assert sorted(decoded) == sorted(c.path for c in clips)


def test_a_run_on_a_damaged_cache_trains_as_on_a_sound_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every view truncated (a raw 'mmap length is greater than file size' traceback), then
    every shard's features zeroed: each next run rebuilds them and learns what the first
    learned."""
    from audiogate.gates import train

    monkeypatch.setattr(cache_mod, "SHARD_ROWS", 8)
    data = make_toy_dataset(tmp_path / "data", n_per_class=12, seconds=0.4)
    first = train(_config(data, tmp_path / "runs", name="first"), progress=False)
    def learned(run: RunPaths) -> list[dict[str, object]]:  # every figure but the time taken
        epochs = json.loads(run.metrics.read_text())["epochs"]
        return [{k: v for k, v in e.items() if k != "seconds"} for e in epochs]

    epochs = learned(first.run)
    cache = tmp_path / "runs" / ".cache"
    for damage, files, name in ((_cut, "views/*.npy", "second"),
                                (_zero_data, "shard-*.feats.npy", "third")):
        damaged = list(cache.glob(f"*/{files}"))
        assert len(damaged) > 1
        for path in damaged:
            damage(path)
        caplog.clear()
        with caplog.at_level("WARNING"):
            again = train(_config(data, tmp_path / "runs", name=name), progress=False)
        assert caplog.text.count("is damaged") == len(damaged)
        assert learned(again.run) == epochs
