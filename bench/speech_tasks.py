"""The speech benchmark's data: a pool of spoken words, and three gate tasks made from it.

The pool (``<work>/words/<speaker>/<word>_<take>.wav``, see :mod:`bench.speech_gen`) is
generated once per size and reused while its parameters match. Each task is a folder of
hard links into the pool, one class folder each, and inside it one sub-folder per voice, so
that a group-aware split (``group_by = "folder"``) keeps voices apart:

* ``keyword``: ``allowed/<speaker>/`` = the keyword by every voice; ``not_allowed/<speaker>/``
  = as many other words by the same voices;
* ``keyword_1to9``: the same with nine ``not_allowed`` clips per ``allowed`` clip;
* ``speaker``: ``allowed/<speaker>-<word>/`` = every word of the two allowed voices (a group
  per voice and word, so test words of an allowed voice are unheard in training);
  ``not_allowed/<speaker>/`` = as many clips, spread over all other voices.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audiogate.files import write_json

from .speech_gen import SPEAKERS, WORDS, SpokenClip, generate_words

KEYWORD = "open"
"""The word the keyword gates let through."""
ALLOWED_SPEAKERS = ("ava", "ben")
"""The voices the speaker gate lets through: one recorded at 16 kHz, one at 8 kHz, so the
sample rate tells nothing."""
UNBALANCED_RATIO = 9
"""``not_allowed`` clips per ``allowed`` clip in ``keyword_1to9``."""
TASKS = ("keyword", "speaker", "keyword_1to9")
POOL_VERSION = 1
"""Bump when the generator changes, so a stored pool is made again."""


@dataclass(frozen=True)
class Size:
    """How big the benchmark is: the first ``speakers`` voices and ``words`` words of
    :mod:`bench.speech_gen`, ``takes`` clips of each word by each voice,
    ``unbalanced_allowed`` keyword takes per voice in ``keyword_1to9``, and the
    :class:`~audiogate.config.Config` overrides every pipeline shares, the reference's
    DataLoader workers, and how many train/val/test splits each pipeline runs on."""

    speakers: int
    words: int
    takes: int
    unbalanced_allowed: int
    config: dict[str, Any] = field(default_factory=dict)
    ref_workers: int = 2
    splits: int = 1


def pool(*, work: Path, size: Size, seed: int) -> list[SpokenClip]:
    """The spoken-word pool under ``work/words`` (made unless a matching one is there)."""
    root = work / "words"
    params = {"version": POOL_VERSION, "seed": seed, "speakers": size.speakers,
              "words": size.words, "takes": size.takes}
    manifest = root / "pool.json"
    if manifest.exists():
        stored = json.loads(manifest.read_text())
        if stored["params"] == params:
            return [SpokenClip(**c) for c in stored["clips"]]
    shutil.rmtree(root, ignore_errors=True)
    clips = generate_words(root=root, seed=seed, takes=size.takes,
                           speakers=SPEAKERS[:size.speakers], words=WORDS[:size.words])
    write_json(manifest, {"params": params, "clips": [asdict(c) for c in clips]})
    return clips


def _link(clip: SpokenClip, folder: Path) -> None:
    """Hard-link (else copy) ``clip`` into ``folder`` under its own file name."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / Path(clip.path).name
    try:
        os.link(clip.path, target)
    except OSError:
        shutil.copyfile(clip.path, target)


def _pick(rng: np.random.Generator, clips: Sequence[SpokenClip], n: int) -> list[SpokenClip]:
    return [clips[i] for i in sorted(rng.choice(len(clips), size=n, replace=False))]


def _keyword(root: Path, by_speaker: dict[str, list[SpokenClip]], *, takes: int,
             ratio: int, rng: np.random.Generator) -> None:
    for name, clips in by_speaker.items():
        hits = [c for c in clips if c.word == KEYWORD and c.take < takes]
        others = [c for c in clips if c.word != KEYWORD]
        for c in hits:
            _link(c, root / "allowed" / name)
        for c in _pick(rng, others, ratio * len(hits)):
            _link(c, root / "not_allowed" / name)


def _speaker(root: Path, by_speaker: dict[str, list[SpokenClip]], *,
             rng: np.random.Generator) -> None:
    allowed = [c for name in ALLOWED_SPEAKERS for c in by_speaker[name]]
    for c in allowed:
        _link(c, root / "allowed" / f"{c.speaker}-{c.word}")
    impostors = [name for name in by_speaker if name not in ALLOWED_SPEAKERS]
    each = math.ceil(len(allowed) / len(impostors))
    for name in impostors:
        for c in _pick(rng, by_speaker[name], each):
            _link(c, root / "not_allowed" / name)


def build_tasks(clips: Sequence[SpokenClip], *, root: Path, size: Size,
                seed: int) -> dict[str, Path]:
    """Make every task folder under ``root`` afresh; ``{task: folder}``."""
    by_speaker: dict[str, list[SpokenClip]] = {}
    for c in clips:
        by_speaker.setdefault(c.speaker, []).append(c)
    folders = {}
    for i, task in enumerate(TASKS):
        folder = root / task
        shutil.rmtree(folder, ignore_errors=True)
        rng = np.random.default_rng([seed, i])
        if task == "speaker":
            _speaker(folder, by_speaker, rng=rng)
        else:
            unbalanced = task == "keyword_1to9"
            _keyword(folder, by_speaker, rng=rng,
                     takes=size.unbalanced_allowed if unbalanced else size.takes,
                     ratio=UNBALANCED_RATIO if unbalanced else 1)
        folders[task] = folder
    return folders


def group_of(path: str, *, root: Path) -> str:
    """The group of a task clip: its class folder's sub-folder (a voice, or voice-word)."""
    return Path(path).resolve().relative_to(root.resolve()).parts[1]


def voice_of(path: str, *, root: Path) -> str:
    """The voice that speaks a task clip."""
    return group_of(path, root=root).split("-")[0]
