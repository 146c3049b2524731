"""audiogate: turn a folder of labelled audio clips into a trained, evaluated, deployable
classifier."""

from .config import AugmentConfig, Config, FeatureConfig
from .errors import AudioError, AudiogateError, CheckpointError, ConfigError, DataError
from .inference import Classifier, Prediction, load

__version__ = "0.1.0"

__all__ = [
    "AudioError", "AudiogateError", "AugmentConfig", "CheckpointError", "Classifier", "Config",
    "ConfigError", "DataError", "FeatureConfig", "Prediction", "__version__", "load",
]
