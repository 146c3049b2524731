"""A voice gate's history of enrolments is bounded (issue 22, item 4): each enrol/remove pair
added about 150 bytes to the gate file, for ever. The latest events are kept in full, the
older ones counted; histories written before the bound still load."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

import audiogate
from audiogate.gates.voice import classifier
from audiogate.gates.voice.history import FOLDED, HISTORY_KEPT, appended

from .voice_data import NEW_VOICE, VoiceWords, needs_voice


def event(i: int) -> dict[str, object]:
    return {"action": "enrol" if i % 2 == 0 else "remove", "name": "kai", "time": f"t{i}"}


def grown(n: int, *, keep: int) -> list[dict[str, object]]:
    history: list[dict[str, object]] = []
    for i in range(n):
        history = appended(history, event(i), keep=keep)
    return history


def test_history_keeps_the_latest_events_and_counts_the_rest() -> None:
    assert grown(3, keep=4) == [event(0), event(1), event(2)]
    history = grown(11, keep=4)
    assert history == [{"action": FOLDED, "counts": {"enrol": 4, "remove": 3},
                        "since": "t0", "until": "t6"}, *map(event, range(7, 11))]
    assert len(grown(1000, keep=4)) == 5
    assert grown(1000, keep=4)[0]["counts"] == {"enrol": 498, "remove": 498}
    assert len(grown(HISTORY_KEPT + 50, keep=HISTORY_KEPT)) == HISTORY_KEPT + 1


def test_a_long_history_written_before_the_bound_is_folded_at_its_next_change() -> None:
    old = [event(i) for i in range(300)]
    history = appended(old, event(300), keep=4)
    assert history[0] == {"action": FOLDED, "counts": {"enrol": 149, "remove": 148},
                          "since": "t0", "until": "t296"}
    assert history[1:] == [*map(event, range(297, 301))] and len(old) == 300


@pytest.mark.slow
@needs_voice
def test_enrolling_and_removing_all_day_keeps_the_gate_file_bounded(
        voice_run: Path, voice_words: VoiceWords, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Enrol and remove a voice 2 x 8 times with 4 events kept: the saved gate holds the
    latest 4 and counts the other 12, and keeps one size from the third pair on (it grew by
    about 128 bytes a pair); a gate file with an unbounded history (as written before)
    still loads."""
    monkeypatch.setattr("audiogate.gates.voice.history.HISTORY_KEPT", 4)
    gate = audiogate.load(voice_run / "models" / "best.pt")
    assert isinstance(gate, classifier.VoiceClassifier)
    long = replace(gate.checkpoint, history=[event(i) for i in range(300)])
    classifier.save_voice_checkpoint(tmp_path / "old.pt", long)
    assert len(audiogate.load(tmp_path / "old.pt").checkpoint.history) == 300
    clip = str(sorted(voice_words.enrol.iterdir())[0])
    sizes = []
    for _ in range(8):
        gate.enroll(NEW_VOICE, [clip])
        gate.remove(NEW_VOICE)
        gate.save(tmp_path / "gate.pt")
        sizes.append((tmp_path / "gate.pt").stat().st_size)
    history = audiogate.load(tmp_path / "gate.pt").checkpoint.history
    assert len(history) == 5 and history[0]["action"] == FOLDED
    assert sum(history[0]["counts"].values()) == 16 - 4
    assert len(set(sizes[2:])) == 1, sizes  # from the third pair on, one size
