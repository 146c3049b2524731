"""Discovery, balancing, stratified split and split files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from audiogate.data.discover import Clip, discover
from audiogate.data.split import balance, class_weights, read_split, stratified_split, write_split
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
