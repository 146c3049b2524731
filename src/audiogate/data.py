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
from collections.abc import Sequence
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
        what = "is not a folder" if root.exists() else "not found"
        raise DataError(f"data folder {what}: {root}")
    try:
        names = sorted(p.name for p in root.iterdir()
                       if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise DataError(f"cannot list data folder {root}: {exc.strerror or exc}") from None
    if set(names) == set(SPEC_CLASSES):
        return SPEC_CLASSES
    if "allowed" in names and "not_allowed" not in names and len(names) == 1:
        raise DataError(f"{root}: found 'allowed/' but no 'not_allowed/' folder")
    if len(names) < 2:
        raise DataError(f"{root}: need one sub-folder per class (at least two), found "
                        f"{names or 'none'}; expected e.g. {root}/allowed and {root}/not_allowed")
    return tuple(names)


def _walk_files(folder: Path) -> list[tuple[Path, str | None]]:
    """Every file below ``folder`` with the reason it cannot be used (None: maybe audio).

    Links to folders are followed, except to a folder already scanned or to one that holds
    ``folder`` (a symlink loop, or a way out into the other classes), which is reported
    instead; hidden and unlistable folders are reported too.
    """
    found: list[tuple[Path, str | None]] = []

    def unlistable(exc: OSError) -> None:
        found.append((Path(exc.filename or folder),
                      f"cannot list folder ({exc.strerror or exc})"))

    top = Path(os.path.realpath(folder))
    seen = {top}
    for dirpath, dirnames, filenames in os.walk(folder, onerror=unlistable, followlinks=True):
        keep = []
        here = Path(os.path.realpath(dirpath))
        for name in sorted(dirnames):
            sub = Path(dirpath) / name
            real = Path(os.path.realpath(sub))
            if name.startswith("."):
                found.append((sub, "hidden folder (not scanned)"))
            elif real == here or real in here.parents or real in top.parents:
                found.append((sub, "symlink loop (link to a folder that contains it)"))
            elif real in seen:
                found.append((sub, "link to a folder already scanned (duplicate)"))
            else:
                seen.add(real)
                keep.append(name)
        dirnames[:] = keep
        found.extend((Path(dirpath) / n, _file_problem(Path(dirpath) / n))
                     for n in sorted(filenames))
    return found


def _file_problem(path: Path) -> str | None:
    if path.name.startswith("."):
        return "hidden file"
    if not path.exists():
        return "broken or looping symlink" if path.is_symlink() else "file vanished"
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        return f"not an audio file extension ({path.suffix or 'none'})"
    return None


def discover(root: str | os.PathLike[str]) -> Discovery:
    """List every audio file under ``root/<class>/`` (recursively), labelled by class folder.

    Hidden files and folders, other extensions, broken links and unlistable folders are
    returned in ``skipped``; decoding problems are found later, when the files are read.
    """
    root_path = Path(root)
    classes = class_names(root_path)
    clips: list[Clip] = []
    skipped: list[Skipped] = []
    for label, name in enumerate(classes):
        for path, problem in _walk_files(root_path / name):
            if problem:
                skipped.append(Skipped(str(path), problem))
            else:
                clips.append(Clip(str(path), label))
    found = Discovery(str(root_path), classes, clips, skipped)
    require_all_classes(found.counts(), where=str(root_path), skipped=skipped)
    return found


def require_all_classes(counts: dict[str, int], *, where: str,
                        skipped: Sequence[Skipped] = ()) -> None:
    """Raise :class:`DataError` naming every class that has no usable clip, with the first
    few files skipped there and why."""
    empty = [name for name, n in counts.items() if n == 0]
    if not empty:
        return
    message = (f"{where}: no usable audio in class folder(s) {', '.join(empty)} "
               f"(usable clips per class: {counts})")
    inside = [s for s in skipped
              if any(Path(where, name) in Path(s.path).parents for name in empty)]
    if inside:
        listed = "; ".join(f"{s.path}: {s.reason}" for s in inside[:5])
        more = f"; ... and {len(inside) - 5} more" if len(inside) > 5 else ""
        message += f"; skipped there: {listed}{more}"
    raise DataError(message)


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
