"""audiogate: turn a folder of labelled audio clips into a trained, evaluated, deployable
classifier.

>>> import audiogate                                               # doctest: +SKIP
>>> result = audiogate.train(audiogate.Config(data="dataset"))     # doctest: +SKIP
>>> gate = audiogate.load(result.run.best)                         # doctest: +SKIP
>>> gate.predict("clip.wav").label                                 # doctest: +SKIP
'allowed'

Subpackages: :mod:`audiogate.data`, :mod:`audiogate.features`, :mod:`audiogate.models`,
:mod:`audiogate.training`, :mod:`audiogate.deploy`, :mod:`audiogate.reporting`.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import AugmentConfig, Config, FeatureConfig
from .deploy.inference import Classifier, Prediction, load
from .errors import AudioError, AudiogateError, CheckpointError, ConfigError, DataError

__version__ = "0.2.0"

_LAZY = {
    "train": "training.api", "resume": "training.api", "TrainResult": "training.api",
    "prepare_data": "data.prepare", "PreparedData": "data.prepare",
    "evaluate": "reporting.evaluate",
}
"""Imported on first use, so ``import audiogate`` (and the CLI) stays quick."""

__all__ = [
    "AudioError", "AudiogateError", "AugmentConfig", "CheckpointError", "Classifier", "Config",
    "ConfigError", "DataError", "FeatureConfig", "Prediction", "PreparedData", "TrainResult",
    "__version__", "evaluate", "load", "prepare_data", "resume", "train",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'audiogate' has no attribute {name!r}")
