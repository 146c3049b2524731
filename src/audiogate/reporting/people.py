"""Per-person figures of a two-class gate, and the error rate it was set for.

A data folder may hold one sub-folder per person under each class (``allowed/carol/...``,
``not_allowed/dave/...``). For a two-class gate, :func:`people_report` breaks the verdicts
down by that sub-folder, whatever kind of gate judged them: the false-reject rate of each
person of the positive class (whom the gate keeps out) and the false-accept rate of each person
of the other class (who gets in), worst first. A gate that is right on average can still
reject one allowed person most of the time, or let one impostor in.

:func:`target_rates` reads the gate's operating point (``far=X`` or ``frr=X``), so a report
can show the rate the threshold was set for beside the one measured.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import parse_operating_point
from ..errors import ConfigError

DIRECT = "(no sub-folder)"
"""The person of the clips that lie directly in their class folder."""


def person_of(path: str, *, class_name: str, root: str | os.PathLike[str] | None) -> str | None:
    """The first sub-folder below ``path``'s class folder (``<root>/<class_name>/<person>/...``);
    :data:`DIRECT` for a file directly in it; None when ``path`` is not under it. Without a
    ``root``, the class folder is the nearest folder above the file named ``class_name``."""
    file = Path(path)
    if root is not None:
        try:
            parts = file.relative_to(Path(root, class_name)).parts
        except ValueError:
            try:
                parts = file.resolve().relative_to(Path(root, class_name).resolve()).parts
            except ValueError:
                return None
        return parts[0] if len(parts) > 1 else DIRECT
    folders = file.parts[:-1]
    for i in range(len(folders) - 1, -1, -1):
        if folders[i] == class_name:
            below = file.parts[i + 1:]
            return below[0] if len(below) > 1 else DIRECT
    return None


def people_report(paths: Sequence[str], y_true: np.ndarray, y_pred: np.ndarray, *,
                  classes: Sequence[str], positive: int,
                  root: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """Per person: clips, errors and the error rate: ``frr`` of each person of the positive
    class, ``far`` of each person of the other, each list worst first (then by name). None
    when no clip lies in a person's sub-folder (nothing to break down)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    who = [person_of(p, class_name=classes[int(t)], root=root)
           for p, t in zip(paths, y_true, strict=True)]
    if not any(w not in (None, DIRECT) for w in who):
        return None
    out: dict[str, Any] = {"positive": classes[positive], "frr": [], "far": []}
    for side, rate, wrong in (("frr", "frr", False), ("far", "far", True)):
        label = positive if side == "frr" else 1 - positive
        names = sorted({w for w, t in zip(who, y_true, strict=True) if t == label and w})
        for name in names:
            rows = np.asarray([w == name and t == label for w, t in zip(who, y_true,
                                                                        strict=True)])
            errors = int(((y_pred[rows] == positive) == wrong).sum())
            out[side].append({"person": name, "class": classes[label], "n": int(rows.sum()),
                              "errors": errors, rate: errors / int(rows.sum())})
        out[side].sort(key=lambda r: (-r[rate], r["person"]))
    return out


def target_rates(operating_point: str | None) -> dict[str, Any] | None:
    """The rate a gate's threshold was set for: ``{"rule", "far"}`` or ``{"rule", "frr"}``
    for ``far=X`` / ``frr=X``; None for another rule, a threshold set by hand, or none."""
    if not operating_point:
        return None
    try:
        kind, target = parse_operating_point(operating_point)
    except ConfigError:
        return None
    if kind not in ("far", "frr") or target is None:
        return None
    return {"rule": operating_point, kind: target}
