"""The run folder: where one training run keeps everything it produces.

::

    runs/<name>/
      config.toml          the full Config (reload with --config)
      split.csv            subset,path,label,class for every clip used
      skipped.csv          path,reason for every file left out
      metrics.json         one record per finished epoch + best epoch
      test_metrics.json    final report of the best (validation) model on the test split
      test_predictions.csv its verdict on every test clip (path, true, predicted, p_<class>)
      report.html          the run on one self-contained page (audiogate report rewrites it)
      models/              model_epoch_NNN.pt, best.pt, last.pt (resumable)
      outputs/             curves.png, confusion_test.png, roc_test.png, det_test.png
      tensorboard/         TensorBoard event files (when tensorboard is on)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..config import Config
from ..errors import ConfigError
from ..files import write_text


@dataclass(frozen=True)
class RunPaths:
    """Paths inside one run folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def split(self) -> Path:
        return self.root / "split.csv"

    @property
    def skipped(self) -> Path:
        return self.root / "skipped.csv"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def test_report(self) -> Path:
        return self.root / "test_metrics.json"

    @property
    def test_predictions(self) -> Path:
        return self.root / "test_predictions.csv"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def best(self) -> Path:
        return self.models / "best.pt"

    @property
    def last(self) -> Path:
        return self.models / "last.pt"

    def epoch(self, n: int) -> Path:
        return self.models / f"model_epoch_{n:03d}.pt"

    @property
    def curves(self) -> Path:
        return self.outputs / "curves.png"

    @property
    def confusion(self) -> Path:
        return self.outputs / "confusion_test.png"


def check_run_name(config: Config) -> None:
    """Refuse a ``name`` whose run folder already holds a finished epoch, before any work."""
    root = Path(config.runs_dir) / config.name
    if config.name and RunPaths(root).last.exists():
        raise ConfigError(f"run folder {root} already exists; pass --resume {root} to "
                          "continue it, or choose another --name")


def new_run(config: Config) -> RunPaths:
    """Create ``runs_dir/name`` (a timestamp when ``name`` is empty) and save the config.

    A named folder is reused only if it holds no finished epoch (``models/last.pt``), e.g.
    after a run that failed on its data; a run with trained epochs is never overwritten.
    """
    base = Path(config.runs_dir)
    check_run_name(config)
    if config.name:
        root = base / config.name
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        root, k = base / stamp, 1
        while root.exists():
            k += 1
            root = base / f"{stamp}-{k}"
    paths = RunPaths(root)
    paths.models.mkdir(parents=True, exist_ok=True)
    paths.outputs.mkdir(parents=True, exist_ok=True)
    write_text(paths.config, config.to_toml())
    return paths
