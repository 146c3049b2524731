"""Self-describing checkpoints: weights + network spec + full config + label map + state.

Files are written atomically (:func:`audiogate.files.atomic_write`) so a crash or ``kill -9``
never leaves a half-written ``best.pt``/``last.pt``, and read with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain data: a
checkpoint cannot run code. The network is stored by registered name and constructor
arguments (:class:`~audiogate.models.ModelSpec`), so loading needs nothing but the file.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Config, FeatureConfig
from ..errors import AudiogateError, CheckpointError
from ..features.frontend import LogMel
from ..files import atomic_write
from ..models import ModelSpec, WaveformClassifier

FORMAT = "audiogate.checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Version 1 (audiogate 0.1) stored the SimpleConvNet weights under ``model``, no spec."""


@dataclass
class Checkpoint:
    """A loaded checkpoint. ``train_state`` is present in training checkpoints only."""

    config: Config
    classes: tuple[str, ...]
    spec: ModelSpec
    weights: dict[str, torch.Tensor]
    epoch: int
    metrics: dict[str, Any]
    train_state: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    """For a two-class model whose operating point was chosen: ``positive`` (class name),
    ``threshold`` on P(positive), ``operating_point`` (the rule) and ``validation`` (its
    FAR/FRR/EER/AUC on the validation split)."""
    run_id: str | None = None
    """The run that wrote it (None for checkpoints written by hand or by audiogate < 0.2)."""

    @property
    def features(self) -> FeatureConfig:
        return self.config.features()

    def build_net(self) -> nn.Module:
        """The network with these weights, in eval mode, on the CPU."""
        net = self.spec.build()
        try:
            net.load_state_dict(self.weights)
        except RuntimeError as exc:
            raise CheckpointError(f"weights do not fit the stored model: {exc}") from None
        return net.eval()

    def build_model(self) -> WaveformClassifier:
        """The waveform classifier (front end + network), in eval mode, on the CPU."""
        return WaveformClassifier(LogMel(self.features), self.build_net()).eval()


def save_checkpoint(path: str | os.PathLike[str], *, net: nn.Module, spec: ModelSpec,
                    config: Config, classes: Sequence[str], epoch: int,
                    metrics: dict[str, Any], train_state: dict[str, Any] | None = None,
                    gate: dict[str, Any] | None = None, run_id: str | None = None) -> None:
    """Write a checkpoint atomically: ``net``'s weights (moved to the CPU), how to rebuild it
    (``spec``), the config, the class names, and the epoch's metrics; ``train_state`` (optimizer,
    RNG, history) for a checkpoint a run can resume from; ``gate`` (see :class:`Checkpoint`)
    once the operating point is chosen; ``run_id``, the run writing it."""
    payload: dict[str, Any] = {
        "format": FORMAT, "version": VERSION,
        "config": config.to_dict(), "classes": list(classes), "model": spec.as_dict(),
        "weights": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "epoch": int(epoch), "metrics": dict(metrics),
    }
    if train_state is not None:
        payload["train_state"] = train_state
    if gate is not None:
        payload["gate"] = gate
    if run_id is not None:
        payload["run_id"] = str(run_id)
    require_finite(payload["weights"], where=f"refusing to save {path}")
    with atomic_write(Path(path)) as fh:
        torch.save(payload, fh)


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


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Load safely (``weights_only=True``); raise :class:`CheckpointError` on any problem."""
    path = Path(path)
    payload = safe_load(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an audiogate checkpoint (a bare state_dict or "
                              "another tool's file)")
    version = payload.get("version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(f"{path}: checkpoint version {version} is not supported (this "
                              f"audiogate reads versions {READABLE_VERSIONS})")
    try:
        stored = payload["config"]
        if "pad" not in stored:  # written before the field existed: its front end padded
            stored = {**stored, "pad": "silence"}  # short clips with silence
        config = Config.from_dict(stored, source=f"{path} config")
        classes = tuple(payload["classes"])
        if version == 1:
            spec = ModelSpec.of(config, n_classes=len(classes))
            weights = payload["model"]
        else:
            spec = ModelSpec(str(payload["model"]["name"]), dict(payload["model"]["args"]))
            weights = payload["weights"]
        checkpoint = Checkpoint(config=config, classes=classes, spec=spec, weights=weights,
                                epoch=int(payload["epoch"]),
                                metrics=dict(payload["metrics"]),
                                train_state=payload.get("train_state"), gate=payload.get("gate"),
                                run_id=payload.get("run_id"))
    except (KeyError, TypeError, AudiogateError) as exc:
        raise CheckpointError(f"{path}: incomplete checkpoint ({exc})") from None
    if not isinstance(checkpoint.weights, dict):
        raise CheckpointError(f"{path}: incomplete checkpoint (weights are not a state_dict)")
    require_finite(checkpoint.weights, where=str(path))
    return checkpoint


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
