"""ONNX export of the speaker encoder, and an encoder that runs the export with onnxruntime.

The exported graph is :class:`~audiogate.speech.encoder.SpeakerEncoder` with the DFT-convolution
front end (:class:`~audiogate.speech.encoder.DftMelFrontEnd`): partial windows
``[shape=(batch, WINDOW_SAMPLES)]`` at 16 kHz -> unit window embeddings
``[shape=(batch, EMBED_DIM)]``, batch axis dynamic. Volume normalisation, cutting utterances into
windows and averaging stay in Python (:func:`~audiogate.speech.encoder.embed_utterances`), shared
by both backends. :func:`export_encoder` checks onnxruntime's utterance embeddings against
PyTorch's (``torch.stft`` front end) on generated probe clips and refuses to write a model that
differs by more than ``TOLERANCE``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..config import Config
from ..core.onnx import IN_MEMORY, OnnxFormat, cpu_session, to_onnx_bytes, with_metadata
from ..core.onnx import read_metadata as read_onnx_metadata
from ..data.synth import probe_waves
from ..errors import AudiogateError, CheckpointError
from ..files import write_bytes
from .encoder import (
    EMBED_DIM,
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    SpeakerEncoder,
    embed_utterances,
    load_encoder,
    torch_runner,
    weights_digest,
)

log = logging.getLogger(__name__)

INPUT_NAME = "windows"
OUTPUT_NAME = "embeddings"
TOLERANCE = 1e-4
"""Largest absolute difference of an utterance embedding, onnxruntime vs PyTorch."""
FORMAT = OnnxFormat(format="audiogate.voice-encoder", version="1",
                    missing="ONNX speaker encoder not found: {path}",
                    foreign="{label}: not an audiogate voice-encoder export (metadata {metadata})")
"""The exported encoder's file format (:func:`read_metadata`)."""
PROBE_FRAMES = (161, 401)
"""Probe clip lengths in STFT frames: one partial window (1.6 s) and several (4 s)."""


@dataclass(frozen=True)
class EncoderExport:
    """What :func:`export_encoder` wrote and how closely it reproduces PyTorch."""

    path: str
    max_abs_diff: float
    n_probe_clips: int
    bytes: int


def probe_clips() -> list[np.ndarray]:
    """Generated verification clips at 16 kHz: speech-like, confusers, short, quiet, silent
    (those of the classifier's export check), one and several partial windows long."""
    clips: list[np.ndarray] = []
    for frames in PROBE_FRAMES:
        clips.extend(probe_waves(Config(sr=SAMPLE_RATE, fixed_length=frames).features()))
    return clips


ENCODER_NOISE = ((UserWarning, ""), (torch.jit.TracerWarning, ""))
"""Tracing chatter of the encoder's LSTM (batch size), silenced while exporting."""


def _to_onnx_bytes(encoder: SpeakerEncoder) -> bytes:
    return to_onnx_bytes(encoder, (torch.zeros(2, WINDOW_SAMPLES),),
                         inputs={INPUT_NAME: {0: "batch"}}, outputs={OUTPUT_NAME: {0: "batch"}},
                         quiet=ENCODER_NOISE)


def _metadata() -> dict[str, str]:
    return {"weights_sha256": weights_digest(),
            "sample_rate": str(SAMPLE_RATE), "window_samples": str(WINDOW_SAMPLES),
            "embed_dim": str(EMBED_DIM)}


def export_encoder(out: str | os.PathLike[str], *,
                   tolerance: float = TOLERANCE) -> EncoderExport:
    """Export the pretrained encoder to ``out`` (written atomically) after checking it.

    Raises :class:`AudiogateError` if onnxruntime's embeddings of :func:`probe_clips` differ
    from PyTorch's by more than ``tolerance``; nothing is written then.
    """
    data = with_metadata(_to_onnx_bytes(load_encoder(exportable=True)), kind=FORMAT,
                         metadata=_metadata())
    diff, n_clips = verify(data)
    if diff > tolerance:
        raise AudiogateError(f"the ONNX speaker encoder differs from PyTorch by {diff:.3g} "
                             f"(tolerance {tolerance:g}); not written")
    write_bytes(out, data)
    log.info("exported the speaker encoder -> %s (max |diff| %.2e over %d probe clips)", out,
             diff, n_clips)
    return EncoderExport(path=str(out), max_abs_diff=diff, n_probe_clips=n_clips,
                         bytes=len(data))


def verify(onnx_model: bytes | str) -> tuple[float, int]:
    """Largest absolute difference of the utterance embeddings of :func:`probe_clips`,
    onnxruntime vs PyTorch, and the number of clips."""
    clips = probe_clips()
    expected = embed_utterances(clips, run=torch_runner(load_encoder()))
    got = embed_utterances(clips, run=OnnxEncoder(onnx_model, check=False))
    return float(np.abs(got - expected).max()), len(clips)


class OnnxEncoder:
    """An exported encoder run by onnxruntime; a :data:`~audiogate.speech.encoder.WindowRunner`.

    ``model``: a path or the file's bytes. ``check`` refuses a file that is not an audiogate
    voice-encoder export or was made from other weights than the installed ones.
    ``threads``: onnxruntime intra-op threads (0 = its default, all cores).
    """

    def __init__(self, model: bytes | str | os.PathLike[str], *, check: bool = True,
                 threads: int = 0) -> None:
        source = model if isinstance(model, bytes) else str(model)
        if check:
            meta = read_metadata(source)
            if meta["weights_sha256"] != weights_digest():
                label = IN_MEMORY if isinstance(source, bytes) else source
                raise CheckpointError(f"{label}: exported from other encoder weights than "
                                      "the installed ones; export it again")
        self.session = cpu_session(source, threads=threads)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.session.run([OUTPUT_NAME], {INPUT_NAME: windows})[0]
        return out


def read_metadata(model: bytes | str) -> dict[str, str]:
    """The audiogate metadata of an exported encoder; :class:`CheckpointError` if it is not
    one."""
    return read_onnx_metadata(model, kind=FORMAT)

