"""Data set discovery, class balancing and the stratified train/val/test split.

Layout: one sub-folder per class under the data root. The specification's layout,
``allowed/`` and ``not_allowed/``, maps to labels 1 and 0; any other set of folders maps to
labels in sorted name order. Files that cannot be used are never silently dropped: they are
returned as :class:`Skipped` records with a reason.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from .audio_io import AUDIO_EXTENSIONS
from .errors import DataError

SPEC_CLASSES = ("not_allowed", "allowed")
"""The specification's classes, in label order: not_allowed -> 0, allowed -> 1."""


@dataclass(frozen=True)
class Clip:
    """One labelled audio file."""

    path: str
    label: int


@dataclass(frozen=True)
class Skipped:
    """A file left out, and why."""

    path: str
    reason: str


@dataclass
class Discovery:
    """What :func:`discover` found under a data root."""

    root: str
    classes: tuple[str, ...]
    clips: list[Clip]
    skipped: list[Skipped] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Clips per class name."""
        by_label = Counter(c.label for c in self.clips)
        return {name: by_label.get(i, 0) for i, name in enumerate(self.classes)}


@dataclass(frozen=True)
class Split:
    """Disjoint train / validation / test lists of clips."""

    train: list[Clip]
    val: list[Clip]
    test: list[Clip]


def class_names(root: Path) -> tuple[str, ...]:
    """Class folder names in label order (the spec's mapping when it applies)."""
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if set(names) == set(SPEC_CLASSES):
        return SPEC_CLASSES
    if "allowed" in names and "not_allowed" not in names and len(names) == 1:
        raise DataError(f"{root}: found 'allowed/' but no 'not_allowed/' folder")
    if len(names) < 2:
        raise DataError(f"{root}: need one sub-folder per class (at least two), found "
                        f"{names or 'none'}; expected e.g. {root}/allowed and {root}/not_allowed")
    return tuple(names)


def _walk_files(folder: Path) -> Iterable[Path]:
    """All files below ``folder``; directory symlinks are not followed (no loops)."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _file_problem(path: Path) -> str | None:
    if path.name.startswith("."):
        return "hidden file"
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        return f"not an audio file extension ({path.suffix or 'none'})"
    if not path.exists():
        return "broken or looping symlink"
    return None


def discover(root: str | os.PathLike[str]) -> Discovery:
    """List every audio file under ``root/<class>/`` (recursively), labelled by class folder.

    Hidden files, other extensions and broken links are returned in ``skipped``; decoding
    problems are found later, when the files are read.
    """
    root_path = Path(root)
    classes = class_names(root_path)
    clips: list[Clip] = []
    skipped: list[Skipped] = []
    for label, name in enumerate(classes):
        for path in _walk_files(root_path / name):
            problem = _file_problem(path)
            if problem:
                skipped.append(Skipped(str(path), problem))
            else:
                clips.append(Clip(str(path), label))
    found = Discovery(str(root_path), classes, clips, skipped)
    require_all_classes(found.counts(), where=str(root_path))
    return found


def require_all_classes(counts: dict[str, int], *, where: str) -> None:
    """Raise :class:`DataError` naming every class that has no usable clip."""
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        raise DataError(f"{where}: no usable audio in class folder(s) {', '.join(empty)} "
                        f"(counts: {counts})")


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
        rest, test = train_test_split(items, test_size=test_size, stratify=labels,
                                      random_state=seed)
        train, val = train_test_split(rest, test_size=val_size / (1.0 - test_size),
                                      stratify=[c.label for c in rest], random_state=seed)
    except ValueError as exc:
        raise DataError(f"cannot make a stratified split of {len(items)} clips: {exc}") from None
    return Split(train=train, val=val, test=test)


def write_split(split: Split, path: Path, *, classes: Sequence[str]) -> None:
    """Write ``subset,path,label,class`` rows (CSV) for every clip of the split."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["subset", "path", "label", "class"])
        for subset in ("train", "val", "test"):
            for clip in getattr(split, subset):
                writer.writerow([subset, clip.path, clip.label, classes[clip.label]])


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


def write_skipped(skipped: Sequence[Skipped], path: Path) -> None:
    """Write ``path,reason`` rows (CSV) for every skipped file."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "reason"])
        writer.writerows((s.path, s.reason) for s in skipped)
