"""Discovery, balancing, stratified split and split files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from audiogate.data.discover import Clip, discover
from audiogate.data.split import (
    balance,
    balanced_draw,
    balanced_size,
    class_weights,
    read_split,
    stratified_split,
    write_split,
)
from audiogate.errors import DataError


def _touch_wavs(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"f{i:03d}.wav").write_bytes(b"RIFF")


def test_spec_layout_labels(tmp_path: Path) -> None:
    _touch_wavs(tmp_path / "allowed", 3)
    _touch_wavs(tmp_path / "not_allowed", 2)
    found = discover(tmp_path)
    assert found.classes == ("not_allowed", "allowed")
    assert found.counts() == {"not_allowed": 2, "allowed": 3}
    assert {c.label for c in found.clips if "/allowed/" in c.path} == {1}


def test_any_class_per_folder_layout(tmp_path: Path) -> None:
    for name, n in (("dog", 2), ("cat", 2), ("bird", 1)):
        _touch_wavs(tmp_path / name / "nested", n)
    (tmp_path / "cat" / "notes.txt").write_text("x")
    (tmp_path / "cat" / ".DS_Store").write_text("x")
    found = discover(tmp_path)
    assert found.classes == ("bird", "cat", "dog")
    assert found.counts() == {"bird": 1, "cat": 2, "dog": 2}
    assert sorted(Path(s.path).name for s in found.skipped) == [".DS_Store", "notes.txt"]


def test_missing_folder_and_class(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        discover(tmp_path / "nope")
    _touch_wavs(tmp_path / "allowed", 2)
    with pytest.raises(DataError, match="not_allowed"):
        discover(tmp_path)
    (tmp_path / "not_allowed").mkdir()
    with pytest.raises(DataError, match="no usable audio in class folder"):
        discover(tmp_path)


def _clips(counts: dict[int, int]) -> list[Clip]:
    return [Clip(f"{label}/{i}.wav", label) for label, n in counts.items() for i in range(n)]


def test_downsample_balances_to_smallest_class() -> None:
    clips = _clips({0: 50, 1: 20})
    out = balance(clips, strategy="downsample", rng=np.random.default_rng(0))
    assert Counter(c.label for c in out) == {0: 20, 1: 20}
    assert len(set(out)) == 40 and set(out) <= set(clips)
    assert balance(clips, strategy="weighted", rng=np.random.default_rng(0)) == clips


def test_resample_draws_a_fresh_balanced_subset_each_epoch() -> None:
    labels = np.array([0] * 50 + [1] * 20 + [2] * 30)
    rng = np.random.default_rng(0)
    draws = [balanced_draw(labels, rng=rng) for _ in range(30)]
    assert balanced_size(labels) == 60
    for rows in draws:
        assert len(rows) == len(set(rows.tolist())) == 60  # no clip twice in an epoch
        assert np.bincount(labels[rows]).tolist() == [20, 20, 20]
    assert not np.array_equal(np.sort(draws[0]), np.sort(draws[1]))  # a new subset
    assert set(np.concatenate(draws).tolist()) == set(range(100))  # every clip, over epochs
    assert balance(_clips({0: 5, 1: 2}), strategy="resample",
                   rng=np.random.default_rng(0)) == _clips({0: 5, 1: 2})  # split keeps all


def test_class_weights_inverse_frequency() -> None:
    w = class_weights([0] * 30 + [1] * 10, n_classes=2)
    np.testing.assert_allclose(w, [40 / 60, 40 / 20])


def test_split_is_stratified_disjoint_and_seeded() -> None:
    clips = _clips({0: 60, 1: 40})
    split = stratified_split(clips, test_size=0.15, val_size=0.15, seed=3)
    parts = [split.train, split.val, split.test]
    assert sum(map(len, parts)) == 100
    assert not (set(split.train) & set(split.val) or set(split.train) & set(split.test)
                or set(split.val) & set(split.test))
    for part in parts:
        share = Counter(c.label for c in part)[0] / len(part)
        assert abs(share - 0.6) < 0.1
    assert (len(split.val), len(split.test)) == (15, 15)
    again = stratified_split(clips, test_size=0.15, val_size=0.15, seed=3)
    assert again == split
    other = stratified_split(clips, test_size=0.15, val_size=0.15, seed=4)
    assert other.test != split.test


def test_too_few_clips_is_a_clear_error() -> None:
    with pytest.raises(DataError, match=r"too few clips.*need at least 7 per class"):
        stratified_split(_clips({0: 5, 1: 30}), test_size=0.15, val_size=0.15, seed=0)


def test_split_file_round_trip(tmp_path: Path) -> None:
    split = stratified_split(_clips({0: 20, 1: 20}), test_size=0.2, val_size=0.2, seed=0)
    write_split(split, tmp_path / "split.csv", classes=("no", "yes"))
    assert read_split(tmp_path / "split.csv") == split


# ----------------------------------------------------------------- groups
def _speakers(n_speakers: int, per_speaker: int, *, seed: int = 0) -> list[Clip]:
    """Clips of ``n_speakers`` speakers, each with clips of both classes in varied numbers."""
    gen = np.random.default_rng(seed)
    clips = []
    for s in range(n_speakers):
        for i in range(per_speaker + int(gen.integers(0, 4))):
            clips.append(Clip(f"/d/{s}/{i}.wav", int(gen.integers(0, 2)), f"spk{s}"))
    return clips


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_split_keeps_each_group_on_one_side(seed: int) -> None:
    clips = _speakers(20, 10, seed=seed)
    split = stratified_split(clips, test_size=0.15, val_size=0.15, seed=seed)
    sides = {name: {c.group for c in getattr(split, name)} for name in ("train", "val", "test")}
    assert not (sides["train"] & sides["val"] or sides["train"] & sides["test"]
                or sides["val"] & sides["test"])
    assert sorted(split.train + split.val + split.test, key=lambda c: c.path) == \
        sorted(clips, key=lambda c: c.path)
    for name in ("train", "val", "test"):
        assert {c.label for c in getattr(split, name)} == {0, 1}
    # stratified as far as groups allow: each subset is near its share of the clips
    assert abs(len(split.test) / len(clips) - 0.15) < 0.06
    assert abs(len(split.val) / len(clips) - 0.15) < 0.06
    again = stratified_split(clips, test_size=0.15, val_size=0.15, seed=seed)
    assert again == split


def test_group_split_needs_three_groups_per_class() -> None:
    clips = [Clip(f"/d/{s}/{i}.wav", i % 2, f"spk{s}") for s in range(2) for i in range(20)]
    with pytest.raises(DataError, match="at least 3 groups"):
        stratified_split(clips, test_size=0.15, val_size=0.15, seed=0)


def test_group_of_folder_regex_and_none(tmp_path: Path) -> None:
    from audiogate.data.discover import group_of

    cls = tmp_path / "allowed"
    assert group_of(cls / "alice" / "x" / "a.wav", class_dir=cls, group_by="folder") == "alice"
    assert group_of(cls / "a.wav", class_dir=cls, group_by="folder") == ""
    assert group_of(cls / "bob_07.wav", class_dir=cls, group_by=r"regex:^([a-z]+)_") == "bob"
    assert group_of(cls / "bob_07.wav", class_dir=cls, group_by=r"regex:\d+") == "07"
    assert group_of(cls / "x.wav", class_dir=cls, group_by=r"regex:^([a-z]+)_") == ""
    assert group_of(cls / "alice" / "a.wav", class_dir=cls, group_by="none") == ""


@pytest.mark.parametrize("bad", ["speaker", "regex:", "regex:(unclosed"])
def test_bad_group_by_is_refused(bad: str) -> None:
    from audiogate.config import Config
    from audiogate.errors import ConfigError

    with pytest.raises(ConfigError, match="group_by"):
        Config(group_by=bad)


def test_discover_groups_by_speaker_folder(tmp_path: Path) -> None:
    for cls in ("allowed", "not_allowed"):
        for spk in ("ann", "ben"):
            _touch_wavs(tmp_path / cls / spk, 2)
    found = discover(tmp_path, group_by="folder")
    assert {c.group for c in found.clips} == {"ann", "ben"}
    assert all(f"/{c.group}/" in c.path for c in found.clips)


def test_copies_share_a_group_and_one_subset() -> None:
    from audiogate.data.split import merge_identical

    clips = [Clip(f"/d/{i}.wav", i % 2) for i in range(40)]
    keys: list[object] = list(range(40))
    keys[7] = keys[3] = keys[21] = "same bytes"         # three copies of one file
    merged = merge_identical(clips, keys)
    assert {merged[i].group for i in (3, 7, 21)} == {"/d/21.wav"}  # the smallest member
    assert len({c.group for c in merged}) == 38
    split = stratified_split(merged, test_size=0.15, val_size=0.15, seed=0)
    holding = [name for name in ("train", "val", "test")
               if any(c.path in ("/d/3.wav", "/d/7.wav", "/d/21.wav")
                      for c in getattr(split, name))]
    assert len(holding) == 1


def test_split_file_keeps_groups_and_reads_old_files(tmp_path: Path) -> None:
    clips = _speakers(12, 6)
    split = stratified_split(clips, test_size=0.2, val_size=0.2, seed=0)
    write_split(split, tmp_path / "split.csv", classes=("no", "yes"))
    assert (tmp_path / "split.csv").read_text().splitlines()[0] == \
        "subset,path,label,class,group"
    assert read_split(tmp_path / "split.csv") == split
    (tmp_path / "old.csv").write_text("subset,path,label,class\ntrain,/a.wav,1,yes\n")
    assert read_split(tmp_path / "old.csv").train == [Clip("/a.wav", 1)]
