"""What every audiogate ONNX file shares: the export, the metadata, the runtime session.

A model is exported with PyTorch's TorchScript exporter (:func:`to_onnx_bytes`, which needs no
extra packages), checked and stamped with its audiogate metadata (:func:`with_metadata`: string
properties named ``audiogate.<key>``, the first two ``format`` and ``version``), run on the CPU
by onnxruntime (:func:`cpu_session`) and recognised again by its metadata
(:func:`read_metadata`), and tied to the checkpoint it came from
(:func:`check_exported_from`). Each kind of file (the network's export, the speaker encoder's,
the voice gate's) is one :class:`OnnxFormat`, which also words the errors that refuse a file
of another kind.

The metadata also records the SHA-256 of the graph it was exported with
(:func:`graph_digests`: its initializers; its nodes, inputs and outputs), checked on every
read: a graph edited, or another model's graph carrying this one's metadata, is refused.
Files exported before these digests existed are read unchecked.

``onnx`` and ``onnxruntime`` are optional dependencies: they are imported inside the functions
that need them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from ..files import sha256_file, to_json

log = logging.getLogger(__name__)

OPSET = 17
"""ONNX opset of every exported graph."""
META_PREFIX = "audiogate."
"""Prefix of the metadata keys audiogate writes and reads."""
PRODUCER = "audiogate"
IN_MEMORY = "<in-memory ONNX model>"
"""How errors name a model given as bytes."""

Axes = Mapping[str, Mapping[int, str]]
"""Input or output names, in order, each with its dynamic axes (axis -> name)."""
Quiet = Sequence[tuple[type[Warning], str]]
"""Warnings to ignore: category and the start of the message (a regular expression; ``""``
for all of the category)."""

EXPORTER_NOISE: Quiet = ((DeprecationWarning, ""), (FutureWarning, ""),
                         (UserWarning, "Constant folding"))
"""What the TorchScript exporter always says: its deprecation notice and constant-folding
chatter."""


@dataclass(frozen=True, kw_only=True)
class OnnxFormat:
    """One kind of audiogate ONNX file: the ``format`` and ``version`` its metadata carries,
    and the words of the errors that refuse another file (``str.format`` templates).

    ``missing``: the file does not exist (``{path}``). ``foreign``: a file without this
    format's metadata (``{label}``: the path; ``{metadata}``: the audiogate metadata found,
    as JSON). ``unsupported``: this format in another version (``{label}``, ``{found}``,
    ``{version}``); ``None`` words it as ``foreign``. ``finite``: also refuse a file whose
    floating-point weights hold NaN or infinity, naming the first such initializer.
    """

    format: str
    version: str
    missing: str
    foreign: str
    unsupported: str | None = None
    finite: bool = False


def to_onnx_bytes(module: nn.Module, example: tuple[torch.Tensor, ...], *, inputs: Axes,
                  outputs: Axes, quiet: Quiet = ()) -> bytes:
    """``module`` traced on ``example`` by the TorchScript exporter (opset :data:`OPSET`,
    constants folded), as the bytes of an ONNX file.

    ``inputs`` and ``outputs`` name the graph's inputs and outputs and give their dynamic
    axes. The exporter's :data:`EXPORTER_NOISE` and the warnings in ``quiet`` (the module's
    own tracing chatter) are silenced.
    """
    with tempfile.TemporaryDirectory(prefix="audiogate-export-") as tmp, \
            warnings.catch_warnings():
        for category, message in (*EXPORTER_NOISE, *quiet):
            warnings.filterwarnings("ignore", message=message, category=category)
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(module, example, path, dynamo=False, opset_version=OPSET,
                          input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes={name: dict(axes) for name, axes in
                                        (*inputs.items(), *outputs.items())},
                          do_constant_folding=True)
        return path.read_bytes()


def with_metadata(model: bytes, *, kind: OnnxFormat, metadata: Mapping[str, str]) -> bytes:
    """The ONNX file ``model``, checked by the ONNX checker and carrying ``kind``'s format and
    version then ``metadata`` as ``audiogate.<key>`` properties (producer ``audiogate``)."""
    import onnx  # local: optional dependency

    proto = onnx.load_from_string(model)
    onnx.checker.check_model(proto)
    stamped = {"format": kind.format, "version": kind.version, **metadata,
               **graph_digests(proto.graph)}
    for key, value in stamped.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, value
    proto.producer_name = PRODUCER
    data: bytes = proto.SerializeToString()
    return data


def cpu_session(model: bytes | str | os.PathLike[str], *, threads: int = 0) -> Any:
    """An onnxruntime session of ``model`` (the file's bytes or its path) on the CPU, quiet
    below errors; ``threads``: intra-op threads (0 = onnxruntime's default, all cores)."""
    import onnxruntime as ort  # local: optional dependency

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model),
                                sess_options=options, providers=["CPUExecutionProvider"])


def read_metadata(model: bytes | str | os.PathLike[str], *, kind: OnnxFormat) -> dict[str, str]:
    """The audiogate metadata of a ``kind`` file (``model``: its bytes or its path), keys
    without the prefix; :class:`CheckpointError` in the words of ``kind`` if the file is
    missing, unreadable or another kind (or version) of file."""
    import onnx  # local: optional dependency

    label = IN_MEMORY if isinstance(model, bytes) else str(model)
    if not isinstance(model, bytes) and not Path(model).is_file():
        raise CheckpointError(kind.missing.format(path=label))
    try:
        proto = (onnx.load_from_string(model) if isinstance(model, bytes)
                 else onnx.load(label, load_external_data=False))
    except Exception as exc:  # onnx raises assorted protobuf/decode errors
        raise CheckpointError(f"{label}: not a readable ONNX file ({exc})") from None
    if kind.finite:
        _check_finite(proto, label=label)
    meta = {p.key[len(META_PREFIX):]: p.value for p in proto.metadata_props
            if p.key.startswith(META_PREFIX)}
    if meta.get("format") == kind.format and meta.get("version") == kind.version:
        _check_graph(proto, meta, label=label)
        return meta
    if meta.get("format") == kind.format and kind.unsupported is not None:
        raise CheckpointError(kind.unsupported.format(label=label, found=meta.get("version"),
                                                      version=kind.version))
    raise CheckpointError(kind.foreign.format(label=label,
                                              metadata=to_json(meta, indent=None)[:200]))


def onnx_format(model: str | os.PathLike[str]) -> str | None:
    """The ``format`` an audiogate ONNX file's metadata records (None for an ONNX file without
    audiogate metadata); :class:`CheckpointError` if it is missing or unreadable."""
    import onnx  # local: optional dependency

    if not Path(model).is_file():
        raise CheckpointError(f"ONNX model not found: {model} (write one with "
                              "`audiogate export --checkpoint CKPT --onnx PATH`)")
    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception as exc:  # onnx raises assorted protobuf/decode errors
        raise CheckpointError(f"{model}: not a readable ONNX file ({exc})") from None
    return next((p.value for p in proto.metadata_props if p.key == META_PREFIX + "format"),
                None)


def check_exported_from(model: str | os.PathLike[str], *, checkpoint: str | os.PathLike[str],
                        sha256: str) -> None:
    """:class:`CheckpointError` unless ``checkpoint`` exists and is the file the export
    ``model`` was made from (``sha256``: the hash its metadata records)."""
    if not Path(checkpoint).is_file():
        raise CheckpointError(f"checkpoint not found: {checkpoint}")
    if sha256_file(checkpoint) != sha256:
        raise CheckpointError(f"{model} was not exported from {checkpoint} (or the checkpoint "
                              "changed since); export it again with `audiogate export`")


GRAPH_DIGESTS = {"initializers_sha256": "weights (initializers)",
                 "nodes_sha256": "nodes, inputs or outputs"}
"""The metadata keys of :func:`graph_digests`, and what each covers, as errors name it."""


def graph_digests(graph: Any) -> dict[str, str]:
    """SHA-256 of an ONNX graph's parts: ``initializers_sha256`` over every initializer's
    name, type, shape and values (whatever their encoding in the file), ``nodes_sha256`` over
    the rest of the graph (nodes with their attributes, inputs, outputs, value infos)."""
    import onnx  # local: optional dependency

    weights = hashlib.sha256()
    for init in graph.initializer:
        values = np.ascontiguousarray(onnx.numpy_helper.to_array(init))
        weights.update(f"{init.name}\n{init.data_type}\n{list(init.dims)}\n".encode())
        weights.update(values.tobytes())
    rest = onnx.GraphProto()
    rest.CopyFrom(graph)
    del rest.initializer[:]
    return {"initializers_sha256": weights.hexdigest(),
            "nodes_sha256": hashlib.sha256(rest.SerializeToString(deterministic=True)).hexdigest()}


def _check_graph(proto: Any, meta: Mapping[str, str], *, label: str) -> None:
    """:class:`CheckpointError` naming the part of ``proto``'s graph whose SHA-256 is not the
    one its metadata recorded at export (an export without them is read unchecked)."""
    if not any(key in meta for key in GRAPH_DIGESTS):
        log.debug("%s: exported before audiogate recorded the graph's SHA-256; not checked",
                  label)
        return
    try:
        found = graph_digests(proto.graph)
    except Exception as exc:  # onnx raises assorted errors for unreadable tensors
        raise CheckpointError(f"{label}: cannot read its weights ({exc})") from None
    for key, part in GRAPH_DIGESTS.items():
        if meta.get(key) != found[key]:
            raise CheckpointError(
                f"{label}: its graph's {part} are not the ones exported with its metadata "
                "(SHA-256 differs): the file was edited, or holds another model's graph; "
                "export it again with `audiogate export`")


def _check_finite(proto: Any, *, label: str) -> None:
    """:class:`CheckpointError` naming the first floating-point initializer of ``proto`` that
    holds NaN or infinity (an export of a diverged checkpoint gives NaN verdicts)."""
    import onnx  # local: optional dependency

    for init in proto.graph.initializer:
        weights = onnx.numpy_helper.to_array(init)
        if np.issubdtype(weights.dtype, np.floating) and not np.isfinite(weights).all():
            raise CheckpointError(f"{label}: weights are not finite: initializer "
                                  f"'{init.name}' holds NaN or infinity")
