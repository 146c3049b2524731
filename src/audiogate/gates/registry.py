"""The gate kinds by name: which kind a config asks for, and which one reads a file.

>>> @register_gate                                               # doctest: +SKIP
... class MyKind(GateKind):
...     name = "mine"
...     ...

A checkpoint records its kind (:mod:`audiogate.core.checkpoint`) and an ONNX export its
format (:mod:`audiogate.core.onnx`), so :func:`load` hands each file to the kind that wrote it;
a config's ``model`` names a model that one kind serves (:func:`kind_for`). Nothing else in
audiogate asks which kind a gate is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

from ..config import Config
from ..core.checkpoint import read_gate
from ..core.gate import Gate, GateKind
from ..core.onnx import check_exported_from, onnx_format
from ..errors import CheckpointError, ConfigError

_KINDS: dict[str, GateKind] = {}

K = TypeVar("K", bound=type[GateKind])

BACKENDS = ("torch", "onnx")


def register_gate(cls: K) -> K:
    """Class decorator: make a :class:`~audiogate.core.gate.GateKind` known by its ``name``."""
    if cls.name in _KINDS:
        raise ValueError(f"a gate kind named {cls.name!r} is already registered")
    _KINDS[cls.name] = cls()
    return cls


def kinds() -> tuple[GateKind, ...]:
    """Every registered kind, in registration order."""
    return tuple(_KINDS.values())


def kind_named(name: str, *, where: object = "this file") -> GateKind:
    """The kind registered as ``name``; :class:`CheckpointError` (a file of a kind this
    audiogate does not know) otherwise."""
    try:
        return _KINDS[name]
    except KeyError:
        raise CheckpointError(f"{where} holds a gate of kind {name!r}, which this audiogate "
                              f"does not know (it knows: {', '.join(_KINDS)}); upgrade "
                              "audiogate or install the package that adds it") from None


def kind_for(config: Config) -> GateKind:
    """The kind that serves ``config.model``; :class:`ConfigError` naming every known model
    otherwise (checked before any work)."""
    for kind in _KINDS.values():
        if kind.claims(config.model):
            return kind
    known = ", ".join(m for kind in _KINDS.values() for m in kind.models())
    raise ConfigError(f"config field 'model': unknown model {config.model!r}; known models: "
                      f"{known}")


def load(path: str | os.PathLike[str], *, backend: str | None = None,
         onnx: str | os.PathLike[str] | None = None, threshold: float | None = None,
         workers: int = 1) -> Gate:
    """A ready-to-use gate from a checkpoint (``.pt``) or an ONNX export (``.onnx``), of any
    kind.

    ``backend``: ``"torch"`` runs a checkpoint with PyTorch; ``"onnx"`` runs an export with
    onnxruntime (needs ``audiogate[onnx]``). ``None`` picks by the file: ONNX for ``.onnx``,
    PyTorch otherwise. With ``backend="onnx"`` and a checkpoint ``path``, the export is
    ``onnx`` (default: ``path`` with ``.onnx``) and it is refused unless it was exported from
    that very checkpoint. Every gate has the same ``predict``/``predict_many``/
    ``probabilities``. ``threshold`` replaces the gate's stored threshold (the operating point
    chosen on validation). ``workers``: decoding processes for ``predict_many`` over files.
    """
    path = Path(path)
    is_onnx = path.suffix.lower() == ".onnx"
    backend = backend or ("onnx" if is_onnx else "torch")
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        if is_onnx:
            raise ConfigError(f"{path} is an ONNX export; load it with backend='onnx'")
        stored = read_gate(path)
        gate = kind_named(stored.kind, where=path).load(stored, path=path, workers=workers)
    else:
        model = path if is_onnx else Path(onnx or path.with_suffix(".onnx"))
        gate = _onnx_kind(model).load_onnx(model, workers=workers)
        if not is_onnx:
            check_exported_from(model, checkpoint=path, sha256=str(gate.exported_from))
    return gate if threshold is None else gate.with_threshold(threshold)


def _onnx_kind(model: Path) -> GateKind:
    """The kind whose export ``model`` is (by its metadata's format)."""
    found = onnx_format(model)
    for kind in _KINDS.values():
        if kind.onnx_format == found:
            return kind
    raise CheckpointError(f"{model}: an ONNX file without audiogate metadata; export it with "
                          "`audiogate export`")
