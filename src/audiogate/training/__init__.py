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

from .api import TrainResult, resume, train
from .callbacks import Callback
from .trainer import FitResult, Trainer, TrainState

__all__ = ["Callback", "FitResult", "TrainResult", "TrainState", "Trainer", "resume", "train"]
