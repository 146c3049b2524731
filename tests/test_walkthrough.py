"""The notebook-style walkthrough runs from top to bottom, and what it shows is right."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import runpy
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from audiogate.training.trainer import SELECTED_F1, selection_score

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "walkthrough.py"
PNG = b"\x89PNG\r\n\x1a\n"
N_PER_CLASS = 20
"""Clips per class of the walkthrough's small data set (AUDIOGATE_WALKTHROUGH_SMALL)."""
CLASSES = ["not_allowed", "allowed"]


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    """The notebook's variables after a small run, what it printed, and its folder."""
    work = tmp_path_factory.mktemp("walkthrough")
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setenv("AUDIOGATE_WALKTHROUGH_SMALL", "1")
        mp.setenv("AUDIOGATE_WALKTHROUGH_DIR", str(work))
        ns = runpy.run_path(str(NOTEBOOK), run_name="__main__")
    return ns, printed.getvalue(), work


@pytest.mark.slow
def test_data_balance_and_split(walk: tuple[dict[str, Any], str, Path]) -> None:
    ns, printed, _ = walk
    counts = {"not_allowed": N_PER_CLASS, "allowed": N_PER_CLASS}
    assert f"classes (label order): ('not_allowed', 'allowed') counts: {counts}" in printed
    assert f"after down-sampling: {2 * N_PER_CLASS} clips" in printed
    sizes = {k: len(getattr(ns["split"], k)) for k in ("train", "val", "test")}
    assert str(sizes) in printed and sum(sizes.values()) == 2 * N_PER_CLASS
    for subset in ("val", "test"):  # stratified: as many of each class
        labels = [clip.label for clip in getattr(ns["split"], subset)]
        assert labels.count(0) == labels.count(1), (subset, labels)


@pytest.mark.slow
def test_eda_and_features(walk: tuple[dict[str, Any], str, Path]) -> None:
    ns, _, work = walk
    summary = ns["report"].summary()
    assert summary["counts"] == {"not_allowed": N_PER_CLASS, "allowed": N_PER_CLASS}
    durations = summary["duration_s"]  # the demo data's clips last 1 to 4 s
    assert 1.0 <= durations["min"] <= durations["median"] <= durations["max"] <= 4.0
    assert (work / "eda" / "durations.png").read_bytes().startswith(PNG)
    args, spec = ns["args"], ns["S"]
    assert spec.shape == (args.n_mels, args.fixed_length) and np.isfinite(spec).all()
    assert abs(float(spec.mean())) < 1e-3 and abs(float(spec.std()) - 1.0) < 1e-3  # z-score
    assert (work / "example_logmel.png").read_bytes().startswith(PNG)


@pytest.mark.slow
def test_training_chose_the_best_epoch_on_validation(
        walk: tuple[dict[str, Any], str, Path]) -> None:
    ns, printed, _ = walk
    result = ns["result"]
    epochs = json.loads((result.run.root / "metrics.json").read_text())["epochs"]
    assert result.epochs_done == len(epochs) == ns["args"].max_epochs
    for row in epochs:
        assert math.isfinite(row["train_loss"]) and row["train_loss"] > 0, row
        assert math.isfinite(row["val_loss"]) and row["val_loss"] > 0, row
        assert all(0.0 <= row[k] <= 1.0 for k in ("train_f1", "val_f1", "test_f1")), row
    select_on = tomllib.loads((result.run.root / "config.toml").read_text())["select_on"]
    best = max(epochs, key=lambda row: (selection_score(row, select_on), -row["epoch"]))
    assert (result.best_epoch, result.best_val_f1) == (best["epoch"],
                                                       best[SELECTED_F1[select_on]])
    assert (f"best epoch {result.best_epoch} val macro-F1 "
            f"{round(result.best_val_f1, 3)}") in printed
    assert result.run.curves.read_bytes().startswith(PNG)


@pytest.mark.slow
def test_evaluation_and_predictions_agree(walk: tuple[dict[str, Any], str, Path]) -> None:
    """The notebook's test report is the best model's on the run's test split, and the model
    loaded from the checkpoint alone gives the same verdicts clip by clip."""
    ns, printed, _ = walk
    report, result = ns["evaluation"].report, ns["result"]
    with open(result.run.root / "split.csv", newline="") as fh:
        test = [row for row in csv.DictReader(fh) if row["subset"] == "test"]
    assert report["classes"] == CLASSES and report["n"] == len(test) > 0
    assert report["epoch"] == result.best_epoch
    assert 0.0 <= report["macro_f1"] <= 1.0 and 0.0 <= report["accuracy"] <= 1.0
    assert report["macro_f1"] == pytest.approx(result.test_report["macro_f1"])
    assert f"test macro-F1 {round(report['macro_f1'], 3)}" in printed
    assert f"confusion {report['confusion']}" in printed
    gate = ns["gate"]
    assert list(gate.classes) == CLASSES
    predictions = gate.predict_many([row["path"] for row in test])
    confusion = [[0, 0], [0, 0]]
    for row, pred in zip(test, predictions, strict=True):
        assert pred.ok and pred.label in CLASSES and 0.0 < pred.threshold < 1.0, pred
        assert sum(pred.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        confusion[int(row["label"])][CLASSES.index(pred.label)] += 1
    assert confusion == report["confusion"]
    assert str(gate.predict(ns["found"].clips[-1].path)) in printed
