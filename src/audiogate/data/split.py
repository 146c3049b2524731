"""Class balancing and the stratified train/val/test split, and the split file of a run."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from ..errors import DataError
from ..files import write_text
from ..reporting.tables import csv_text
from .discover import Clip


@dataclass(frozen=True)
class Split:
    """Disjoint train / validation / test lists of clips."""

    train: list[Clip]
    val: list[Clip]
    test: list[Clip]


def balance(clips: Sequence[Clip], *, strategy: str, rng: np.random.Generator) -> list[Clip]:
    """Down-sample every class to the smallest class's size (``strategy="downsample"``).

    Other strategies (``weighted``, ``none``) keep every clip; ``weighted`` is handled by the
    loss (:func:`class_weights`). Order within the result is by class, then random.
    """
    if strategy != "downsample":
        return list(clips)
    by_label: dict[int, list[Clip]] = {}
    for clip in clips:
        by_label.setdefault(clip.label, []).append(clip)
    n_min = min(len(v) for v in by_label.values())
    out: list[Clip] = []
    for label in sorted(by_label):
        group = by_label[label]
        picks = rng.choice(len(group), size=n_min, replace=False)
        out.extend(group[i] for i in sorted(picks))
    return out


def class_weights(labels: Sequence[int] | np.ndarray, *, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights ``n / (n_classes * count)``, ``[shape=(n_classes,)]``."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    return (len(labels) / (n_classes * np.maximum(counts, 1))).astype(np.float32)


def stratified_split(clips: Sequence[Clip], *, test_size: float, val_size: float,
                     seed: int) -> Split:
    """Seeded stratified split; fractions are of the whole set."""
    labels = [c.label for c in clips]
    counts = Counter(labels)
    need = max(3, int(np.ceil(1.0 / min(test_size, val_size))))  # >= 1 per class per subset
    if min(counts.values()) < need:
        raise DataError(
            f"too few clips for a stratified train/val/test split: per-class counts "
            f"{dict(sorted(counts.items()))}, need at least {need} per class "
            f"(with test_size={test_size}, val_size={val_size})")
    items = list(clips)
    try:
        n_test, n_val = (max(1, round(f * len(items))) for f in (test_size, val_size))
        rest, test = train_test_split(items, test_size=n_test, stratify=labels,
                                      random_state=seed)
        train, val = train_test_split(rest, test_size=n_val, stratify=[c.label for c in rest],
                                      random_state=seed)
    except ValueError as exc:
        raise DataError(f"cannot make a stratified split of {len(items)} clips: {exc}") from None
    return Split(train=train, val=val, test=test)


def write_split(split: Split, path: Path, *, classes: Sequence[str]) -> None:
    """Write ``subset,path,label,class`` rows (CSV, atomically) for every clip of the split."""
    rows = [[subset, clip.path, clip.label, classes[clip.label]]
            for subset in ("train", "val", "test") for clip in getattr(split, subset)]
    write_text(path, csv_text(["subset", "path", "label", "class"], rows))


def read_split(path: Path) -> Split:
    """Read a file written by :func:`write_split`."""
    parts: dict[str, list[Clip]] = {"train": [], "val": [], "test": []}
    try:
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                parts[row["subset"]].append(Clip(row["path"], int(row["label"])))
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"cannot read split file {path}: {exc}") from None
    return Split(**parts)
