"""bench/ttq.py's measures (known answers) and the tiny benchmark on a generated stand-in for
the recorded-speech dataset (tests/test_real_bench.py's)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from bench import ttq

from .test_real_bench import fake_asc


def test_the_first_epoch_reaching_the_target_and_its_time() -> None:
    times, values = [5.0, 7.0, 9.0, 11.0], [0.5, math.nan, 0.95, 0.97]
    assert ttq.first_reaching(times, values, 0.95) == (3, 9.0)
    assert ttq.first_reaching(times, values, 0.99) == (None, None)


def test_swing_is_the_largest_fall_after_the_first_good_epoch() -> None:
    assert ttq.swing([0.4, 0.95, 0.8, 0.97, 0.90, 0.99]) == pytest.approx(0.15)
    assert ttq.swing([0.2, 0.1, 0.91, 0.92, 0.93]) == 0.0  # it only rises
    assert ttq.swing([0.0, 0.5]) is None  # never good
    # the spec's curve of the issue: 0.47 0.56 0.21 0.97 0.58 ... swings by 0.39
    assert ttq.swing([0.47, 0.56, 0.21, 0.97, 0.58, 0.88, 0.75, 0.70, 0.99, 0.99]) \
        == pytest.approx(0.39)


def test_each_select_on_picks_its_epoch_and_the_oracle_the_best_on_test() -> None:
    epochs = [{"val_f1": 0.9, "val_f1_tuned": 0.91, "val_auc": 0.95, "val_loss": 0.5,
               "test_f1_tuned": 0.80},
              {"val_f1": 0.5, "val_f1_tuned": 0.97, "val_auc": 0.96, "val_loss": 0.4,
               "test_f1_tuned": 0.85},
              {"val_f1": 0.6, "val_f1_tuned": 0.93, "val_auc": 0.99, "val_loss": 0.3,
               "test_f1_tuned": 0.90}]
    assert ttq.chosen_by(epochs) == {"f1": 0.80, "f1_tuned": 0.85, "auc": 0.90,
                                     "loss": 0.90, "oracle": 0.90}


def test_variants_become_train_flags() -> None:
    name, fields = ttq.parse_variant("fast:balance=resample,fixed_length=auto,augment=false,"
                                     "lr=0.003")
    assert (name, fields) == ("fast", {"balance": "resample", "fixed_length": "auto",
                                       "augment": False, "lr": 0.003})
    assert ttq.train_flags(fields) == ["--balance", "resample", "--fixed-length", "auto",
                                       "--no-augment", "--lr", "0.003"]
    with pytest.raises(SystemExit, match="expected field=value"):
        ttq.parse_variant("bad:balance")


@pytest.mark.slow
def test_the_tiny_benchmark_times_every_pipeline(tmp_path: Path) -> None:
    root = fake_asc(tmp_path / "asc")
    results = ttq.main(["--data", str(root), "--work", str(tmp_path / "work"), "--tiny",
                        "--tasks", "word"])
    (run,) = results["tasks"]["word"]
    assert run["floor"] > 0 and 0.0 <= run["target"] <= 1.0
    ref, ours = run["reference"], run["variants"]["default"]
    for times in (ref["times"], ours["times"]):  # one time per epoch, rising, after start
        assert len(times) == 2 and 0 < times[0] < times[1]
    assert set(ours["chosen_by"]) == {"f1", "f1_tuned", "auc", "loss", "oracle"}
    assert (tmp_path / "work" / "results.md").read_text().startswith("Recorded speech")
