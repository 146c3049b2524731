"""Benchmark: what seeing a run costs: report.html, TensorBoard event files, `audiogate runs`.

    python -m bench.report                    # about two minutes on 2 cores
    python -m bench.report --n-per-class 150 --epochs 3 --copies 100

Trains one run of the default configuration (the specification's SimpleConvNet, 1.99 s
window; TensorBoard on, ``report_errors`` 12) on the benchmark data set (1-5 s clips at mixed
sample rates, :mod:`bench.dataset`), timing each end-of-run callback against the run's wall
time. Then times ``audiogate report`` rewriting the page (median of 3), breaks the page's size
down (embedded audio, images, the rest), and times ``audiogate runs`` over ``--copies``
copies of the run folder (JSON and TOML files only).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from audiogate.config import Config
from audiogate.gates import train
from audiogate.gates.network.fit import TestReport
from audiogate.reporting.report import write_report
from audiogate.reporting.run_table import list_runs
from audiogate.training.callbacks import HtmlReport
from audiogate.training.tensorboard import TensorBoardLogger

from .dataset import make_dataset

RUN_FILES = ("config.toml", "metrics.json", "test_metrics.json", "status.json")


class Timer:
    """Wraps methods of callback classes and adds up the seconds spent in each."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, cls: type, method: str, label: str) -> None:
        original: Callable[..., Any] = getattr(cls, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - began

        setattr(cls, method, timed)


def _page_sizes(page: Path) -> dict[str, int]:
    text = page.read_text()
    audio = sum(len(m) for m in re.findall(r'src="data:audio/wav;base64,[^"]*"', text))
    images = sum(len(m) for m in re.findall(r'src="data:image/png;base64,[^"]*"', text))
    return {"audio": audio, "images": images, "rest": len(text) - audio - images,
            "clips": text.count("<audio")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-per-class", type=int, default=150)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--copies", type=int, default=100, help="run folders listed by runs")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        root = Path(tmp)
        make_dataset(root=root / "data", n_per_class=args.n_per_class)
        timer = Timer()
        timer.wrap(TestReport, "on_train_end", "test report (existing)")
        for method in ("on_train_begin", "on_epoch_end", "on_train_end"):
            timer.wrap(TensorBoardLogger, method, "TensorBoard (all events)")
        timer.wrap(HtmlReport, "on_train_end", "report.html")
        config = Config(data=str(root / "data"), runs_dir=str(root / "runs"), name="run",
                        max_epochs=args.epochs, patience=0, tensorboard="on")
        began = time.perf_counter()
        result = train(config, progress=False)
        wall = time.perf_counter() - began

        print(f"run: {2 * args.n_per_class} clips, {result.epochs_done} epochs, "
              f"{wall:.1f} s wall time")
        print(f"{'end-of-run work':<28}{'seconds':>9}{'share of run':>14}")
        for label, seconds in timer.seconds.items():
            print(f"{label:<28}{seconds:>9.2f}{100 * seconds / wall:>13.1f}%")

        rewrites = []
        for _ in range(3):
            t = time.perf_counter()
            page = write_report(result.run.root)
            rewrites.append(time.perf_counter() - t)
        sizes = _page_sizes(page)
        print(f"\naudiogate report (rewrite, median of 3): {statistics.median(rewrites):.2f} s")
        print(f"report.html: {page.stat().st_size / 1e6:.2f} MB with {sizes['clips']} clips; "
              f"audio {sizes['audio'] / 1e6:.2f} MB, images {sizes['images'] / 1e6:.2f} MB, "
              f"text {sizes['rest'] / 1e3:.0f} kB")
        events = sum(p.stat().st_size for p in result.run.tensorboard.iterdir())
        print(f"tensorboard/: {events / 1e3:.0f} kB")

        many = root / "many"
        for i in range(args.copies):
            folder = many / f"run{i:04d}"
            folder.mkdir(parents=True)
            for name in RUN_FILES:
                if (result.run.root / name).exists():
                    shutil.copy(result.run.root / name, folder / name)
        t = time.perf_counter()
        listed = list_runs(many)
        seconds = time.perf_counter() - t
        print(f"audiogate runs over {len(listed)} run folders: {seconds:.3f} s "
              f"({1000 * seconds / len(listed):.2f} ms per run)")


if __name__ == "__main__":
    main()
