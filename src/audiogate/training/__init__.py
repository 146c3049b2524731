"""Training: the loop, its callbacks, checkpoints and the run folder.

* :mod:`.api`: :func:`train` and :func:`resume`, what the CLI calls;
* :mod:`.trainer`: :class:`Trainer`, the loop, which emits events and writes no file;
* :mod:`.callbacks`: checkpoints, metrics.json, curves, log, early stopping, test report;
* :mod:`.checkpoint`: the checkpoint format (safe loading, atomic writing);
* :mod:`.runs`: the layout of a run folder;
* :mod:`.signals`: Ctrl+C / SIGTERM handling; :mod:`.prefetch`: batch preparation thread;
* :mod:`.device`: device resolution, autocast, gradient scaling;
* :mod:`.distributed`: torchrun / torch.distributed: process group, rank 0's decisions,
  per-rank shards of each batch, DDP, the ``--nproc`` launcher.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import TrainResult, resume, train
    from .callbacks import Callback
    from .trainer import FitResult, Trainer, TrainState

_LAZY = {"TrainResult": "api", "resume": "api", "train": "api", "Callback": "callbacks",
         "FitResult": "trainer", "Trainer": "trainer", "TrainState": "trainer"}
"""Imported on first use: loading a checkpoint (``.checkpoint``) for inference does not pull
in the loop, its plots (matplotlib) and the data pipeline (scikit-learn)."""

__all__ = ["Callback", "FitResult", "TrainResult", "TrainState", "Trainer", "resume", "train"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
