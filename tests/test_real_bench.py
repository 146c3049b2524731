"""The recorded-speech benchmark's machinery (bench/real.py) on a tiny stand-in for the
dataset: generated words of generated speakers, in the dataset's layout, with its speaker
split. The real data is read only by the benchmark itself."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from bench import real

WORDS = ("open", "close", "stop")
SPEAKERS = [f"{i:08d}" for i in range(1, 10)]
SUBSET = {s: ("train", "val", "test")[i % 3] for i, s in enumerate(SPEAKERS)}


def fake_asc(root: Path) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    for w, word in enumerate(WORDS):
        (root / word).mkdir(parents=True)
        for s, speaker in enumerate(SPEAKERS):
            for take in ("01", "02", "03", "04", "05"):
                f0 = 120 + 15 * s
                y = 0.3 * np.sin(2 * np.pi * f0 * (1 + w) * t) * np.hanning(t.size)
                y += 0.01 * rng.standard_normal(t.size)
                sf.write(root / word / f"{speaker}_{take}.flac", y.astype(np.float32), 16000)
    with open(root / "speakers.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["speaker", "subset"])
        writer.writerows(SUBSET.items())
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_tasks_follow_the_speaker_split(tmp_path: Path) -> None:
    root = fake_asc(tmp_path / "asc")
    clips, subsets = real.recordings(root), real.speaker_subsets(root)
    _, split_file, _ = real.build_task("word", clips=clips, subsets=subsets,
                                       root=tmp_path / "t", seed=0)
    rows = _rows(split_file)
    for row in rows:  # every clip in its speaker's subset: no test speaker heard in training
        assert row["subset"] == SUBSET[Path(row["path"]).parent.name]
    labels = [Path(r["path"]).parent.parent.name for r in rows]
    assert labels.count("allowed") == labels.count("not_allowed") == 9 * 5
    _, split_file, drawn = real.build_task("voice", clips=clips, subsets=subsets,
                                                root=tmp_path / "t", seed=1)
    people = set(drawn["allowed_people"])
    assert len(people) == 3 and not any(SUBSET[p] == "test" for p in people)
    for row in _rows(split_file):
        path = Path(row["path"])
        if path.parent.parent.name == "allowed":  # within each person, by take
            take = path.stem.split("_")[1]
            assert row["subset"] == {"04": "val", "05": "test"}.get(take, "train")
        else:
            assert row["subset"] == SUBSET[path.parent.name]


@pytest.mark.slow
def test_the_tiny_benchmark_runs_every_pipeline(tmp_path: Path) -> None:
    root = fake_asc(tmp_path / "asc")
    results = real.main(["--data", str(root), "--work", str(tmp_path / "work"), "--tiny",
                         "--seeds", "1", "--tasks", "word,words20",
                         "--pipelines", "reference,default"])
    for task in ("word", "words20"):
        summary = results["tasks"][task]
        assert set(summary) == {"reference", "default"}
        assert 0.0 <= summary["default"]["f1"]["mean"] <= 1.0
    assert (tmp_path / "work" / "results.md").read_text().startswith("Recorded speech")


def test_the_reference_alone_is_refused(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The reference trains on the split of audiogate's first run: alone it would run nothing
    and print an empty table."""
    data = fake_asc(tmp_path / "asc")
    with pytest.raises(SystemExit):
        real.main(["--data", str(data), "--work", str(tmp_path / "work"), "--tasks", "word",
                   "--pipelines", "reference", "--tiny"])
    assert "--pipelines reference,default" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()
