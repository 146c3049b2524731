"""The live benchmark's machinery (bench/live.py) on the tiny stand-in for the dataset of
tests/test_real_bench.py: the streams' truth, the scoring of events against it, the replay of
recorded scores at another threshold, and the whole ``--tiny`` run. The real data is read
only by the benchmark itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bench import live
from bench.live_stream import SR, Placed, Plan, make_plan, render

from .test_real_bench import fake_asc


def test_a_plan_renders_its_words_where_it_says(tmp_path: Path) -> None:
    root = fake_asc(tmp_path / "asc")
    allowed = sorted(str(p) for p in (root / "open").glob("*.flac"))
    other = sorted(str(p) for p in (root / "stop").glob("*.flac"))
    plan = make_plan(allowed=allowed, other=other, seconds=120, seed=3)
    assert plan.allowed and len(plan.words) > len(plan.allowed)
    assert all(w.at + SR <= plan.n for w in plan.words)
    plan.save(tmp_path / "plan.json")
    assert Plan.load(tmp_path / "plan.json") == plan
    wave = np.concatenate(list(render(plan)))
    assert wave.size == plan.n
    bed = np.sqrt(np.mean(wave[:plan.words[0].at] ** 2))
    for w in plan.words[:5]:  # each word's speech stands out of the bed by about its SNR
        a, b = w.speech
        level = np.sqrt(np.mean(wave[a:b] ** 2))
        assert 20 * np.log10(level / bed) == pytest.approx(w.snr_db, abs=3.0)


def test_scoring_against_the_truth() -> None:
    words = [Placed(path="a", at=0, gain=1.0, allowed=True, speech=(SR, 2 * SR), snr_db=30.0),
             Placed(path="b", at=0, gain=1.0, allowed=True, speech=(5 * SR, 6 * SR),
                    snr_db=10.0),
             Placed(path="c", at=0, gain=1.0, allowed=False, speech=(8 * SR, 9 * SR),
                    snr_db=10.0)]
    plan = Plan(n=3600 * SR, seed=0, words=words, confusers=[])
    events = [{"event": "allowed", "end_s": 1.9, "latency_s": 0.2},   # hits the first, 0.1 s
              {"event": "allowed", "end_s": 2.0, "latency_s": 0.1},   # the same word again
              {"event": "rejected", "end_s": 6.0, "latency_s": 0.1},
              {"event": "allowed", "end_s": 8.5, "latency_s": 0.1}]   # a false accept
    got = live.score(events, plan, window_s=0.0)
    assert got["false_accepts"] == 2 and got["frr"] == 0.5
    assert got["frr_by_snr"] == {"30": 0.0, "10": 1.0}
    assert got["latency_median_ms"] == pytest.approx(100.0)
    assert got["fa_per_h"] == pytest.approx(2 / (3598 / 3600))  # the allowed speech is out


@pytest.mark.slow
def test_tiny_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    root = fake_asc(tmp_path / "asc")
    results = live.main(["--tiny", "--gates", "default", "--data", str(root), "--work",
                         str(tmp_path / "work")])
    rows = results["gates"]
    assert [(r["gate"], r["mode"]) for r in rows] == [("default", "windows"),
                                                      ("default", "speech")]
    for r in rows:
        assert r["rtf_per_core"] > 0 and r["rss_end_mb"] > 0
        assert 0.0 <= r["rows"]["own"]["frr"] <= 1.0
        assert 0.0 < r["rows"]["val"]["threshold"] <= 1.0
    text = (tmp_path / "work" / "results.md").read_text()
    assert "Arabic Speech Commands" in text and "| default | windows |" in text
