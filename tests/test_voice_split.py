"""A voice gate splits by person: every allowed voice within itself (so every one is enrolled
and judged on held-out clips of its own), impostors held out whole (so their false accepts
are of people never heard)."""

from __future__ import annotations

from pathlib import Path

import pytest

from audiogate.data import Clip
from audiogate.gates.voice.data import person_split, voice_name

ROOT = "/data"
ALLOWED = ("ann", "bob", "cy")
IMPOSTORS = tuple(f"imp{i}" for i in range(9))


def _clips(takes: int = 10) -> list[Clip]:
    """What discovery gives with ``group_by = "folder"``: each person's folder is a group."""
    out = [Clip(f"{ROOT}/allowed/{p}/{t}.wav", 1, p) for p in ALLOWED for t in range(takes)]
    out += [Clip(f"{ROOT}/not_allowed/{p}/{t}.wav", 0, p) for p in IMPOSTORS
            for t in range(takes)]
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_allowed_voice_is_in_every_subset_and_impostors_are_whole(seed: int) -> None:
    clips = _clips()
    split = person_split(clips, root=ROOT, content={c.path: c.path for c in clips},
                         test_size=0.2, val_size=0.2, seed=seed)
    for subset in ("train", "val", "test"):
        voices = {voice_name(c, root=ROOT) for c in getattr(split, subset) if c.label == 1}
        assert voices == set(ALLOWED), subset  # enrolled, validated and tested, each of them
    seen = {s: {c.group for c in getattr(split, s) if c.label == 0}
            for s in ("train", "val", "test")}
    assert not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])
    assert not (seen["train"] & seen["val"]) and all(seen.values())
    every = [c.path for s in ("train", "val", "test") for c in getattr(split, s)]
    assert sorted(every) == sorted(c.path for c in _clips())  # each clip once
    n_test = sum(c.label == 1 for c in split.test)
    assert n_test == 3 * 2  # 20% of each voice's 10 clips


def test_copies_move_together_and_a_voice_with_two_clips_is_all_enrolled(
        caplog: pytest.LogCaptureFixture) -> None:
    clips = [Clip(f"{ROOT}/allowed/ann/{t}.wav", 1, "ann") for t in range(6)]
    clips += [Clip(f"{ROOT}/allowed/dee/{t}.wav", 1, "dee") for t in range(2)]
    content = {c.path: c.path for c in clips} | {f"{ROOT}/allowed/ann/1.wav": "same bytes",
                                                  f"{ROOT}/allowed/ann/0.wav": "same bytes"}
    split = person_split(clips, root=ROOT, content=content, test_size=0.3, val_size=0.3,
                         seed=4)
    where = {c.path: s for s in ("train", "val", "test") for c in getattr(split, s)}
    assert where[f"{ROOT}/allowed/ann/0.wav"] == where[f"{ROOT}/allowed/ann/1.wav"]
    assert {where[f"{ROOT}/allowed/dee/{t}.wav"] for t in range(2)} == {"train"}
    assert "'dee' has 2 clip(s): all enrolled" in caplog.text
    assert Path(voice_name(clips[0], root=ROOT)) == Path("ann")


def test_a_network_split_that_holds_allowed_people_out_is_named(
        caplog: pytest.LogCaptureFixture) -> None:
    """The trap of a speaker gate trained as a network with ``--group-by folder``: the
    allowed people are held out whole, never heard in training. A word gate whose speakers
    say both classes' words shares its groups and draws no warning."""
    from audiogate.data.split import make_split
    from audiogate.gates.network.fit import warn_people_held_out

    split = make_split(_clips(), test_size=0.2, val_size=0.2, seed=0, balance_by="none")
    assert warn_people_held_out(split, ("not_allowed", "allowed"), group_by="folder")
    assert "class 'allowed' appear in no other class" in caplog.text
    assert "--recipe voice" in caplog.text
    words = [Clip(f"{ROOT}/{cls}/{p}/{t}.wav", label, p) for p in IMPOSTORS
             for label, cls in enumerate(("not_allowed", "allowed")) for t in range(4)]
    split = make_split(words, test_size=0.2, val_size=0.2, seed=0, balance_by="none")
    assert not warn_people_held_out(split, ("not_allowed", "allowed"), group_by="folder")
    assert not warn_people_held_out(split, ("not_allowed", "allowed"), group_by="none")
