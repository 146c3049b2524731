"""The ``voice`` gate kind: the allowed voices enrolled, scored by a pretrained speaker encoder.

No network is trained: the clips are embedded by the GE2E speaker encoder (resemblyzer's
weights, :mod:`audiogate.speech`), the training ``allowed`` voices are enrolled, and the
threshold is chosen on validation clips plus impostor voices. Needs the ``voice`` extra.

* :mod:`.data`: the run's clips, embedded (cached) and split;
* :mod:`.fit`: enrolment, the optional head, the threshold, the run folder;
* :mod:`.checkpoint`: the kind's checkpoint body (voices, cohort, head);
* :mod:`.base`, :mod:`.classifier`, :mod:`.onnx`: the gate with PyTorch (enrolment at run
  time) and its ONNX export.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...config import AUGMENT, FRONT_END, HARDWARE, TRAINING, Config, section_fields
from ...core.checkpoint import StoredGate
from ...core.decision import POSITIVE_NAME
from ...core.gate import GateKind
from ...core.runs import TrainResult
from ...errors import ConfigError
from ..registry import register_gate
from .checkpoint import KIND, VOICE_MODELS, VoiceCheckpoint
from .classifier import VoiceClassifier
from .data import VoiceData, prepare_voice_data
from .fit import fit_voice
from .onnx import FORMAT, OnnxVoiceClassifier

__all__ = ["OnnxVoiceClassifier", "VoiceClassifier", "VoiceKind"]


@register_gate
class VoiceKind(GateKind):
    """Enrolled voices against a speaker encoder's embeddings (``model = "ge2e"``)."""

    name = KIND
    ignores = ("sr", "n_mels", "fixed_length", "batch_size", "lr", "weight_decay", "balance",
               *section_fields(FRONT_END, AUGMENT, TRAINING, HARDWARE))
    """The speaker encoder has its own fixed front end (16 kHz, 40 mel bands), nothing is
    trained, and every training clip of an allowed voice is enrolled (no balancing)."""
    onnx_format = FORMAT.format
    positive = POSITIVE_NAME
    """A voice gate accepts the enrolled voices: ``allowed/``."""

    def models(self) -> tuple[str, ...]:
        return VOICE_MODELS

    def prepare(self, config: Config, *, progress: bool = True) -> VoiceData:
        return prepare_voice_data(config, progress=progress)

    def fit(self, config: Config, *, progress: bool = True,
            callbacks: Sequence[Any] = ()) -> TrainResult:
        if callbacks:
            raise ConfigError("a voice gate run has no training loop to listen to; train it "
                              "without callbacks")
        return fit_voice(config, progress=progress)

    def resume(self, run_dir: Path, *, progress: bool = True, callbacks: Sequence[Any] = (),
               **changes: Any) -> TrainResult:
        raise ConfigError(f"{run_dir} is a voice gate run: it trains no epochs, so there is "
                          "nothing to resume; enrol or remove voices with `audiogate enroll`, "
                          "or start a new run")

    def load(self, stored: StoredGate, *, path: Path, workers: int = 1) -> VoiceClassifier:
        return VoiceClassifier(VoiceCheckpoint.of(stored, where=str(path)), workers=workers)

    def load_onnx(self, path: Path, *, workers: int = 1) -> OnnxVoiceClassifier:
        return OnnxVoiceClassifier(path, workers=workers)
