"""Per-person figures of a two-class gate (FRR of each allowed person, FAR of each impostor:
who gets in) and the target rate beside the measured one: known answers on label arrays, and
``audiogate evaluate`` on a folder of per-person clips judged by a hand-built gate."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from audiogate.cli import main
from audiogate.core.checkpoint import read_gate, save_gate
from audiogate.data.audio_io import write_wav
from audiogate.gates import load
from audiogate.reporting.people import DIRECT, people_report, person_of, target_rates
from audiogate.reporting.tables import format_report

from .conftest import SR, build_band_gate, sine

CLASSES = ("not_allowed", "allowed")


def test_person_is_the_first_sub_folder_below_the_class_folder() -> None:
    assert person_of("/d/allowed/carol/a.wav", class_name="allowed", root="/d") == "carol"
    assert person_of("/d/allowed/carol/x/a.wav", class_name="allowed", root="/d") == "carol"
    assert person_of("/d/allowed/a.wav", class_name="allowed", root="/d") == DIRECT
    assert person_of("/e/allowed/carol/a.wav", class_name="allowed", root="/d") is None
    # without a root: the nearest folder named after the class
    assert person_of("/x/allowed/data/allowed/bob/a.wav", class_name="allowed",
                     root=None) == "bob"
    assert person_of("/x/other/a.wav", class_name="allowed", root=None) is None


def test_people_report_counts_who_is_rejected_and_who_gets_in() -> None:
    paths = ["/d/allowed/ann/1.wav", "/d/allowed/ann/2.wav", "/d/allowed/bob/1.wav",
             "/d/allowed/bob/2.wav", "/d/not_allowed/eve/1.wav", "/d/not_allowed/eve/2.wav",
             "/d/not_allowed/eve/3.wav", "/d/not_allowed/mal/1.wav", "/d/not_allowed/x.wav"]
    y_true = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0])
    y_pred = np.array([1, 1, 0, 1, 1, 1, 0, 0, 0])
    out = people_report(paths, y_true, y_pred, classes=CLASSES, positive=1, root="/d")
    assert out is not None and out["positive"] == "allowed"
    assert [(r["person"], r["n"], r["errors"], r["frr"]) for r in out["frr"]] == [
        ("bob", 2, 1, 0.5), ("ann", 2, 0, 0.0)]
    assert [(r["person"], r["n"], r["errors"], r["far"]) for r in out["far"]] == [
        ("eve", 3, 2, pytest.approx(2 / 3)), (DIRECT, 1, 0, 0.0), ("mal", 1, 0, 0.0)]
    # the positive class at label 0: the sides follow it
    flipped = people_report(paths, 1 - y_true, 1 - y_pred, classes=("allowed", "not_allowed"),
                            positive=0, root="/d")
    assert flipped is not None and [r["person"] for r in flipped["frr"]] == ["bob", "ann"]
    flat = ["/d/allowed/1.wav", "/d/not_allowed/1.wav"]
    assert people_report(flat, np.array([1, 0]), np.array([1, 0]), classes=CLASSES,
                         positive=1, root="/d") is None


def test_target_rates_follow_the_operating_point() -> None:
    assert target_rates("far=0.02") == {"rule": "far=0.02", "far": 0.02}
    assert target_rates("frr=0.1") == {"rule": "frr=0.1", "frr": 0.1}
    for rule in ("eer", "f1", "set by hand", None):
        assert target_rates(rule) is None


@pytest.fixture
def people_folder(tmp_path: Path) -> Path:
    """Low tones are allowed by the band gate, high ones are not: ``allowed/low`` all get in,
    ``allowed/high`` none; ``not_allowed/hum`` (low) all get in, ``not_allowed/hiss`` none."""
    root = tmp_path / "people"
    for cls, person, freq, n in (("allowed", "low", 300.0, 3), ("allowed", "high", 3500.0, 2),
                                 ("not_allowed", "hiss", 3500.0, 3),
                                 ("not_allowed", "hum", 300.0, 2)):
        for i in range(n):
            write_wav(root / cls / person / f"{i}.wav", sine(freq + 10 * i, 0.6), sr=SR)
    return root


def test_evaluate_prints_and_writes_per_person_rates_and_the_target(
        people_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = build_band_gate(tmp_path / "band.pt", fixed_length=100)
    stored = read_gate(path)
    save_gate(path, replace(stored, gate={"positive": "allowed", "threshold": 0.5,
                                          "operating_point": "far=0.05", "validation": None}))
    assert load(path).operating_point == "far=0.05"
    out = tmp_path / "eval"
    assert main(["-q", "evaluate", "--checkpoint", str(path), "--data", str(people_folder),
                 "--out", str(out), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    gate = json.loads((out / "report.json").read_text())["gate"]
    assert gate["target"] == {"rule": "far=0.05", "far": 0.05}
    assert [(r["person"], r["frr"]) for r in gate["people"]["frr"]] == [("high", 1.0),
                                                                        ("low", 0.0)]
    assert [(r["person"], r["far"]) for r in gate["people"]["far"]] == [("hum", 1.0),
                                                                       ("hiss", 0.0)]
    assert "(target 0.05, far=0.05)" in printed
    assert "per person of allowed (false-reject rate, worst first):" in printed
    assert "per person of not_allowed (false-accept rate: who gets in, worst first):" in printed
    assert "hum" in printed and "(2 of 2 accepted)" in printed
    # a threshold given by hand is no longer the operating point's: no target
    assert main(["-q", "evaluate", "--checkpoint", str(path), "--data", str(people_folder),
                 "--out", str(out), "--workers", "1", "--threshold", "0.6"]) == 0
    assert json.loads((out / "report.json").read_text())["gate"]["target"] is None
    assert "target" not in format_report(json.loads((out / "report.json").read_text()))
