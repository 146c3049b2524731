"""The training seams: prepare_data, and a Trainer whose loop only emits events."""

from __future__ import annotations

import math
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from audiogate.config import Config
from audiogate.data import prepare_data
from audiogate.data.audio_io import write_wav
from audiogate.training import Callback, FitResult, Trainer
from audiogate.training.trainer import selection_score

from .conftest import make_toy_dataset


def tiny_config(data: Path, tmp: Path, **overrides: Any) -> Config:
    return Config(data=str(data), runs_dir=str(tmp / "runs"), cache_dir=str(tmp / "cache"),
                  fixed_length=32, n_fft=512, batch_size=8, workers=1, patience=0,
                  **overrides)


class Recorder(Callback):
    """Writes down every event; optionally asks to stop after an epoch."""

    def __init__(self, stop_after: int = 0) -> None:
        self.events: list[str] = []
        self.stop_after = stop_after
        self.result: FitResult | None = None

    def on_train_begin(self, trainer: Trainer) -> None:
        self.events.append("begin")

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        self.events.append(f"epoch {epoch}")

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.events.append(f"end {record['epoch']}")
        if record["epoch"] == self.stop_after:
            trainer.request_stop("recorder had enough")

    def on_stop(self, trainer: Trainer, reason: str) -> None:
        self.events.append(f"stop: {reason}")

    def on_train_end(self, trainer: Trainer, result: FitResult) -> None:
        self.events.append("done")
        self.result = result


def test_prepare_data_discovers_balances_splits_and_restores(tmp_path: Path) -> None:
    data = make_toy_dataset(tmp_path / "data", n_per_class=20)
    for i in range(4):  # extra allowed clips (down-sampled away) and one broken file
        write_wav(data / "allowed" / f"extra_{i}.wav", np.full(8000, 0.1 * (i + 1), np.float32),
                  sr=16000)
    (data / "not_allowed" / "broken.wav").write_bytes(b"RIFF....")
    config = tiny_config(data, tmp_path)
    prepared = prepare_data(replace(config, balance="downsample"), progress=False)
    assert prepared.classes == ("not_allowed", "allowed")
    assert prepared.usable == {"not_allowed": 20, "allowed": 24}
    assert [s.path.endswith("broken.wav") for s in prepared.skipped] == [True]
    sizes = [len(prepared.train), len(prepared.val), len(prepared.test)]
    assert sizes == [len(prepared.split.train), len(prepared.split.val),
                     len(prepared.split.test)]
    # only the training split is balanced; validation and test are 15% each of all 44
    assert np.bincount(prepared.train.labels).tolist() == [len(prepared.train) // 2] * 2
    assert len(prepared.val) == len(prepared.test) == 7
    assert sum(sizes) < 44
    again = prepare_data(config, split=prepared.split, classes=prepared.classes,
                         progress=False)
    assert again.split == prepared.split
    assert (again.train.labels == prepared.train.labels).all()


def test_the_loop_emits_events_and_writes_no_file(tmp_path: Path) -> None:
    data = make_toy_dataset(tmp_path / "data", n_per_class=16)
    config = tiny_config(data, tmp_path, max_epochs=2)
    recorder = Recorder()
    result = Trainer(config, prepare_data(config, progress=False), callbacks=[recorder],
                     progress=False).fit()
    assert recorder.events == ["begin", "epoch 1", "end 1", "epoch 2", "end 2",
                               "stop: reached max_epochs=2", "done"]
    assert recorder.result == result and result.epochs_done == 2
    assert not (tmp_path / "runs").exists()  # only callbacks write files


def test_a_callback_can_stop_the_run(tmp_path: Path) -> None:
    data = make_toy_dataset(tmp_path / "data", n_per_class=16)
    config = tiny_config(data, tmp_path, max_epochs=0)  # no limit: only the callback stops it
    recorder = Recorder(stop_after=3)
    trainer = Trainer(config, prepare_data(config, progress=False), callbacks=[recorder],
                      progress=False)
    result = trainer.fit()
    assert result.stop_reason == "recorder had enough" and result.epochs_done == 3
    assert [h["epoch"] for h in trainer.state.history] == [1, 2, 3]
    history = trainer.state.history  # chosen by select_on's default, earliest of equals
    best = max(history, key=lambda h: (selection_score(h, "f1_tuned"), -h["epoch"]))
    assert (result.best_epoch, result.best_val_f1) == (best["epoch"], best["val_f1_tuned"])


@pytest.mark.parametrize("select_on", ["f1", "f1_tuned", "auc", "loss"])
def test_the_best_epoch_is_chosen_on_the_measure_named(select_on: str) -> None:
    # three epochs whose measures disagree: each measure picks another epoch
    rows = [{"val_f1": 0.9, "val_f1_tuned": 0.91, "val_auc": 0.95, "val_loss": 0.50},
            {"val_f1": 0.5, "val_f1_tuned": 0.97, "val_auc": 0.96, "val_loss": 0.40},
            {"val_f1": 0.6, "val_f1_tuned": 0.93, "val_auc": 0.99, "val_loss": 0.45},
            {"val_f1": 0.6, "val_f1_tuned": 0.80, "val_auc": 0.90, "val_loss": 0.30},
            {"val_f1": math.nan, "val_f1_tuned": math.nan, "val_auc": math.nan,
             "val_loss": math.nan}]
    scores = [selection_score(r, select_on) for r in rows]
    expected = {"f1": 0, "f1_tuned": 1, "auc": 2, "loss": 3}[select_on]
    assert scores.index(max(scores)) == expected and scores[-1] == (-math.inf, -math.inf)
    # equal on the measure: the lower validation loss (for loss: the higher tuned F1) wins
    tied = [{**rows[1], "val_loss": 0.45, "val_f1_tuned": 0.96}, rows[1]]
    tied[0]["val_f1"] = tied[0]["val_auc"] = 0.5
    tied[1] = {**tied[0], "val_loss": 0.40, "val_f1_tuned": 0.96}
    if select_on == "loss":
        tied[1] = {**tied[0], "val_f1_tuned": 0.97}
    assert selection_score(tied[1], select_on) > selection_score(tied[0], select_on)


@pytest.mark.parametrize("balance", ["weighted", "none"])
def test_other_balances_keep_every_clip(tmp_path: Path, balance: str) -> None:
    data = make_toy_dataset(tmp_path / "data", n_per_class=12)
    for i in range(6):
        write_wav(data / "allowed" / f"more_{i}.wav", np.full(8000, 0.1 * (i + 1), np.float32),
                  sr=16000)
    prepared = prepare_data(tiny_config(data, tmp_path, balance=balance), progress=False)
    assert len(prepared.train) + len(prepared.val) + len(prepared.test) == 30


def test_copies_of_a_file_stay_in_one_subset(tmp_path: Path) -> None:
    import shutil

    data = make_toy_dataset(tmp_path / "data", n_per_class=20)
    source = data / "allowed" / "tone_000.wav"
    copies = [data / "allowed" / f"copy_{i}.wav" for i in range(4)]
    for copy in copies:
        shutil.copy(source, copy)
    prepared = prepare_data(tiny_config(data, tmp_path, balance="none"), progress=False)
    wanted = {str(p) for p in [source, *copies]}
    holding = {name for name in ("train", "val", "test")
               for c in getattr(prepared.split, name) if c.path in wanted}
    assert len(holding) == 1
    groups = {c.group for name in ("train", "val", "test")
              for c in getattr(prepared.split, name) if c.path in wanted}
    assert len(groups) == 1


def test_the_batch_thread_does_not_change_what_is_learned(tmp_path: Path) -> None:
    """prefetch on and off train on the same batches with the same augmentation: the same
    per-epoch figures (features computed with fewer threads differ in float rounding only)."""
    data = make_toy_dataset(tmp_path / "data", n_per_class=16)
    histories = []
    for setting in (True, False):
        config = tiny_config(data, tmp_path, max_epochs=2, prefetch=setting)
        trainer = Trainer(config, prepare_data(config, progress=False), progress=False)
        trainer.fit()
        histories.append(trainer.state.history)
    on, off = histories
    for a, b in zip(on, off, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert (a["train_f1"], a["val_f1"]) == (b["train_f1"], b["val_f1"])


def test_curves_are_drawn_beside_training_and_complete_at_the_stop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from audiogate.core.runs import RunPaths
    from audiogate.training import callbacks

    started, release = threading.Event(), threading.Event()
    drawn: list[tuple[int, int]] = []

    def plot(history: list[dict[str, Any]], path: Path, *, best_epoch: int) -> None:
        started.set()
        release.wait(timeout=10)  # slow first drawing (a drawing in the training thread
        # would hold it up here, and the test fails below)
        drawn.append((len(history), best_epoch))

    monkeypatch.setattr(callbacks.plots, "plot_curves", plot)
    plotter = callbacks.CurvePlotter(RunPaths(tmp_path))
    trainer: Any = SimpleNamespace(state=SimpleNamespace(history=[], best_epoch=0))
    for epoch in (1, 2, 3, 4):
        trainer.state.history.append({"epoch": epoch})
        trainer.state.best_epoch = min(epoch, 2)
        plotter.on_epoch_end(trainer, trainer.state.history[-1])  # returns at once
        if epoch == 1:
            assert started.wait(timeout=60)
    assert drawn == []  # the training thread never waited for a drawing
    release.set()
    plotter.on_stop(trainer, "done")
    # epoch 1's drawing, then only the latest: epochs 2 and 3 were replaced by 4
    assert drawn == [(1, 1), (4, 2)]

    def broken(history: list[dict[str, Any]], path: Path, *, best_epoch: int) -> None:
        raise OSError("disk full: cannot write curves.png")

    monkeypatch.setattr(callbacks.plots, "plot_curves", broken)
    plotter.on_epoch_end(trainer, trainer.state.history[-1])
    with pytest.raises(OSError, match="disk full"):
        plotter.on_stop(trainer, "done")
