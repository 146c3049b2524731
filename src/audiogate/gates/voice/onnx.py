"""ONNX export of a voice gate, and a classifier that runs the export with onnxruntime.

The graph is the whole gate after the clip is cut into the encoder's windows: inputs
``windows`` ``[shape=(n_windows, WINDOW_SAMPLES)]`` (16 kHz waveform windows of one or more
clips) and ``pool`` ``[shape=(n_clips, n_windows)]`` (row ``i`` averages clip ``i``'s windows:
``1 / count`` at its windows, 0 elsewhere); output ``score`` ``[shape=(n_clips,)]``. Inside:
the speaker encoder (:class:`~audiogate.speech.encoder.SpeakerEncoder` with its DFT front end),
the mean and L2 norm of each clip's windows, then the gate's scoring rule
(:mod:`~audiogate.speech.snorm`): the cosine similarities to the enrolled embeddings and the
mean of the top-k (ONNX ``MatMul`` and ``TopK``) and the head when there is one (cosine and
top-k against the impostor cohort, then a sigmoid); or the cosine similarities to the voice
centroids, their largest (``centroid``), or S-norm against the cohort's speaker centroids with
each voice's statistics stored and each clip's computed in the graph (``TopK``, mean,
deviation), then a sigmoid (``snorm``). What stays in Python, as
for the encoder's own export: volume normalisation, voice activity detection (Silero, its own
ONNX model, stateful) and cutting clips into windows, whose number varies per clip.

:func:`export_voice_onnx` checks onnxruntime's scores against the PyTorch gate's on probe
clips and refuses to write a model that differs by more than ``TOLERANCE``. The file carries
the gate's config, classes, threshold, voices and the SHA-256 of its checkpoint as ONNX
metadata; an ONNX gate is fixed (enrol in the checkpoint, then export again).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ...config import Config
from ...core.decision import POSITIVE_NAME, Decision
from ...core.gate import ExportReport
from ...core.onnx import (
    OnnxFormat,
    cpu_session,
    to_onnx_bytes,
    with_metadata,
)
from ...core.onnx import read_metadata as read_onnx_metadata
from ...errors import AudiogateError, CheckpointError
from ...files import sha256_file, to_json, write_bytes
from ...speech.embeddings import Embedder, EmbedSpec
from ...speech.encoder import (
    NORM_EPS,
    RUN_THREADS,
    WINDOW_SAMPLES,
    SpeakerEncoder,
    load_encoder,
    normalize_volume,
    partial_windows,
)
from ...speech.export import ENCODER_NOISE, probe_clips
from ...speech.scoring import LogisticHead, VoiceScorer
from ...speech.snorm import STD_FLOOR, ScoreRule, top_stats
from ..base import FixedGate
from .base import VoiceGateBase
from .checkpoint import VoiceCheckpoint

log = logging.getLogger(__name__)

Scorer = Callable[[Sequence[np.ndarray]], np.ndarray]
"""The PyTorch gate's scores of encoder inputs (what the export must reproduce)."""

GRAPH = "speech windows -> voice gate score, speaker encoder and enrolled voices included"
INPUT_NAMES = ("windows", "pool")
OUTPUT_NAME = "score"
TOLERANCE = 1e-4
"""Largest absolute score difference, onnxruntime vs PyTorch, an export may have."""
FORMAT = OnnxFormat(format="audiogate.voice-gate-onnx", version="1",
                    missing="ONNX model not found: {path}",
                    foreign="{label}: not an audiogate voice gate export")
"""The exported gate's file format (:func:`read_metadata`)."""


class GateGraph(nn.Module):
    """Windows and their pooling matrix -> gate scores (see the module docstring)."""

    enrolled: torch.Tensor
    cohort: torch.Tensor
    coef: torch.Tensor
    intercept: torch.Tensor
    centroids: torch.Tensor
    speakers: torch.Tensor
    z_mean: torch.Tensor
    z_std: torch.Tensor

    def __init__(self, *, encoder: SpeakerEncoder, scorer: VoiceScorer) -> None:
        super().__init__()
        self.encoder = encoder
        enrolled = np.concatenate(list(scorer.profile.voices.values()))
        self.register_buffer("enrolled", torch.from_numpy(enrolled.astype(np.float32)))
        self.register_buffer("cohort", torch.from_numpy(scorer.cohort.astype(np.float32)))
        self.k_enrolled = min(scorer.top_k, len(enrolled))
        self.k_cohort = min(scorer.top_k, len(scorer.cohort))
        self.has_head = scorer.head is not None
        head = scorer.head or LogisticHead(coef=(1.0, 0.0), intercept=0.0)
        self.register_buffer("coef", torch.tensor(head.coef, dtype=torch.float32))
        self.register_buffer("intercept", torch.tensor(head.intercept, dtype=torch.float32))
        self._rule_buffers(scorer)

    def _rule_buffers(self, scorer: VoiceScorer) -> None:
        """The centroid and S-norm rules' constants: voice centroids, cohort speaker
        centroids, and each voice's S-norm statistics (they do not depend on the clip)."""
        rule = scorer.rule
        self.rule, self.scale = rule.kind, rule.scale
        centroids = scorer.profile.centroids()
        speakers = scorer.speakers.astype(np.float64)
        if rule.kind == "snorm":
            z_mean, z_std = top_stats(centroids @ speakers.T, top=rule.top)
        else:
            speakers, z_mean, z_std = np.zeros((1, centroids.shape[1])), np.zeros(1), np.ones(1)
        self.k_speakers = min(rule.top, len(speakers))
        for name, value in (("centroids", centroids), ("speakers", speakers),
                            ("z_mean", z_mean), ("z_std", z_std)):
            self.register_buffer(name, torch.from_numpy(np.asarray(value, np.float32)))

    def _centroid_score(self, unit: torch.Tensor) -> torch.Tensor:
        sims = torch.matmul(unit, self.centroids.T)
        if self.rule == "centroid":
            return sims.max(dim=1).values.clamp(0.0, 1.0)
        best = torch.topk(torch.matmul(unit, self.speakers.T), self.k_speakers, dim=1).values
        t_mean = best.mean(dim=1, keepdim=True)
        t_std = (best - t_mean).pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(STD_FLOOR)
        normed = 0.5 * ((sims - self.z_mean) / self.z_std + (sims - t_mean) / t_std)
        return torch.sigmoid(normed.max(dim=1).values / self.scale)

    def forward(self, windows: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
        mean = torch.matmul(pool, self.encoder(windows))
        unit = mean / torch.linalg.vector_norm(mean, dim=1, keepdim=True).clamp_min(NORM_EPS)
        if self.rule != "topk":
            return self._centroid_score(unit)
        similarity = torch.topk(torch.matmul(unit, self.enrolled.T), self.k_enrolled,
                                dim=1).values.mean(dim=1)
        if not self.has_head:
            return similarity.clamp(0.0, 1.0)
        impostor = torch.topk(torch.matmul(unit, self.cohort.T), self.k_cohort,
                              dim=1).values.mean(dim=1)
        z = self.coef[0] * similarity + self.coef[1] * impostor + self.intercept
        return torch.sigmoid(z)


def graph_inputs(used: Sequence[np.ndarray], *, spec: EmbedSpec) -> tuple[np.ndarray,
                                                                          np.ndarray]:
    """``windows`` and ``pool`` of the encoder inputs ``used`` (1-D, 16 kHz), as
    :func:`~audiogate.speech.encoder.embed_utterances` cuts them."""
    settings = spec.settings.encoder
    parts = [partial_windows(normalize_volume(u, target_dbfs=settings.target_dbfs),
                             settings=settings) for u in used]
    counts = [len(p) for p in parts]
    pool = np.zeros((len(parts), sum(counts)), np.float32)
    start = 0
    for i, n in enumerate(counts):
        pool[i, start:start + n] = 1.0 / n
        start += n
    windows = np.concatenate(parts) if parts else np.zeros((0, WINDOW_SAMPLES), np.float32)
    return np.ascontiguousarray(windows, np.float32), pool


def _session(model: bytes | str) -> Any:
    return cpu_session(model, threads=RUN_THREADS)  # the LSTM gains nothing from more


def _run(session: Any, used: Sequence[np.ndarray], *, spec: EmbedSpec) -> np.ndarray:
    windows, pool = graph_inputs(used, spec=spec)
    out: np.ndarray = session.run([OUTPUT_NAME], dict(zip(INPUT_NAMES, (windows, pool),
                                                          strict=True)))[0]
    return out.astype(np.float64)


def _to_onnx_bytes(graph: GateGraph) -> bytes:
    windows, pool = INPUT_NAMES
    return to_onnx_bytes(graph, (torch.zeros(3, WINDOW_SAMPLES), torch.full((2, 3), 0.5)),
                         inputs={windows: {0: "windows"}, pool: {0: "clips", 1: "windows"}},
                         outputs={OUTPUT_NAME: {0: "clips"}}, quiet=ENCODER_NOISE)


def _metadata(ckpt: VoiceCheckpoint, *, sha256: str) -> dict[str, str]:
    voices = {name: len(v) for name, v in ckpt.profile.voices.items()}
    return {"classes": to_json(list(ckpt.classes), indent=None),
            "config": to_json(ckpt.config.to_dict(), indent=None),
            "spec": to_json(ckpt.profile.spec.as_dict(), indent=None),
            "voices": to_json(voices, indent=None),
            "gate": to_json(ckpt.gate, indent=None), "metrics": to_json(ckpt.metrics, indent=None),
            "head": to_json(ckpt.scorer.head.as_dict() if ckpt.scorer.head else None,
                            indent=None),
            "score": to_json(ckpt.scorer.rule.as_dict(), indent=None),
            "top_k": str(ckpt.scorer.top_k), "checkpoint_sha256": sha256}


def export_voice_onnx(*, checkpoint: VoiceCheckpoint, score: Scorer,
                      source: str | os.PathLike[str], out: str | os.PathLike[str],
                      tolerance: float | None = None) -> ExportReport:
    """Export the voice gate ``checkpoint`` (read from file ``source``, whose hash the export
    carries) to ``out`` (written atomically) after checking that onnxruntime's scores of the
    probe clips equal ``score``'s (the PyTorch gate's) within ``tolerance`` (default
    :data:`TOLERANCE`)."""
    tolerance = TOLERANCE if tolerance is None else tolerance
    graph = GateGraph(encoder=load_encoder(exportable=True), scorer=checkpoint.scorer)
    data = with_metadata(_to_onnx_bytes(graph.eval()), kind=FORMAT,
                         metadata=_metadata(checkpoint, sha256=sha256_file(source)))
    clips = probe_clips()
    expected = score(clips)
    got = _run(_session(data), clips, spec=checkpoint.profile.spec)
    diff = float(np.abs(got - expected).max())
    if diff > tolerance:
        raise AudiogateError(f"the ONNX voice gate differs from PyTorch by {diff:.3g} in its "
                             f"scores (tolerance {tolerance:g}); not written")
    write_bytes(out, data)
    log.info("exported %s -> %s (max |score diff| %.2e over %d probe clips)", source, out,
             diff, len(clips))
    return ExportReport(path=str(out), bytes=len(data), graph=GRAPH, compared="score",
                        max_abs_diff=diff, n_probe_clips=len(clips))


def _no_torch_encoder(windows: np.ndarray) -> np.ndarray:
    raise AudiogateError("an ONNX voice gate embeds clips inside its graph")


class OnnxVoiceClassifier(FixedGate, VoiceGateBase):
    """An exported voice gate run by onnxruntime (Silero VAD in its own session); same API
    as :class:`~audiogate.gates.voice.classifier.VoiceClassifier`, but fixed: no enrolment,
    saved and exported from its checkpoint."""

    fixed_because = ("an ONNX voice gate is fixed: enrol the voice in its checkpoint "
                     "(audiogate enroll) and export it again")

    def __init__(self, path: str | os.PathLike[str], *, workers: int = 1) -> None:
        meta = read_metadata(path)
        config: Config = meta["config"]
        gate = meta["gate"]
        classes = meta["classes"]
        super().__init__(settings=meta["spec"].settings, classes=classes,
                         decision=Decision(classes, positive_class=POSITIVE_NAME,
                                           pooling=config.clip_pooling,
                                           threshold=gate["threshold"] if gate else None),
                         metrics=meta["metrics"], max_clip_s=config.max_clip_s,
                         workers=workers)
        spec: EmbedSpec = meta["spec"]
        if spec.vad_sha256 is not None and EmbedSpec.of(spec.settings).vad_sha256 != \
                spec.vad_sha256:
            raise CheckpointError(f"{path}: made with another VAD model than the installed one")
        self.path, self.spec, self.meta = str(path), spec, meta
        self.operating_point = (gate or {}).get("operating_point")
        self.exported_from = meta["checkpoint_sha256"]
        self.session = _session(self.path)

    def _make_embedder(self) -> Embedder:
        return Embedder(self.settings, run=_no_torch_encoder)

    @property
    def voices(self) -> dict[str, int]:
        return dict(self.meta["voices"])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": "ge2e", "voices": self.voices,
                "top_k": self.meta["top_k"], "head": self.meta["head"],
                "score": self.meta["score"], "vad": self.vad}

    def _score_used(self, used: Sequence[np.ndarray]) -> np.ndarray:
        return _run(self.session, used, spec=self.spec)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The audiogate metadata of an exported voice gate; :class:`CheckpointError` if it is
    not one."""
    meta = read_onnx_metadata(path, kind=FORMAT)
    try:
        return {"classes": tuple(json.loads(meta["classes"])),
                "config": Config.from_dict(json.loads(meta["config"]), source=str(path)),
                "spec": EmbedSpec.from_dict(json.loads(meta["spec"])),
                "voices": json.loads(meta["voices"]), "gate": json.loads(meta["gate"]),
                "metrics": json.loads(meta["metrics"]), "head": json.loads(meta["head"]),
                "top_k": int(meta["top_k"]), "checkpoint_sha256": meta["checkpoint_sha256"],
                "score": json.loads(meta["score"]) if "score" in meta else  # older: topk
                ScoreRule().as_dict()}
    except (KeyError, TypeError, ValueError, AudiogateError) as exc:
        raise CheckpointError(f"{path}: incomplete voice gate metadata ({exc})") from None
