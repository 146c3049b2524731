"""Training a network: the loop and what listens to it.

* :mod:`.trainer`: :class:`Trainer`, the loop, which emits events and writes no file;
* :mod:`.callbacks`: checkpoints, metrics.json, curves, log, early stopping, status, report;
* :mod:`.tensorboard`: TensorBoard event files;
* :mod:`.regularize`: mixup, SpecAugment, the learning-rate schedule;
* :mod:`.signals`: Ctrl+C / SIGTERM handling; :mod:`.prefetch`: batch preparation thread;
* :mod:`.device`: device resolution, autocast, gradient scaling;
* :mod:`.distributed`: torchrun / torch.distributed: process group, rank 0's decisions,
  per-rank shards of each batch, DDP, the ``--nproc`` launcher.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .trainer import Callback, FitResult, Trainer, TrainState

_LAZY = {"Callback": "trainer", "FitResult": "trainer", "Trainer": "trainer",
         "TrainState": "trainer"}
"""Imported on first use: the device and distributed helpers do not pull in the loop, its
plots (matplotlib) and the data pipeline (scikit-learn)."""

__all__ = ["Callback", "FitResult", "TrainState", "Trainer"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
