"""A third gate kind in one module: a loudness gate.

It allows a clip when its level (RMS in dB re full scale) reaches a level chosen on the
training clips, halfway between the two classes' median levels. Nothing is trained; yet it
is a gate like the others: ``audiogate train --model loudness`` makes a run folder with its
split, ``best.pt``, test report and report page, and ``audiogate.load``, ``predict``,
``evaluate``, ``scan`` and ``serve`` use it unchanged. Importing this module registers it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audiogate.config import AUGMENT, HARDWARE, TRAINING, VOICE, Config, section_fields
from audiogate.core.checkpoint import StoredGate, save_gate
from audiogate.core.decision import Decision
from audiogate.core.gate import ExportReport, Gate, GateKind
from audiogate.core.runs import StatusFile, TrainResult, new_run, new_run_id, write_metrics
from audiogate.data.decode import ClipArrays, decode_clips
from audiogate.data.discover import discover, write_skipped
from audiogate.data.split import Split, make_split, write_split
from audiogate.errors import ConfigError
from audiogate.gates.base import WindowedGate
from audiogate.gates.registry import register_gate
from audiogate.reporting.evaluate import test_report

KIND = "loudness"
SLOPE_DB = 3.0
"""dB over which P(allowed) goes from 0.27 to 0.73 around the chosen level."""


def level_db(waves: np.ndarray) -> np.ndarray:
    """RMS level in dB re full scale of each row ``[shape=(n, samples)]`` -> ``[shape=(n,)]``."""
    rms = np.sqrt(np.mean(np.square(waves, dtype=np.float64), axis=-1))
    return 20 * np.log10(np.maximum(rms, 1e-10))


class LoudnessGate(WindowedGate):
    """P(allowed) = sigmoid((level - chosen level) / SLOPE_DB), per window, pooled per clip."""

    kind = KIND
    backend = "numpy"

    def __init__(self, stored: StoredGate, *, workers: int = 1) -> None:
        config = stored.config
        super().__init__(classes=stored.classes, features=config.features(), epoch=None,
                         metrics=stored.metrics, max_clip_s=config.max_clip_s,
                         decision=Decision(stored.classes, threshold=stored.threshold,
                                           pooling=config.clip_pooling),
                         workers=workers)
        self.stored = stored

    def _batch_probabilities(self, x: np.ndarray) -> np.ndarray:
        allowed = 1 / (1 + np.exp(-(level_db(x) - self.stored.body["level_db"]) / SLOPE_DB))
        pos = self.decision.positive or 1
        probs = np.empty((len(x), 2), np.float32)
        probs[:, pos], probs[:, 1 - pos] = allowed, 1 - allowed
        return probs

    def save(self, path: str | os.PathLike[str]) -> None:
        save_gate(path, self.stored)

    def export(self, out: str | os.PathLike[str], *, source: Path,
               tolerance: float | None = None) -> ExportReport:
        raise ConfigError("the loudness gate has no ONNX export")


@register_gate
class LoudnessKind(GateKind):
    """``model = "loudness"``."""

    name = KIND
    ignores = section_fields(AUGMENT, TRAINING, HARDWARE, VOICE)
    onnx_format = "audiogate.loudness-onnx"  # it writes none

    def models(self) -> tuple[str, ...]:
        return (KIND,)

    def prepare(self, config: Config, *, progress: bool = True) -> tuple[Split, ClipArrays]:
        found = discover(config.data)
        split = make_split(found.clips, test_size=config.test_size, val_size=config.val_size,
                           seed=config.seed, balance_by="none")
        arrays, _ = decode_clips(split.train, sr=config.sr, n_keep=config.features().n_samples,
                                 workers=config.workers, progress=progress)
        return split, arrays

    def fit(self, config: Config, *, progress: bool = True,
            callbacks: Sequence[Any] = ()) -> TrainResult:
        began = time.perf_counter()
        split, train = self.prepare(config, progress=progress)
        levels = level_db(train.waves)
        chosen = float(np.mean([np.median(levels[train.labels == k]) for k in (0, 1)]))
        run = new_run(config)
        status = StatusFile(run, run_id=new_run_id())
        status.running()
        classes = discover(config.data).classes
        write_split(split, run.split, classes=classes)
        write_skipped([], run.skipped)
        save_gate(run.best, StoredGate(kind=KIND, config=config, classes=classes,
                                       body={"level_db": chosen}, run_id=status.run_id))
        gate = LoudnessGate(StoredGate(kind=KIND, config=config, classes=classes,
                                       body={"level_db": chosen}))
        report, _ = test_report(run, gate, split.test, title="Test set, loudness gate")
        fit = {"level_db": chosen, "seconds": time.perf_counter() - began}
        write_metrics(run, kind=KIND, classes=classes, epochs=[], best_epoch=None,
                      best_val_f1=float("nan"), fit=fit)
        status.ended(stop_reason="level chosen", epochs_done=0)
        return TrainResult(run=run, best_epoch=None, best_val_f1=float("nan"), epochs_done=0,
                           stop_reason="level chosen", test_report=report)

    def load(self, stored: StoredGate, *, path: Path, workers: int = 1) -> Gate:
        return LoudnessGate(stored, workers=workers)

    def load_onnx(self, path: Path, *, workers: int = 1,
                  checkpoint: Path | None = None) -> Gate:
        raise ConfigError("the loudness gate has no ONNX export")
