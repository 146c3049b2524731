"""A trained network's checkpoint: the ``network`` kind of :mod:`audiogate.core.checkpoint`.

Its body holds the network by registered name and constructor arguments
(:class:`~audiogate.models.registry.ModelSpec`), its weights, and, in ``last.pt``, the
training state a run resumes from; with the envelope's config (the front end) and classes,
loading needs nothing but the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Config, FeatureConfig
from ..core.checkpoint import StoredGate, read_gate, require_finite, save_gate
from ..errors import AudiogateError, CheckpointError
from ..features.frontend import LogMel
from .registry import ModelSpec
from .waveform import WaveformClassifier

KIND = "network"


@dataclass
class Checkpoint:
    """A loaded network checkpoint. ``train_state`` is present in training checkpoints only."""

    config: Config
    classes: tuple[str, ...]
    spec: ModelSpec
    weights: dict[str, torch.Tensor]
    epoch: int
    metrics: dict[str, Any]
    train_state: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    """The operating point (see :class:`~audiogate.core.checkpoint.StoredGate`)."""
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

    @classmethod
    def of(cls, stored: StoredGate, *, where: str) -> Checkpoint:
        """The network in ``stored`` (read from ``where``); :class:`CheckpointError` if it is
        another kind of gate or incomplete."""
        if stored.kind != KIND:
            raise CheckpointError(f"{where} is a {stored.kind} gate, not a trained network")
        body = stored.body
        try:
            config = stored.config
            if body.get("version") == 1:  # audiogate 0.1: the SimpleConvNet, weights only
                config = replace(config, model="simple")
                spec = ModelSpec.of(config, n_classes=len(stored.classes))
                weights = body["model"]
            else:
                spec = ModelSpec(str(body["model"]["name"]), dict(body["model"]["args"]))
                weights = body["weights"]
            if stored.epoch is None:
                raise KeyError("epoch")
            checkpoint = cls(config=config, classes=stored.classes, spec=spec,
                             weights=weights, epoch=stored.epoch, metrics=stored.metrics,
                             train_state=body.get("train_state"), gate=stored.gate,
                             run_id=stored.run_id)
        except (KeyError, TypeError, AudiogateError) as exc:
            raise CheckpointError(f"{where}: incomplete checkpoint ({exc})") from None
        if not isinstance(checkpoint.weights, dict):
            raise CheckpointError(f"{where}: incomplete checkpoint (weights are not a "
                                  "state_dict)")
        require_finite(checkpoint.weights, where=where)
        return checkpoint


def save_checkpoint(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
                    net: nn.Module, spec: ModelSpec,
                    config: Config, classes: Sequence[str], epoch: int,
                    metrics: dict[str, Any], train_state: dict[str, Any] | None = None,
                    gate: dict[str, Any] | None = None, run_id: str | None = None) -> None:
    """Write a checkpoint atomically: ``net``'s weights (moved to the CPU), how to rebuild it
    (``spec``), the config, the class names, and the epoch's metrics; ``train_state`` (optimizer,
    RNG, history) for a checkpoint a run can resume from; ``gate`` once the operating point is
    chosen; ``run_id``, the run writing it. Several paths get the same bytes."""
    config.features()  # a window still "auto" is refused: no checkpoint that cannot be run
    body: dict[str, Any] = {"model": spec.as_dict(),
                            "weights": {k: v.detach().cpu() for k, v in net.state_dict().items()}}
    if train_state is not None:
        body["train_state"] = train_state
    require_finite(body["weights"], where=f"refusing to save {path}")
    save_gate(path, StoredGate(kind=KIND, config=config, classes=tuple(classes), body=body,
                               epoch=int(epoch), metrics=dict(metrics), gate=gate,
                               run_id=None if run_id is None else str(run_id)))


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Load a network checkpoint safely; raise :class:`CheckpointError` on any problem."""
    return Checkpoint.of(read_gate(path), where=str(Path(path)))


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
