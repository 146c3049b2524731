"""Gates: one interface (:class:`~audiogate.core.gate.Gate`) for every kind, chosen by a
registry.

* :mod:`.registry`: the kinds by name; :func:`load` reads any checkpoint or ONNX export;
* :mod:`.api`: :func:`train`, :func:`resume`, :func:`evaluate` for any kind;
* :mod:`.base`: what the kinds share to judge audio (decoding, windows, pooling);
* :mod:`.network`: a network trained over epochs (``model = tcresnet | bcresnet | simple``);
* :mod:`.voice`: enrolled voices scored by a pretrained speaker encoder (``model = ge2e``).

A new kind is one module with a :class:`~audiogate.core.gate.GateKind` decorated by
:func:`~.registry.register_gate` and its :class:`~audiogate.core.gate.Gate`, imported below.
"""

from . import network, voice
from .api import EvalResult, evaluate, resume, train, write_report
from .registry import kind_for, kind_named, kinds, load, register_gate

__all__ = ["EvalResult", "evaluate", "kind_for", "kind_named", "kinds", "load", "network",
           "register_gate", "resume", "train", "voice", "write_report"]
