"""The Gate interface: what every kind of gate is, however it was made.

A *gate* turns audio into a verdict. Kinds differ in how they are made (a network trained
over epochs; a voice gate that enrols the allowed voices with a pretrained speaker encoder)
but are used the same way, so everything that uses one (``predict``, ``evaluate``,
``scan``, ``serve``, the reports) holds a :class:`Gate` and never asks which kind it is.

A kind is two classes, registered by name in :mod:`audiogate.gates.registry`:

* a :class:`GateKind`, how it is made: which ``Config.model`` values it serves
  (:meth:`GateKind.claims`), the config fields it does not read (:attr:`GateKind.ignores`),
  the run's data (:meth:`GateKind.prepare`), a whole run (:meth:`GateKind.fit`,
  :meth:`GateKind.resume`), and loading (:meth:`GateKind.load` from a checkpoint,
  :meth:`GateKind.load_onnx` from an export);
* its :class:`Gate` (one class per backend), how it is used: :meth:`Gate.predict_many` and
  :meth:`Gate.predict`, :meth:`Gate.probabilities` and :meth:`Gate.clip_probabilities`,
  :meth:`Gate.save`, :meth:`Gate.export`, and for a gate with enrolled voices
  :meth:`Gate.enroll` / :meth:`Gate.remove`.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..config import Config, FeatureConfig
from ..errors import AudioError, ConfigError
from .decision import Decision, judged_samples, stored_positive

if TYPE_CHECKING:
    from .checkpoint import StoredGate
    from .runs import TrainResult

AudioInput = str | os.PathLike[str] | np.ndarray
"""A file to decode, or an array of samples (with its rate)."""


@dataclass(frozen=True)
class Prediction:
    """The verdict on one input. ``error`` is set (and ``label`` is None) when it failed.

    For a two-class gate, ``positive`` is the class it accepts, ``score`` is ``P(positive)``
    and ``threshold`` the decision threshold (None: the most probable class wins).
    """

    source: str
    label: str | None
    index: int | None
    probabilities: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    score: float | None = None
    threshold: float | None = None
    n_windows: int = 0
    positive: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def confidence(self) -> float:
        """Probability of the predicted class (0 for a failed input)."""
        return self.probabilities.get(self.label, 0.0) if self.label else 0.0

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "label": self.label, "index": self.index,
                "confidence": self.confidence, "probabilities": self.probabilities,
                "positive": self.positive, "score": self.score, "threshold": self.threshold,
                "n_windows": self.n_windows, "error": self.error}


@dataclass(frozen=True)
class ExportReport:
    """What an ONNX export wrote (``path``, ``bytes``), what its graph computes (``graph``,
    for people), and how closely onnxruntime reproduces PyTorch on the probe clips: the
    largest absolute difference of ``compared`` (``logit``, ``score``) over
    ``n_probe_clips``."""

    path: str
    bytes: int
    graph: str
    compared: str
    max_abs_diff: float
    n_probe_clips: int

    def details(self) -> str:
        """More of the comparison, for people (a kind's report adds its own figures)."""
        return ""

    def summary(self) -> str:
        """Two lines for people: what was written; its parity with PyTorch."""
        return (f"wrote {self.path} ({self.bytes / 1e6:.1f} MB): {self.graph}\n"
                f"onnxruntime vs PyTorch on {self.n_probe_clips} probe clips: max "
                f"|{self.compared} diff| {self.max_abs_diff:.2e}{self.details()}")


@dataclass(frozen=True)
class Enrolment:
    """What :meth:`Gate.enroll` did: the voice, the clips used, those left out as
    ``(source, reason)``, and the voice's enrolment checks (``quality``: clips without
    speech, outliers, seconds of speech, expected false-reject rate; see
    :meth:`audiogate.speech.quality.VoiceCheck.as_dict`), found before anything is saved."""

    name: str
    n_clips: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    quality: dict[str, Any] | None = None


class Gate(ABC):
    """A gate: classes, a front end it reports, a decision, and verdicts on audio."""

    kind: ClassVar[str]
    """The name of its :class:`GateKind`, stored in its checkpoints."""
    backend: str = "none"
    exported_from: str | None = None
    """The SHA-256 of the checkpoint this gate was exported from (a gate run from an export)."""
    scan_by_speech: bool = False
    """Whether ``scan`` judges this gate's recordings per speech segment by default (its
    scores are of voices) rather than window by window."""
    operating_point: str | None = None
    """The rule its threshold was chosen by (``far=0.02``, ``eer``, ...) as its checkpoint
    records it; None when unknown, or once :meth:`with_threshold` has set another."""

    def __init__(self, *, classes: Sequence[str], features: FeatureConfig, epoch: int | None,
                 metrics: Mapping[str, Any], decision: Decision | None = None,
                 max_clip_s: float = 10.0, workers: int = 1) -> None:
        self.classes = tuple(classes)
        self.features = features
        self.epoch = epoch
        self.metrics = dict(metrics)
        self.decision = decision or Decision(self.classes,
                                             positive_class=stored_positive(self.classes))
        self.max_clip_s = max_clip_s
        self.workers = workers

    @abstractmethod
    def probabilities(self, waves: np.ndarray) -> np.ndarray:
        """Windows at ``features.sr`` ``[shape=(batch, n)]`` -> ``[shape=(batch, n_classes)]``."""

    @abstractmethod
    def clip_probabilities(self, waves: Sequence[np.ndarray]) -> list[tuple[np.ndarray, int]]:
        """Whole clips (each ``[shape=(n,)]`` at ``features.sr``) -> pooled probabilities
        ``[shape=(n_classes,)]`` and the number of units judged, per clip."""

    @abstractmethod
    def predict_many(self, items: Sequence[AudioInput], *, sr: int | None = None,
                     progress: bool = False) -> list[Prediction]:
        """Judge many files and/or arrays (``sr`` for arrays); a bad input gets a
        :class:`Prediction` with ``error`` set, the rest go on. Order is kept."""

    def predict(self, audio: AudioInput, *, sr: int | None = None) -> Prediction:
        """Judge one file or one array (``sr`` required for arrays).

        Raises :class:`~audiogate.errors.AudioError` if the input is unusable.
        """
        result = self.predict_many([audio], sr=sr)[0]
        if result.error is not None:
            raise AudioError(result.source, result.error)
        return result

    @abstractmethod
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the gate as it is now as a checkpoint (atomically)."""

    @abstractmethod
    def export(self, out: str | os.PathLike[str], *, source: Path,
               tolerance: float | None = None) -> ExportReport:
        """Write an ONNX export of this gate (loaded from checkpoint ``source``, whose hash
        the export carries), checked against PyTorch within ``tolerance``."""

    @property
    def clip_limit(self) -> int:
        """Samples of a clip that judge it (:func:`~audiogate.core.decision.judged_samples`)."""
        return judged_samples(window=self.features.n_samples, sr=self.features.sr,
                              max_clip_s=self.max_clip_s)

    @property
    def threshold(self) -> float | None:
        return self.decision.threshold

    def with_threshold(self, threshold: float | None) -> Gate:
        """This gate with another decision threshold (``None``: argmax)."""
        if threshold != self.decision.threshold:
            self.operating_point = None
        self.decision = replace(self.decision, threshold=threshold)
        return self

    def describe(self) -> dict[str, Any]:
        """Kind, classes, front end, epoch, validation metric, decision and backend."""
        return {"kind": self.kind, "classes": list(self.classes),
                "features": asdict(self.features),
                "window_s": self.features.n_samples / self.features.sr,
                "max_clip_s": self.max_clip_s, "epoch": self.epoch,
                "val_f1": self.metrics.get("val_f1"), "metrics": self.metrics,
                **self.decision.describe(), "backend": self.backend}

    # ----- enrolled voices (kinds that have them override these) -----
    enrolls: bool = False
    """Whether :meth:`enroll` and :meth:`remove` change this gate (a voice gate's checkpoint
    run with PyTorch)."""

    @property
    def voices(self) -> dict[str, int]:
        """Enrolled voice names and their clip counts (none for most kinds)."""
        return {}

    def enroll(self, name: str, items: Sequence[AudioInput], *, sr: int | None = None,
               replace_existing: bool = False) -> Enrolment:
        """Enrol voice ``name`` from audio, in place (kinds with enrolled voices only)."""
        raise ConfigError(f"this is a {self.kind} gate ({self.backend}): it has no enrolled "
                          "voices; only a voice gate checkpoint (--recipe voice, its .pt) "
                          "enrols voices")

    def remove(self, name: str) -> None:
        """Remove voice ``name``, in place (kinds with enrolled voices only)."""
        self.enroll(name, [])

    @contextlib.contextmanager
    def changes(self) -> Iterator[None]:
        """Changes made inside (enrolments, removals) are undone if it raises."""
        yield


class GateKind(ABC):
    """How one kind of gate is made and loaded (see the module docstring). Registered with
    :func:`audiogate.gates.registry.register_gate`; its :attr:`name` is what checkpoints
    and exports of the kind record."""

    name: ClassVar[str]
    ignores: ClassVar[tuple[str, ...]] = ()
    """Config fields this kind does not read: one the user set draws a warning in the run
    log (:func:`audiogate.config.section_fields` names a section's)."""
    onnx_format: ClassVar[str]
    """The ``format`` its ONNX exports carry in their metadata."""
    positive: ClassVar[str | None] = None
    """The class every gate of this kind accepts (None: ``Config.positive_class`` decides,
    :func:`~audiogate.core.decision.choose_positive`)."""

    @abstractmethod
    def models(self) -> tuple[str, ...]:
        """The ``Config.model`` values this kind serves."""

    def claims(self, model: str) -> bool:
        """Whether ``Config.model = model`` is a gate of this kind."""
        return model in self.models()

    @abstractmethod
    def prepare(self, config: Config, *, progress: bool = True) -> Any:
        """The run's data, as :meth:`fit` uses it (discovered, decoded or embedded, split)."""

    @abstractmethod
    def fit(self, config: Config, *, progress: bool = True,
            callbacks: Sequence[Any] = ()) -> TrainResult:
        """A whole run: the run folder, the data, the fit, ``best.pt`` and the test report."""

    def resume(self, run_dir: Path, *, progress: bool = True, callbacks: Sequence[Any] = (),
               **changes: Any) -> TrainResult:
        """Continue a stopped run (a kind without epochs refuses)."""
        raise ConfigError(f"{run_dir} is a {self.name} gate run: it trains no epochs, so "
                          "there is nothing to resume; start a new run")

    @abstractmethod
    def load(self, stored: StoredGate, *, path: Path, workers: int = 1) -> Gate:
        """The gate a checkpoint of this kind holds (read from ``path``)."""

    @abstractmethod
    def load_onnx(self, path: Path, *, workers: int = 1) -> Gate:
        """The gate an ONNX export of this kind holds (its :attr:`Gate.exported_from` set)."""
