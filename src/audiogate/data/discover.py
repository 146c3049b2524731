"""Data set discovery: which files belong to which class, and which cannot be used.

Layout: one sub-folder per class under the data root. The specification's layout,
``allowed/`` and ``not_allowed/``, maps to labels 1 and 0; any other set of folders maps to
labels in sorted name order. Which class a two-class gate accepts is not the label order's
business: it is ``Config.positive_class`` (``allowed`` when unset), checked here. Files that
cannot be used are never silently dropped: they are returned as :class:`Skipped` records with
a reason, and a data set that cannot make a run raises :class:`UnusableData`, which carries
them (:func:`skipped_written_on_refusal` writes them to a ``skipped.csv`` before the error is
shown).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..config import check_group_by
from ..core.decision import choose_positive
from ..core.tables import csv_text
from ..errors import DataError
from ..files import write_text
from .audio_io import AUDIO_EXTENSIONS

SPEC_CLASSES = ("not_allowed", "allowed")
"""The specification's classes, in label order: not_allowed -> 0, allowed -> 1."""


@dataclass(frozen=True)
class Clip:
    """One labelled audio file. ``group`` names what must stay on one side of the split
    (e.g. a speaker); empty means the clip is a group of its own."""

    path: str
    label: int
    group: str = ""


@dataclass(frozen=True)
class Skipped:
    """A file left out, and why."""

    path: str
    reason: str


class UnusableData(DataError):
    """The data cannot make a run (a class without usable clips, too few to split);
    ``skipped`` lists every file left out, with the reason."""

    def __init__(self, message: str, *, skipped: Sequence[Skipped]) -> None:
        super().__init__(message)
        self.skipped = list(skipped)


@contextlib.contextmanager
def skipped_written_on_refusal(path: Path) -> Iterator[None]:
    """An :class:`UnusableData` raised inside first writes its files left out to ``path``
    (``skipped.csv``, even when empty), then is raised again with the path in its message."""
    try:
        yield
    except UnusableData as exc:
        try:
            write_skipped(exc.skipped, path)
            where = f"every file left out, and why: {path}"
        except OSError as err:
            where = f"could not write {path} ({err.strerror or err})"
        raise UnusableData(f"{exc}; {where}", skipped=exc.skipped) from None


@dataclass
class Discovery:
    """What :func:`discover` found under a data root."""

    root: str
    classes: tuple[str, ...]
    clips: list[Clip]
    skipped: list[Skipped] = field(default_factory=list)
    positive: str | None = None
    """The class a two-class gate accepts (:func:`~audiogate.core.decision.choose_positive`);
    None for more than two classes, or when not asked for."""

    def counts(self) -> dict[str, int]:
        """Clips per class name."""
        by_label = Counter(c.label for c in self.clips)
        return {name: by_label.get(i, 0) for i, name in enumerate(self.classes)}


def class_names(root: Path, *, allowed_only: bool = False) -> tuple[str, ...]:
    """Class folder names in label order (the spec's mapping when it applies).

    ``allowed_only``: a root holding only ``allowed/`` has the spec's two classes (a voice
    gate needs no ``not_allowed`` examples); otherwise that is an error."""
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
    if names == ["allowed"] and allowed_only:
        return SPEC_CLASSES
    if "allowed" in names and "not_allowed" not in names and len(names) == 1:
        raise DataError(f"{root}: found 'allowed/' but no 'not_allowed/' folder (a voice gate, "
                        "--recipe voice, can be built from allowed clips only)")
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


def group_of(path: Path, *, class_dir: Path, group_by: str) -> str:
    """The group of a file: ``""`` (its own) for ``none``, its first folder below
    ``class_dir`` for ``folder`` (``""`` for files directly in it), the first capture group
    (or the whole match) of ``regex:PATTERN`` in its name (``""`` if it does not match)."""
    if group_by == "folder":
        parts = path.relative_to(class_dir).parts
        return parts[0] if len(parts) > 1 else ""
    if group_by.startswith("regex:"):
        found = re.search(group_by[len("regex:"):], path.name)
        if found is None:
            return ""
        return found.group(1) if found.groups() else found.group(0)
    return ""


def discover(root: str | os.PathLike[str], *, group_by: str = "none",
             allowed_only: bool = False, positive_class: str | None = None) -> Discovery:
    """List every audio file under ``root/<class>/`` (recursively), labelled by class folder
    and grouped by ``group_by`` (:func:`group_of`). ``allowed_only``: a root with only
    ``allowed/`` is accepted, and ``not_allowed`` may be empty (see :func:`class_names`).
    ``positive_class`` (``Config.positive_class``, for data that will make a gate): the class
    the gate accepts is chosen from the class folders before any file is listed
    (:func:`~audiogate.core.decision.choose_positive`, which refuses an ambiguous two-class
    layout); None: not asked.

    Hidden files and folders, other extensions, broken links and unlistable folders are
    returned in ``skipped``; decoding problems are found later, when the files are read.
    """
    check_group_by(group_by)
    root_path = Path(root)
    classes = class_names(root_path, allowed_only=allowed_only)
    positive = None if positive_class is None else choose_positive(classes, positive_class)
    clips: list[Clip] = []
    skipped: list[Skipped] = []
    for label, name in enumerate(classes):
        if allowed_only and not (root_path / name).exists():
            continue  # a voice gate's data without not_allowed/: nothing to list there
        for path, problem in _walk_files(root_path / name):
            if problem:
                skipped.append(Skipped(str(path), problem))
            else:
                group = group_of(path, class_dir=root_path / name, group_by=group_by)
                clips.append(Clip(str(path), label, group))
    found = Discovery(str(root_path), classes, clips, skipped, positive)
    counts = found.counts()
    if allowed_only:
        counts.pop("not_allowed", None)
    require_all_classes(counts, where=str(root_path), skipped=skipped)
    return found


def require_all_classes(counts: dict[str, int], *, where: str,
                        skipped: Sequence[Skipped] = ()) -> None:
    """Raise :class:`UnusableData` naming every class that has no usable clip, with the first
    few files skipped there and why (and carrying every file of ``skipped``)."""
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
    raise UnusableData(message, skipped=skipped)


def write_skipped(skipped: Sequence[Skipped], path: Path) -> None:
    """Write ``path,reason`` rows (CSV, atomically) for every skipped file."""
    write_text(path, csv_text(["path", "reason"], [[s.path, s.reason] for s in skipped]))


def expand_inputs(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[str], list[Skipped]]:
    """Files as given, and audio files found recursively in folders (hidden ones skipped)."""
    files: list[str] = []
    skipped: list[Skipped] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for dirpath, dirnames, names in os.walk(path, followlinks=False):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(names):
                    if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                        files.append(str(Path(dirpath) / name))
        elif path.exists() or path.is_symlink():
            files.append(str(path))
        else:
            skipped.append(Skipped(str(path), "no such file or folder"))
    return files, skipped
