"""Self-describing checkpoints: weights + full config + label map + training state.

Files are written atomically (temp file in the same folder, flush, fsync, ``os.replace``) so
a crash or ``kill -9`` never leaves a half-written ``best.pt``/``last.pt``, and read with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain data: a
checkpoint cannot run code.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import torch

from .config import Config, FeatureConfig
from .errors import AudiogateError, CheckpointError
from .features import LogMel
from .model import WaveformClassifier, build_net

FORMAT = "audiogate.checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint. ``train_state`` is present in training checkpoints only."""

    config: Config
    classes: tuple[str, ...]
    weights: dict[str, torch.Tensor]
    epoch: int
    metrics: dict[str, Any]
    train_state: dict[str, Any] | None = None

    @property
    def features(self) -> FeatureConfig:
        return self.config.features()

    def build_model(self) -> WaveformClassifier:
        """The waveform classifier with these weights, in eval mode, on the CPU."""
        net = build_net(self.features, n_classes=len(self.classes), dropout=self.config.dropout)
        try:
            net.load_state_dict(self.weights)
        except RuntimeError as exc:
            raise CheckpointError(f"weights do not fit the stored config: {exc}") from None
        return WaveformClassifier(LogMel(self.features), net).eval()


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[IO[bytes]]:
    """Open a temp file beside ``path``; on success fsync and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def save_checkpoint(path: str | os.PathLike[str], *, net: torch.nn.Module, config: Config,
                    classes: Sequence[str], epoch: int, metrics: dict[str, Any],
                    train_state: dict[str, Any] | None = None) -> None:
    """Write a checkpoint atomically. ``net`` is the :class:`SimpleConvNet`."""
    payload: dict[str, Any] = {
        "format": FORMAT, "version": VERSION,
        "config": config.to_dict(), "classes": list(classes),
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "epoch": int(epoch), "metrics": dict(metrics),
    }
    if train_state is not None:
        payload["train_state"] = train_state
    with atomic_write(Path(path)) as fh:
        torch.save(payload, fh)


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Load safely (``weights_only=True``); raise :class:`CheckpointError` on any problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
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
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an audiogate checkpoint (a bare state_dict or "
                              "another tool's file)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload.get('version')} is not "
                              f"supported (this audiogate reads version {VERSION})")
    try:
        config = Config.from_dict(payload["config"], source=f"{path} config")
        return Checkpoint(config=config, classes=tuple(payload["classes"]),
                          weights=payload["model"], epoch=int(payload["epoch"]),
                          metrics=dict(payload["metrics"]),
                          train_state=payload.get("train_state"))
    except (KeyError, TypeError, AudiogateError) as exc:
        raise CheckpointError(f"{path}: incomplete checkpoint ({exc})") from None


def ensure_compatible(ckpt: Checkpoint, *, features: FeatureConfig | None = None,
                      classes: Sequence[str] | None = None, what: str = "this data") -> None:
    """Refuse a checkpoint whose feature config or class set differs from what is asked."""
    if features is not None and features != ckpt.features:
        mine, theirs = asdict(ckpt.features), asdict(features)
        diff = ", ".join(f"{k}: checkpoint {mine[k]!r} vs {theirs[k]!r}"
                         for k in mine if mine[k] != theirs[k])
        raise CheckpointError(f"checkpoint was trained with another feature config ({diff})")
    if classes is not None and tuple(classes) != ckpt.classes:
        raise CheckpointError(f"checkpoint classes {list(ckpt.classes)} do not match the "
                              f"classes of {what} {list(classes)}")
