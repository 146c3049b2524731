"""audiogate: turn a folder of labelled audio clips into a trained, evaluated, deployable
classifier.

>>> import audiogate                                               # doctest: +SKIP
>>> result = audiogate.train(audiogate.Config(data="dataset"))     # doctest: +SKIP
>>> gate = audiogate.load(result.run.best)                         # doctest: +SKIP
>>> gate.predict("clip.wav").label                                 # doctest: +SKIP
'allowed'

Layers, top to bottom (each imports only from those below it): :mod:`audiogate.cli`,
:mod:`audiogate.deploy`, :mod:`audiogate.gates` (the gate kinds and their registry),
:mod:`audiogate.training` and :mod:`audiogate.speech`, :mod:`audiogate.reporting`,
:mod:`audiogate.data` and :mod:`audiogate.models`, :mod:`audiogate.features`,
:mod:`audiogate.core` (the Gate interface, decisions, checkpoints, run folders),
:mod:`audiogate.config`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import AugmentConfig, Config, FeatureConfig
from .core.version import __version__
from .errors import AudioError, AudiogateError, CheckpointError, ConfigError, DataError

if TYPE_CHECKING:
    from .core.gate import Gate, Prediction
    from .core.runs import TrainResult
    from .data.prepare import PreparedData, prepare_data
    from .gates import evaluate, load, resume, train
    from .gates.network import Classifier

_LAZY = {
    "train": "gates", "resume": "gates", "evaluate": "gates", "load": "gates",
    "Gate": "core.gate", "Prediction": "core.gate", "TrainResult": "core.runs",
    "Classifier": "gates.network", "prepare_data": "data.prepare",
    "PreparedData": "data.prepare",
}
"""Imported on first use, so ``import audiogate`` (and the CLI) stays quick."""

__all__ = [
    "AudioError", "AudiogateError", "AugmentConfig", "CheckpointError", "Classifier", "Config",
    "ConfigError", "DataError", "FeatureConfig", "Gate", "Prediction", "PreparedData",
    "TrainResult", "__version__", "evaluate", "load", "prepare_data", "resume", "train",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'audiogate' has no attribute {name!r}")
