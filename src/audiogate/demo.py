"""The embedded default: a generated two-class data set and the whole pipeline on it."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from .config import Config
from .data.discover import expand_inputs
from .data.synth import make_demo_dataset
from .gates import evaluate, load, train
from .reporting.eda import analyse, write_eda
from .reporting.tables import format_report

log = logging.getLogger(__name__)

PREDICT_EXAMPLES = 3
"""Files per class shown by the demo's predict step."""


def run_demo(*, out: Path, n_per_class: int = 120, epochs: int = 8, seed: int = 0,
             progress: bool = True) -> Path:
    """Generate ``out/dataset``, then eda, train, evaluate and predict; return the run folder.

    The run is written to ``out/runs/demo`` (replaced if it exists).
    """
    data = out / "dataset"
    counts = make_demo_dataset(root=data, n_per_class=n_per_class, seed=seed)
    print(f"[1/4] demo data set: {counts} -> {data}")

    config = Config(data=str(data), runs_dir=str(out / "runs"), name="demo",
                    max_epochs=epochs, patience=0, seed=seed)
    report = analyse(data, features=config.features())
    paths = write_eda(report, out / "eda")
    print(f"[2/4] eda: {report.counts}; window {report.window_s:.2f} s holds "
          f"{100 * report.covered():.0f}% of clips whole; suggested fixed_length "
          f"{report.suggested_fixed_length}; histogram {paths['histogram']}")

    shutil.rmtree(out / "runs" / "demo", ignore_errors=True)
    result = train(config, progress=progress)
    print(f"[3/4] trained {result.epochs_done} epochs; best epoch {result.best_epoch} "
          f"(val macro-F1 {result.best_val_f1:.3f}); curves {result.run.curves}")

    evaluation = evaluate(result.run.best, workers=config.workers, progress=progress)
    print("[4/4] test split, best checkpoint:\n" + format_report(evaluation.report))

    gate = load(result.run.best)
    for name in gate.classes:
        files, _ = expand_inputs([data / name])
        for pred in gate.predict_many(files[:PREDICT_EXAMPLES]):
            print(f"  predict {pred.source}: {pred.label} ({pred.confidence:.2f})")
    print(f"\nrun folder: {result.run.root}")
    return result.run.root
