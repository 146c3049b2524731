"""A trained network as a gate, run with PyTorch: the ``network`` kind's own backend."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ...core.decision import Decision, stored_positive
from ...models.checkpoint import KIND, Checkpoint, save_checkpoint
from ..base import WindowedGate
from .onnx import NetworkExport, export_onnx


class Classifier(WindowedGate):
    """A trained model plus its front end, rebuilt from a checkpoint alone (PyTorch)."""

    kind = KIND
    backend = "torch"

    def __init__(self, checkpoint: Checkpoint, *, workers: int = 1) -> None:
        config, gate = checkpoint.config, checkpoint.gate
        positive = stored_positive(checkpoint.classes, chosen=config.positive_class, gate=gate)
        decision = Decision(checkpoint.classes, positive_class=positive,
                            pooling=config.clip_pooling,
                            threshold=gate["threshold"] if gate else None)
        super().__init__(classes=checkpoint.classes, features=checkpoint.features,
                         epoch=checkpoint.epoch, metrics=checkpoint.metrics, decision=decision,
                         max_clip_s=config.max_clip_s, workers=workers)
        self.operating_point = (gate or {}).get("operating_point")
        self.checkpoint = checkpoint
        self.model = checkpoint.build_model()

    def _batch_probabilities(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(self.model(torch.from_numpy(x)), dim=1).numpy()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the network as a checkpoint, with the threshold it decides by now (a
        threshold set by hand drops the stored validation figures: they were of another)."""
        ckpt, gate = self.checkpoint, self.checkpoint.gate
        if self.threshold is None:
            gate = None
        elif gate is None or gate["threshold"] != self.threshold:
            gate = {"positive": self.decision.positive_class, "threshold": self.threshold,
                    "operating_point": "set by hand", "validation": None}
        save_checkpoint(path, net=self.model.net, spec=ckpt.spec, config=ckpt.config,
                        classes=ckpt.classes, epoch=ckpt.epoch, metrics=ckpt.metrics, gate=gate,
                        run_id=ckpt.run_id)

    def export(self, out: str | os.PathLike[str], *, source: Path,
               tolerance: float | None = None) -> NetworkExport:
        return export_onnx(checkpoint=source, out=out, tolerance=tolerance)
