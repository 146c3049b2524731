"""ONNX export of the deployable model, and a classifier that runs the export with onnxruntime.

The exported graph is the whole :class:`~audiogate.models.WaveformClassifier`: waveform
``[shape=(batch, n_samples)]`` at ``features.sr`` -> logits ``[shape=(batch, n_classes)]``,
front end included. Only decoding, mixing to mono, resampling and cutting/padding to the
window stay in Python (as for the PyTorch backend).

``torch.stft`` returns complex tensors, which ONNX export does not handle, so the exported front
end computes the same STFT as a strided 1-D convolution with a fixed windowed-DFT basis
(:class:`~audiogate.features.dft.DftLogMel`); everything after the power spectrogram is the
code of :class:`~audiogate.features.frontend.LogMel` itself. :func:`export_onnx` checks the result
with onnxruntime against PyTorch on generated speech-like, confuser, short, quiet and silent
clips and refuses to write a model whose logits differ by more than ``TOLERANCE`` (relative
to the size of the logits beyond 1, absolute below).

Each file carries the model's classes, feature config, epoch, metrics, the class a gate
accepts and the SHA-256 of the checkpoint it came from as ONNX metadata, so :func:`load_onnx`
needs nothing else.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...config import FeatureConfig
from ...core.decision import Decision, stored_positive
from ...core.gate import ExportReport
from ...core.onnx import (
    OnnxFormat,
    cpu_session,
    to_onnx_bytes,
    with_metadata,
)
from ...core.onnx import read_metadata as read_onnx_metadata
from ...data.synth import probe_waves
from ...errors import AudiogateError, CheckpointError
from ...features.dft import DftLogMel
from ...files import sha256_file, to_json, write_bytes
from ...models import WaveformClassifier
from ...models.checkpoint import KIND, Checkpoint, load_checkpoint
from ..base import FixedGate

log = logging.getLogger(__name__)

GRAPH = "waveform -> logits, log-mel front end included"
INPUT_NAME = "waveform"
OUTPUT_NAME = "logits"
TOLERANCE = 1e-4
"""Largest logit difference (onnxruntime vs PyTorch) an export may have, relative to the
logits' size where it exceeds 1 (:class:`Parity`)."""
FORMAT = OnnxFormat(
    format="audiogate.onnx", version="1", finite=True,
    missing="ONNX model not found: {path} (write one with "
            "`audiogate export --checkpoint CKPT --onnx PATH`)",
    foreign="{label}: an ONNX file without audiogate metadata; export it with "
            "`audiogate export`",
    unsupported="{label}: audiogate ONNX version {found} is not supported (this audiogate "
                "reads version {version})")
"""The exported network's file format (:func:`read_metadata`)."""


class ExportError(AudiogateError):
    """The model cannot be exported, or the export does not reproduce PyTorch."""


def exportable(model: WaveformClassifier) -> nn.Module:
    """The same network behind the :class:`~audiogate.features.dft.DftLogMel` front end, in
    eval mode."""
    return nn.Sequential(DftLogMel(model.frontend.cfg), model.net).eval()


@dataclass(frozen=True)
class NetworkExport(ExportReport):
    """:class:`~audiogate.core.gate.ExportReport` of a network, with the logit difference
    relative to the logits' size (what the tolerance bounds, :class:`Parity`) and the largest
    probability difference."""

    max_scaled_diff: float
    max_prob_diff: float

    def details(self) -> str:
        return (f" ({self.max_scaled_diff:.2e} relative to the logits' size), max "
                f"|probability diff| {self.max_prob_diff:.2e}")


def _to_onnx_bytes(module: nn.Module, *, n_samples: int) -> bytes:
    """``module`` (input ``[shape=(batch, n_samples)]``) as ONNX bytes, batch axis dynamic."""
    # limit_peak's empty-clip check: the exported length is fixed and non-zero
    quiet = [(torch.jit.TracerWarning, "Converting a tensor to a Python boolean")]
    return to_onnx_bytes(module, (torch.zeros(2, n_samples),),
                         inputs={INPUT_NAME: {0: "batch"}}, outputs={OUTPUT_NAME: {0: "batch"}},
                         quiet=quiet)


def _metadata(ckpt: Checkpoint, *, sha256: str) -> dict[str, str]:
    return {"classes": to_json(list(ckpt.classes), indent=None),
            "features": to_json(asdict(ckpt.features), indent=None), "epoch": str(ckpt.epoch),
            "metrics": to_json(ckpt.metrics, indent=None),
            "gate": to_json(ckpt.gate, indent=None),
            "positive": stored_positive(ckpt.classes, chosen=ckpt.config.positive_class,
                                        gate=ckpt.gate) or "",
            "clip_pooling": ckpt.config.clip_pooling, "max_clip_s": str(ckpt.config.max_clip_s),
            "checkpoint_sha256": sha256}


def export_onnx(*, checkpoint: str | os.PathLike[str], out: str | os.PathLike[str],
                tolerance: float | None = None) -> NetworkExport:
    """Export a checkpoint's waveform -> logits model to ``out`` (written atomically).

    Raises :class:`CheckpointError` for an unusable checkpoint and :class:`ExportError` if
    onnxruntime's logits differ from PyTorch's by more than ``tolerance`` (relative to the
    logits' size where it exceeds 1, see :class:`Parity`) on the probe clips
    (:func:`probe_waves`; default :data:`TOLERANCE`); nothing is written then.
    """
    tolerance = TOLERANCE if tolerance is None else tolerance
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.build_model()
    data = with_metadata(_to_onnx_bytes(exportable(model), n_samples=ckpt.features.n_samples),
                         kind=FORMAT, metadata=_metadata(ckpt, sha256=sha256_file(checkpoint)))
    parity = verify(model, data, features=ckpt.features)
    if parity.scaled > tolerance:
        raise ExportError(f"the ONNX model differs from PyTorch by {parity.scaled:.3g} in the "
                          f"logits, relative to their size (tolerance {tolerance:g}; "
                          f"{parity.logit:.3g} absolute); not written. If a difference this "
                          "size is acceptable, export again with a larger --tolerance")
    out_path = Path(out)
    write_bytes(out_path, data)
    log.info("exported %s -> %s (max |logit diff| %.2e over %d probe clips)", checkpoint,
             out_path, parity.logit, parity.n_clips)
    return NetworkExport(path=str(out_path), bytes=len(data), graph=GRAPH, compared="logit",
                         max_abs_diff=parity.logit, n_probe_clips=parity.n_clips,
                         max_scaled_diff=parity.scaled, max_prob_diff=parity.probability)


@dataclass(frozen=True)
class Parity:
    """How closely onnxruntime reproduces PyTorch on the probe clips: the largest absolute
    logit and probability differences, and the largest logit difference relative to the
    size of the logits (``max |a - b| / max(1, max |b|)``: absolute while every logit is
    within +-1, relative beyond, since float32 rounding grows with the numbers rounded),
    which is what the tolerance bounds."""

    logit: float
    probability: float
    scaled: float
    n_clips: int


def verify(model: WaveformClassifier, onnx_model: bytes,
           *, features: FeatureConfig) -> Parity:
    """onnxruntime vs PyTorch on :func:`probe_waves`."""
    waves = probe_waves(features)
    with torch.no_grad():
        expected = model(torch.from_numpy(waves)).numpy()
    got = cpu_session(onnx_model).run([OUTPUT_NAME], {INPUT_NAME: waves})[0]
    diff = np.abs(got - expected)
    return Parity(logit=float(diff.max()),
                  probability=float(np.abs(softmax(got) - softmax(expected)).max()),
                  scaled=float(diff.max() / max(1.0, float(np.abs(expected).max()))),
                  n_clips=len(waves))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax ``[shape=(batch, n_classes)]``, float32."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


class OnnxClassifier(FixedGate):
    """An exported network run by onnxruntime; same API as
    :class:`~audiogate.gates.network.classifier.Classifier`, but fixed: it is saved and
    exported from its checkpoint."""

    kind = KIND

    def __init__(self, path: str | os.PathLike[str], *, workers: int = 1) -> None:
        self.path = str(path)
        meta = read_metadata(path)
        gate = meta["gate"]
        decision = Decision(meta["classes"], positive_class=meta["positive"],
                            pooling=meta["clip_pooling"],
                            threshold=gate["threshold"] if gate else None)
        super().__init__(classes=meta["classes"], features=meta["features"],
                         epoch=meta["epoch"], metrics=meta["metrics"], decision=decision,
                         max_clip_s=meta["max_clip_s"], workers=workers)
        self.operating_point = (gate or {}).get("operating_point")
        self.exported_from = meta["checkpoint_sha256"]
        self.session = cpu_session(self.path)

    def _batch_probabilities(self, x: np.ndarray) -> np.ndarray:
        return softmax(self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0])


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Classes, :class:`FeatureConfig`, epoch, metrics, gate (threshold), positive class, clip
    pooling, clip length and source checkpoint hash of an exported model (an export made
    before the positive class was stored accepts what its gate, else the old rule, says:
    :func:`~audiogate.core.decision.stored_positive`); :class:`CheckpointError` if it is not
    an audiogate ONNX file, or if a weight is NaN or infinite (an export of a diverged
    checkpoint gives NaN verdicts)."""
    meta = read_onnx_metadata(path, kind=FORMAT)
    try:
        classes = tuple(str(c) for c in json.loads(meta["classes"]))
        gate = json.loads(meta.get("gate", "null"))
        return {"classes": classes,
                "features": FeatureConfig.from_dict(json.loads(meta["features"])),
                "epoch": int(meta["epoch"]), "metrics": json.loads(meta["metrics"]),
                "checkpoint_sha256": meta["checkpoint_sha256"],
                "gate": gate,
                "positive": _positive(meta, classes=classes, gate=gate),
                "clip_pooling": meta.get("clip_pooling", "mean"),
                "max_clip_s": float(meta.get("max_clip_s", "10.0"))}
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: incomplete audiogate metadata ({exc})") from None


def _positive(meta: dict[str, str], *, classes: tuple[str, ...],
              gate: dict[str, Any] | None) -> str | None:
    """The stored positive class ("" for none); an older export's by its gate or the old
    rule."""
    if "positive" in meta:
        return meta["positive"] or None
    return stored_positive(classes, gate=gate)
