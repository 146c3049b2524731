"""The speech benchmark (``python -m bench.speech``): its tasks, its scoring, and a tiny run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from bench import speech as bench
from bench.speech_gen import SpokenClip
from bench.speech_tasks import ALLOWED_SPEAKERS, KEYWORD, UNBALANCED_RATIO, Size, build_tasks

from audiogate.config import SPEC_RECIPE, Config
from audiogate.data.discover import Clip
from audiogate.data.split import Split

WORDS = (KEYWORD, "stop", "go", "left")
NAMES = (*ALLOWED_SPEAKERS, "cleo", "dan", "eve")


def fake_pool(root: Path, *, takes: int) -> list[SpokenClip]:
    """Pool records over empty files: task building only links files."""
    clips = []
    for name in NAMES:
        for word in WORDS:
            for take in range(takes):
                path = root / name / f"{word}_{take:03d}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(f"{name} {word} {take}".encode())
                clips.append(SpokenClip(path=str(path), speaker=name, word=word, take=take,
                                        sr=8000, seconds=1.0, lead_s=0.1, trail_s=0.1,
                                        noise="white", snr_db=10.0))
    return clips


def _listing(folder: Path) -> dict[str, list[str]]:
    """``{group folder: [file contents]}`` under one class folder."""
    return {d.name: sorted(f.read_text() for f in d.iterdir()) for d in sorted(folder.iterdir())}


def test_tasks_keep_voices_in_their_own_folders(tmp_path: Path) -> None:
    clips = fake_pool(tmp_path / "words", takes=3)
    size = Size(speakers=len(NAMES), words=len(WORDS), takes=3, unbalanced_allowed=1)
    folders = build_tasks(clips, root=tmp_path / "tasks", size=size, seed=0)

    keyword = _listing(folders["keyword"] / "allowed")
    assert set(keyword) == set(NAMES)
    for name, files in keyword.items():
        assert files == [f"{name} {KEYWORD} {t}" for t in range(3)]
    others = _listing(folders["keyword"] / "not_allowed")
    for name, files in others.items():
        assert len(files) == 3 and all(f.startswith(f"{name} ") for f in files)
        assert not any(f" {KEYWORD} " in f for f in files)

    unbalanced = _listing(folders["keyword_1to9"] / "not_allowed")
    for name, files in _listing(folders["keyword_1to9"] / "allowed").items():
        assert files == [f"{name} {KEYWORD} 0"]
        assert len(unbalanced[name]) == UNBALANCED_RATIO

    allowed = _listing(folders["speaker"] / "allowed")
    assert set(allowed) == {f"{n}-{w}" for n in ALLOWED_SPEAKERS for w in WORDS}
    assert all(files == [f"{g.replace('-', ' ')} {t}" for t in range(3)]
               for g, files in allowed.items())
    impostors = _listing(folders["speaker"] / "not_allowed")
    assert set(impostors) == set(NAMES) - set(ALLOWED_SPEAKERS)
    n_allowed = sum(len(f) for f in allowed.values())
    assert n_allowed <= sum(len(f) for f in impostors.values()) < n_allowed + len(impostors)


def test_scores_of_a_perfect_and_a_useless_gate() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    perfect = bench.gate_scores(val_y=y, val_p=y * 0.8 + 0.1, test_y=y,
                                test_p=y * 0.8 + 0.1, argmax=y)
    assert perfect["f1_argmax"] == perfect["f1_val_threshold"] == 1.0
    assert perfect["eer"] == perfect["far"] == perfect["frr"] == 0.0
    useless = bench.gate_scores(val_y=y, val_p=y * 0.8 + 0.1, test_y=y,
                                test_p=0.9 - y * 0.8, argmax=1 - y)
    assert useless["f1_argmax"] == 0.0 and useless["eer"] == 1.0


def test_split_description_finds_shared_voices(tmp_path: Path) -> None:
    def clip(group: str, label: int) -> Clip:
        cls = "allowed" if label else "not_allowed"
        return Clip(str(tmp_path / cls / group / "x.wav"), label)

    apart = Split(train=[clip("ava", 1), clip("ben", 0)], val=[clip("cleo", 1)],
                  test=[clip("dan", 0), clip("eve", 1)])
    described = bench.describe_split(apart, root=tmp_path, classes=["not_allowed", "allowed"])
    assert described["groups_disjoint"]
    assert described["test_voice_heard"] == {"not_allowed": 0.0, "allowed": 0.0}
    assert described["counts"]["test"] == {"not_allowed": 1, "allowed": 1}
    shared = Split(train=[clip("ava-open", 1), clip("ben", 0)], val=[clip("cleo", 1)],
                   test=[clip("ava-stop", 1), clip("ben", 0)])
    described = bench.describe_split(shared, root=tmp_path, classes=["not_allowed", "allowed"])
    assert not described["groups_disjoint"]  # ben is in train and test
    assert described["test_voice_heard"] == {"not_allowed": 1.0, "allowed": 1.0}


def test_a_recipe_naming_an_unknown_field_is_skipped_with_the_reason() -> None:
    assert bench.recipe_problem({"model": "simple"}) is None
    assert "no field not_a_field" in str(bench.recipe_problem({"not_a_field": 1}))
    assert "lr" in str(bench.recipe_problem({"lr": -1.0}))
    notes: list[str] = []
    assert bench.runnable(["reference", "default"], notes) == ["reference", "default"]
    assert notes == []


def test_the_reference_trains_the_notebooks_network_not_the_default_one() -> None:
    """The reference once took the field defaults, so it trained audiogate's default network
    (TC-ResNet) behind the notebook's data pipeline."""
    config = bench.reference_config({"seed": 3, "group_by": "folder"})
    assert config.model == "simple" and config.model != Config().model
    for name, value in SPEC_RECIPE.items():
        assert getattr(config, name) == value, name
    assert (config.seed, config.group_by) == (3, "folder")


def test_targets_compare_default_and_strong_with_the_reference() -> None:
    ref = {"f1": 0.8, "best_epoch": 8, "seconds": 90.0}
    default = {"f1": 0.85, "best_epoch": 5, "seconds": 40.0}
    assert bench.targets({"reference": ref, "default": default}) == [True, True, None, None]
    # error 0.15 > half of 0.2; 31 s > 90 / 3
    strong = {"f1": 0.85, "best_epoch": 3, "seconds": 31.0}
    assert bench.targets({"reference": ref, "strong": strong}) == [None, None, False, False]
    strong = {"f1": 0.9, "best_epoch": 3, "seconds": 30.0}
    assert bench.targets({"reference": ref, "strong": strong})[2:] == [True, True]
    assert bench.targets({"reference": ref, "default": {**default, "f1": 0.79,
                                                        "best_epoch": 9}})[:2] == [False, False]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None,
                    reason="espeak-ng not installed (apt-get install -y espeak-ng)")
def test_tiny_benchmark_runs_every_task_on_one_split(tmp_path: Path) -> None:
    results = bench.main(["--tiny", "--work", str(tmp_path), "--recipes", "reference,default",
                          "--splits", "2", "--first-split", "1"])
    assert set(results["tasks"]) == {"keyword", "speaker", "keyword_1to9"}
    for task, done in results["tasks"].items():
        assert set(done["runs"]) == {"default", "reference"}
        assert [s["seed"] for s in done["splits"]] == [1, 2]  # the words are --seed 0's
        for name, r in done["runs"].items():
            per_split = [s["runs"][name]["f1"] for s in done["splits"]]
            assert r["f1_per_split"] == per_split and r["f1"] == pytest.approx(np.mean(per_split))
        ours, ref = done["runs"]["default"], done["runs"]["reference"]
        for r in (ours, ref):
            assert 0.0 <= r["f1"] <= 1.0 and 0.0 <= r["eer"] <= 1.0
            assert 1 <= r["best_epoch"] <= r["epochs"] <= 2 and r["seconds"] > 0
        counts = done["split"]["counts"]
        assert sum(counts["test"].values()) > 0
        split_rows = (Path(ours["run"]) / "split.csv").read_text().splitlines()
        assert len(split_rows) - 1 == sum(sum(c.values()) for c in counts.values())
        assert all(f"/tasks/{task}/" in row for row in split_rows[1:])
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["tasks"].keys() == results["tasks"].keys()
    table = (tmp_path / "results.md").read_text()
    assert table.count("| reference |") == 3 and table.count("| default |") == 3
    assert "mean over 2 splits (seeds 1, 2)" in table and "**Targets**" in table
    (tmp_path / "results.md").unlink()
    assert bench.main(["--work", str(tmp_path), "--report"]) == stored
    assert (tmp_path / "results.md").read_text() == table
