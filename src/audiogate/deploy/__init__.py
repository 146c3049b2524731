"""Deployment: judging new audio with a trained model, from Python, the CLI or HTTP.

* :mod:`.inference`: :func:`load` (a checkpoint or an ONNX export) -> a classifier with
  ``predict`` / ``predict_many`` / ``probabilities``;
* :mod:`.onnx`: export to ONNX (front end included) and the onnxruntime classifier;
* :mod:`.scan`: long recordings, window by window, merged into segments;
* :mod:`.serve`: the HTTP service and its web page (``static/``).

The optional dependencies (onnx/onnxruntime, fastapi/uvicorn) are imported only by
:mod:`.onnx` and :mod:`.serve`, and only when those are used.
"""

from .inference import BaseClassifier, Classifier, Prediction, expand_inputs, load

__all__ = ["BaseClassifier", "Classifier", "Prediction", "expand_inputs", "load"]
