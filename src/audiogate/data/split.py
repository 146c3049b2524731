"""Class balancing and the stratified train/val/test split, and the split file of a run."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from ..core.tables import csv_text
from ..errors import DataError
from ..files import write_text
from .discover import Clip


@dataclass(frozen=True)
class Split:
    """Disjoint train / validation / test lists of clips."""

    train: list[Clip]
    val: list[Clip]
    test: list[Clip]


def balance(clips: Sequence[Clip], *, strategy: str, rng: np.random.Generator) -> list[Clip]:
    """Down-sample every class to the smallest class's size (``strategy="downsample"``).

    Other strategies (``weighted``, ``resample``, ``none``) keep every clip; ``weighted`` is
    handled by the loss (:func:`class_weights`), ``resample`` by the trainer drawing a
    balanced subset each epoch (:func:`balanced_draw`). Order within the result is by class,
    then random.
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


def balanced_draw(labels: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """One epoch's rows for ``balance="resample"``: every class down-sampled afresh to the
    smallest class's size (without replacement within the epoch), shuffled; ``labels``
    ``[shape=(n,)]``, result ``[shape=(n_classes * smallest,)]``. Over the epochs every clip
    of a larger class is used, at a balanced set's cost per epoch."""
    labels = np.asarray(labels, np.int64)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    n_min = min(len(g) for g in groups)
    rows = np.concatenate([rng.choice(g, size=n_min, replace=False) for g in groups])
    return rng.permutation(rows)


def balanced_size(labels: np.ndarray) -> int:
    """Rows of each :func:`balanced_draw` of ``labels``."""
    counts = np.bincount(np.asarray(labels, np.int64))
    counts = counts[counts > 0]
    return int(len(counts) * counts.min()) if len(counts) else 0


def class_weights(labels: Sequence[int] | np.ndarray, *, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights ``n / (n_classes * count)``, ``[shape=(n_classes,)]``."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    return (len(labels) / (n_classes * np.maximum(counts, 1))).astype(np.float32)


def merge_identical(clips: Sequence[Clip], keys: Sequence[object]) -> list[Clip]:
    """Give clips with equal ``keys`` (e.g. the same content digest) one group, so copies of a
    file never straddle train and test. A clip's own group is its path when it has none;
    merged groups are named by their smallest member. Order is kept."""
    parent: dict[str, str] = {}

    def find(g: str) -> str:
        while parent.setdefault(g, g) != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    own = [c.group or c.path for c in clips]
    first: dict[object, str] = {}
    for group, key in zip(own, keys, strict=True):
        if key in first:
            a, b = find(first[key]), find(group)
            if a != b:
                parent[max(a, b)] = min(a, b)
        else:
            first[key] = group
    return [replace(c, group=find(g)) for c, g in zip(clips, own, strict=True)]


def stratified_split(clips: Sequence[Clip], *, test_size: float, val_size: float,
                     seed: int) -> Split:
    """Seeded split into train/val/test, stratified by class; fractions are of the whole set.

    Clips that share a ``group`` (a speaker, copies of one file) all land in one subset; the
    subsets are then stratified as far as the groups allow. Without shared groups this is
    scikit-learn's stratified ``train_test_split``, twice.
    """
    groups = Counter(c.group or c.path for c in clips)
    if max(groups.values(), default=1) > 1:
        return _group_split(clips, test_size=test_size, val_size=val_size, seed=seed)
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


def make_split(clips: Sequence[Clip], *, test_size: float, val_size: float, seed: int,
               balance_by: str) -> Split:
    """The split of a run: :func:`stratified_split` of every usable clip, then
    :func:`balance` (``balance_by``) of the training split only, so validation and test keep
    the data's own class mix."""
    split = stratified_split(clips, test_size=test_size, val_size=val_size, seed=seed)
    train = balance(split.train, strategy=balance_by, rng=np.random.default_rng(seed))
    return Split(train=train, val=split.val, test=split.test)


SUBSETS = ("test", "val", "train")


def read_split_file(path: str | Path) -> dict[str, str]:
    """A split given by the user (``split_file``): a CSV with columns ``subset`` (``train``,
    ``val`` or ``test``) and ``path``, one row per clip (a run's ``split.csv`` is one) ->
    resolved path -> subset. :class:`DataError` for a missing or malformed file."""
    out: dict[str, str] = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for line, row in enumerate(csv.DictReader(fh), start=2):
                subset = row["subset"]
                if subset not in SUBSETS:
                    raise DataError(f"split file {path}, line {line}: subset must be train, "
                                    f"val or test, got {subset!r}")
                out[str(Path(row["path"]).resolve())] = subset
    except FileNotFoundError:
        raise DataError(f"split file not found: {path}") from None
    except (OSError, KeyError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read split file {path} (columns subset,path): {exc}") from None
    if not out:
        raise DataError(f"split file {path} lists no clip")
    return out


def split_as_given(clips: Sequence[Clip], subsets: Mapping[str, str], *, balance_by: str,
                   seed: int) -> tuple[Split, list[Clip]]:
    """The split ``subsets`` (:func:`read_split_file`) gives ``clips``, with the training part
    balanced (:func:`balance`), and the clips it does not list. :class:`DataError` if a class
    has no training clip."""
    parts: dict[str, list[Clip]] = {s: [] for s in SUBSETS}
    unlisted: list[Clip] = []
    for clip in clips:
        subset = subsets.get(str(Path(clip.path).resolve()))
        (parts[subset] if subset else unlisted).append(clip)
    missing = sorted({c.label for c in clips} - {c.label for c in parts["train"]})
    if missing:
        raise DataError(f"the split file puts no clip of class label(s) {missing} in train")
    train = balance(parts["train"], strategy=balance_by, rng=np.random.default_rng(seed))
    return Split(train=train, val=parts["val"], test=parts["test"]), unlisted


def _group_split(clips: Sequence[Clip], *, test_size: float, val_size: float,
                 seed: int) -> Split:
    """Whole groups to subsets, greedily: the biggest groups first (random order among equal
    sizes), each to the subset that needs its classes most relative to its target."""
    by_group: dict[str, list[Clip]] = {}
    for clip in clips:
        by_group.setdefault(clip.group or clip.path, []).append(clip)
    n_classes = max(c.label for c in clips) + 1
    counts = {g: np.bincount([c.label for c in cs], minlength=n_classes).astype(float)
              for g, cs in by_group.items()}
    per_class_groups = np.sum([v > 0 for v in counts.values()], axis=0)
    if per_class_groups.min() < len(SUBSETS):
        raise DataError(
            f"too few groups for a group-aware split: groups per class "
            f"{dict(enumerate(per_class_groups.tolist()))}; every class needs clips in at "
            f"least 3 groups (one each for train, val and test). Use another group_by, or "
            "more speakers/folders")
    total = np.sum(list(counts.values()), axis=0)
    fractions = {"test": test_size, "val": val_size, "train": 1.0 - test_size - val_size}
    target = {s: np.maximum(f * total, 1e-9) for s, f in fractions.items()}
    current = {s: np.zeros(n_classes) for s in SUBSETS}
    assigned: dict[str, list[str]] = {s: [] for s in SUBSETS}
    names = sorted(by_group)
    order = np.random.default_rng(seed).permutation(len(names))
    for i in sorted(order, key=lambda i: -len(by_group[names[i]])):
        g = names[i]
        need = {s: float(np.sum(counts[g] * (target[s] - current[s]) / target[s]))
                for s in SUBSETS}
        best = max(SUBSETS, key=lambda s: need[s])
        assigned[best].append(g)
        current[best] += counts[g]
    _repair(assigned, counts, n_classes)
    return Split(**{s: [c for g in sorted(assigned[s]) for c in by_group[g]] for s in SUBSETS})


def _repair(assigned: dict[str, list[str]], counts: dict[str, np.ndarray],
            n_classes: int) -> None:
    """Move groups until every subset holds every class: into a subset lacking a class, the
    smallest group with that class from the subset that has the most such groups."""
    for _ in range(sum(len(v) for v in assigned.values())):
        missing = [(s, k) for s in SUBSETS for k in range(n_classes)
                   if not any(counts[g][k] > 0 for g in assigned[s])]
        if not missing:
            return
        s, k = missing[0]
        donor = max((d for d in SUBSETS if d != s),
                    key=lambda d: sum(counts[g][k] > 0 for g in assigned[d]))
        choices = [g for g in assigned[donor] if counts[g][k] > 0]
        if len(choices) < 2:
            break
        g = min(choices, key=lambda g: (counts[g].sum(), g))
        assigned[donor].remove(g)
        assigned[s].append(g)
    raise DataError("cannot make a group-aware split with every class in train, val and "
                    "test; add groups (speakers, folders) to the smaller classes")


def write_split(split: Split, path: Path, *, classes: Sequence[str]) -> None:
    """Write ``subset,path,label,class,group`` rows (CSV, atomically) for every clip of the
    split."""
    rows = [[subset, clip.path, clip.label, classes[clip.label], clip.group]
            for subset in ("train", "val", "test") for clip in getattr(split, subset)]
    write_text(path, csv_text(["subset", "path", "label", "class", "group"], rows))


def read_split(path: Path) -> Split:
    """Read a file written by :func:`write_split` (also one without the ``group`` column)."""
    parts: dict[str, list[Clip]] = {"train": [], "val": [], "test": []}
    try:
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                parts[row["subset"]].append(Clip(row["path"], int(row["label"]),
                                                 row.get("group") or ""))
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"cannot read split file {path}: {exc}") from None
    return Split(**parts)
