"""The ``network`` gate kind: a network trained over epochs behind the log-mel front end.

* :mod:`.classifier`: :class:`~.classifier.Classifier`, the gate run with PyTorch;
* :mod:`.onnx`: the ONNX export (front end included) and :class:`~.onnx.OnnxClassifier`;
* :mod:`.fit`: a run (data, the training loop and its callbacks, the operating point, the
  test report) and ``--resume``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...config import VOICE, Config, section_fields
from ...core.checkpoint import StoredGate
from ...core.gate import GateKind
from ...core.runs import TrainResult
from ...data.prepare import PreparedData, prepare_data, resolve_window
from ...models import model_names
from ...models.checkpoint import KIND, Checkpoint
from ..registry import register_gate
from .classifier import Classifier
from .fit import fit_network, resume_network
from .onnx import FORMAT, OnnxClassifier

__all__ = ["Classifier", "NetworkKind", "OnnxClassifier"]


@register_gate
class NetworkKind(GateKind):
    """A registered network (:mod:`audiogate.models`) trained on the run's clips."""

    name = KIND
    ignores = section_fields(VOICE)
    onnx_format = FORMAT.format

    def models(self) -> tuple[str, ...]:
        return model_names()

    def prepare(self, config: Config, *, progress: bool = True) -> PreparedData:
        return prepare_data(resolve_window(config), progress=progress)

    def fit(self, config: Config, *, progress: bool = True,
            callbacks: Sequence[Any] = ()) -> TrainResult:
        return fit_network(config, progress=progress, callbacks=callbacks)

    def resume(self, run_dir: Path, *, progress: bool = True, callbacks: Sequence[Any] = (),
               **changes: Any) -> TrainResult:
        return resume_network(run_dir, progress=progress, callbacks=callbacks, **changes)

    def load(self, stored: StoredGate, *, path: Path, workers: int = 1) -> Classifier:
        return Classifier(Checkpoint.of(stored, where=str(path)), workers=workers)

    def load_onnx(self, path: Path, *, workers: int = 1) -> OnnxClassifier:
        return OnnxClassifier(path, workers=workers)
