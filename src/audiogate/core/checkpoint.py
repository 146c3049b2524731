"""One checkpoint format for every kind of gate: a self-describing envelope, written
atomically and read safely.

::

    format, version   "audiogate.checkpoint", 3
    kind              the gate kind whose code reads ``body`` ("network", "voice", ...)
    config            the run's Config, as a dict
    classes           class names in label order
    epoch             the training epoch it holds (None: a gate fitted without epochs)
    metrics           that epoch's record, or what the fit measured
    gate              the operating point: positive class, threshold, rule, validation figures
    run_id            the run that wrote it
    history           changes made after training (enrolments), oldest first
    body              what the kind needs: a network's spec, weights and training state, a
                      voice gate's enrolled voices, cohort and head
    sha256            the SHA-256 of every tensor of ``body`` (dtype, shape and bytes), by
                      its path (``weights.fc.bias``): checked on every read, so a changed
                      weight is refused by name instead of judging with it

Files are written through :func:`audiogate.files.atomic_write` (a crash, ``kill -9`` or a
full disk never leaves half a file) and read with ``torch.load(weights_only=True)``, which
refuses anything but tensors and plain data: a checkpoint cannot run code. Files of audiogate
0.1 and 0.2 still load: network checkpoints (versions 1 and 2, which had no kind) and voice
gate checkpoints (format ``audiogate.voice-checkpoint``, version 1); so do version 3 files
written before ``sha256`` existed, unchecked (a debug log line says so).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..errors import AudiogateError, CheckpointError
from ..files import write_bytes

log = logging.getLogger(__name__)

FORMAT = "audiogate.checkpoint"
VERSION = 3
LEGACY_NETWORK_VERSIONS = (1, 2)
"""Network checkpoints of audiogate 0.1 (version 1: weights under ``model``) and 0.2."""
LEGACY_VOICE_FORMAT = "audiogate.voice-checkpoint"
"""Voice gate checkpoints of audiogate 0.2 (version 1)."""
_ENVELOPE = ("format", "version", "kind", "config", "classes", "epoch", "metrics", "gate",
             "run_id", "history")


@dataclass
class StoredGate:
    """A checkpoint as read from disk: the envelope's fields, and ``body`` for the kind."""

    kind: str
    config: Config
    classes: tuple[str, ...]
    body: dict[str, Any]
    epoch: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] | None = None
    """For a two-class gate whose operating point was chosen: ``positive`` (class name),
    ``threshold`` on P(positive), ``operating_point`` (the rule) and ``validation`` (its
    FAR/FRR/EER/AUC on the validation split)."""
    run_id: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def threshold(self) -> float | None:
        """The gate's stored threshold on P(positive) (None: argmax)."""
        return None if self.gate is None else float(self.gate["threshold"])


def save_gate(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
              stored: StoredGate) -> None:
    """Write ``stored`` atomically (plain tensors and data only) to ``path``, or to each of
    several paths (serialised once)."""
    payload: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "kind": stored.kind,
        "config": stored.config.to_dict(), "classes": list(stored.classes),
        "epoch": stored.epoch, "metrics": dict(stored.metrics), "gate": stored.gate,
        "run_id": stored.run_id, "history": list(stored.history), "body": stored.body,
        "sha256": tensor_digests(stored.body),
    }
    write_payload(path, payload)


def write_payload(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                  payload: dict[str, Any]) -> None:
    """``torch.save`` ``payload`` atomically to ``path`` or to each of several paths,
    serialised once and in memory first: a full disk then fails one plain write whose size is
    known, and says so (torch's own writer hides the ``OSError``)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    for target in [path] if isinstance(path, str | os.PathLike) else path:
        write_bytes(Path(target), buffer.getvalue())


def read_gate(path: str | os.PathLike[str]) -> StoredGate:
    """Read any audiogate checkpoint safely (see the module docstring); raise
    :class:`CheckpointError` for a missing, corrupt, unsafe, foreign or incomplete file."""
    path = Path(path)
    payload = safe_load(path)
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: not an audiogate checkpoint (a bare state_dict or "
                              "another tool's file)")
    fmt, version = payload.get("format"), payload.get("version")
    if fmt == FORMAT and version == VERSION:
        envelope = payload
        check_tensors(payload.get("body"), payload.get("sha256"), where=str(path))
    elif fmt == FORMAT and version in LEGACY_NETWORK_VERSIONS:
        envelope = _legacy(payload, kind="network", body=("model", "weights", "train_state"))
    elif fmt == LEGACY_VOICE_FORMAT and version == 1:
        envelope = _legacy(payload, kind="voice",
                           body=("spec", "top_k", "voices", "cohort", "head"))
        envelope["epoch"] = None  # 0.2 recorded a made-up epoch 1: no epoch was trained
    elif fmt in (FORMAT, LEGACY_VOICE_FORMAT):
        raise CheckpointError(f"{path}: checkpoint version {version} is not supported (this "
                              f"audiogate reads version {VERSION}, and the versions "
                              "audiogate 0.1 and 0.2 wrote); upgrade audiogate")
    else:
        raise CheckpointError(f"{path}: not an audiogate checkpoint (a bare state_dict or "
                              "another tool's file)")
    try:
        stored = envelope["config"]
        if "pad" not in stored:  # written before the field existed: its front end padded
            stored = {**stored, "pad": "silence"}  # short clips with silence
        epoch = envelope.get("epoch")
        return StoredGate(kind=str(envelope["kind"]),
                          config=Config.from_dict(stored, source=f"{path} config"),
                          classes=tuple(str(c) for c in envelope["classes"]),
                          body=dict(envelope["body"]),
                          epoch=None if epoch is None else int(epoch),
                          metrics=dict(envelope.get("metrics") or {}),
                          gate=envelope.get("gate"), run_id=envelope.get("run_id"),
                          history=list(envelope.get("history") or []))
    except (KeyError, TypeError, ValueError, AudiogateError) as exc:
        raise CheckpointError(f"{path}: incomplete checkpoint ({exc})") from None


def _legacy(payload: dict[str, Any], *, kind: str, body: tuple[str, ...]) -> dict[str, Any]:
    """A 0.1/0.2 payload as an envelope: its shared fields kept, its own under ``body``."""
    out = {k: payload.get(k) for k in _ENVELOPE}
    out["kind"] = kind
    out["body"] = {**{k: payload[k] for k in body if k in payload},
                   "version": payload["version"]}
    return out


def tensor_digests(body: Any) -> dict[str, str]:
    """The SHA-256 of every tensor in ``body`` (dicts and lists walked), by its path: keys and
    list positions joined by dots (``weights.fc.bias``). Each covers the tensor's dtype, shape
    and bytes."""
    found: dict[str, str] = {}

    def walk(value: Any, where: str) -> None:
        if isinstance(value, torch.Tensor):
            found[where] = _tensor_sha256(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}.{key}" if where else str(key))
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(item, f"{where}.{i}" if where else str(i))

    walk(body, "")
    return found


def _tensor_sha256(tensor: torch.Tensor) -> str:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.sha256(f"{flat.dtype} {tuple(tensor.shape)}\n".encode())
    digest.update(flat.view(torch.uint8).numpy().data)
    return digest.hexdigest()


def check_tensors(body: Any, recorded: Any, *, where: str) -> None:
    """Raise :class:`CheckpointError` naming the tensors of ``body`` whose SHA-256 is not the
    one ``recorded`` at save (changed, missing or added: the file was damaged or edited).
    ``recorded`` None: a file written before checkpoints recorded them, read unchecked."""
    if recorded is None:
        log.debug("%s: written before checkpoints recorded the SHA-256 of their tensors; "
                  "not checked", where)
        return
    if not isinstance(recorded, dict):
        raise CheckpointError(f"{where}: incomplete checkpoint (its sha256 is not a table)")
    found = tensor_digests(body)
    changed = [name for name in recorded if name in found and found[name] != recorded[name]]
    missing = [name for name in recorded if name not in found]
    added = [name for name in found if name not in recorded]
    problems = ([f"tensor '{n}' changed" for n in changed]
                + [f"tensor '{n}' is missing" for n in missing]
                + [f"tensor '{n}' was added" for n in added])
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckpointError(f"{where}: {problems[0]}{more} since it was saved (its SHA-256 "
                              "is not the one recorded): the file is damaged or was edited; "
                              "use another copy, or train again")


def require_finite(weights: dict[str, Any], *, where: str) -> None:
    """Raise :class:`CheckpointError` naming the first tensor of ``weights`` that holds NaN or
    infinity: a model with such weights gives NaN verdicts."""
    for name, tensor in weights.items():
        if (isinstance(tensor, torch.Tensor) and tensor.is_floating_point()
                and not bool(torch.isfinite(tensor).all())):
            raise CheckpointError(
                f"{where}: weights are not finite: tensor '{name}' holds NaN or infinity "
                "(training diverged; retrain, e.g. with a lower --lr)")


def safe_load(path: str | os.PathLike[str]) -> Any:
    """What ``torch.load(weights_only=True)`` reads from ``path``, whatever it is; raise
    :class:`CheckpointError` for a missing, corrupt or unsafe file (quietly: no torch warning)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # a raw pickle: torch warns, then we refuse it anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol",
                                    category=UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found is None:
            raise CheckpointError(f"{path}: corrupt or not a checkpoint (unreadable "
                                  "pickle data)") from None
        raise CheckpointError(
            f"{path}: refused to load: it references {found.group(1)}, and only tensors and "
            "plain data are allowed (loading it could run code)") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt or not a checkpoint ({exc})") from None
    return payload


def load_payload(path: str | os.PathLike[str], *, fmt: str, version: int,
                 what: str) -> dict[str, Any]:
    """:func:`safe_load`, then require a dict of format ``fmt`` and version ``version``;
    :class:`CheckpointError` naming ``what`` (e.g. "voice profile") otherwise."""
    payload = safe_load(path)
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise CheckpointError(f"{path}: not an audiogate {what}")
    if payload.get("version") != version:
        raise CheckpointError(f"{path}: {what} version {payload.get('version')} is not "
                              f"supported (this audiogate reads {version})")
    return payload
