"""Spoken words for the voice gate tests, generated once per session with espeak-ng, and one
trained voice gate run on them (tests using them skip without espeak-ng or the voice extra).

The answer is known: the allowed voice ``ava`` (espeak ``en+f3``, high pitch) is far from the
male impostor voices (``ben``, ``dan``, ``finn``, ``hal``: cosine similarity of their speaker
embeddings about 0.55, against 0.75 between two words of ``ava``); ``kai`` (male) is the voice
enrolled later, ``max`` and ``otto`` (male) are impostors no run has heard.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from bench.speech_gen import SPEAKERS, babble_bed, spoken_word

from audiogate.config import Config
from audiogate.data.audio_io import write_wav

needs_voice = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or importlib.util.find_spec("resemblyzer") is None
    or importlib.util.find_spec("silero_vad") is None,
    reason="needs espeak-ng (apt-get install -y espeak-ng) and the voice extra "
           "(pip install 'audiogate[voice]')")

WORDS = ("open", "close", "stop", "go", "yes", "no")
ALLOWED = "ava"
IMPOSTORS = ("ben", "dan", "finn", "hal")
NEW_VOICE = "kai"
UNHEARD = ("max", "otto")


@dataclass(frozen=True)
class VoiceWords:
    data: Path
    """``allowed/ava/`` (3 takes of 6 words) and ``not_allowed/<voice>/`` (1 take each)."""
    allowed_only: Path
    """``allowed/ava/`` alone."""
    impostor_folder: Path
    """Other voices' words, one folder per voice (``--impostors``)."""
    enrol: Path
    """10 clips of ``kai``."""
    held_out: Path
    """New takes: ``kai/``, ``ava/``, and the unheard ``max/`` and ``otto/``."""
    evaluate: Path
    """Class folders of new takes: ``allowed/ava``, ``not_allowed/{max,otto}``."""
    cache: Path


def generate(root: Path, *, seed: int, takes: int, speakers: tuple[str, ...],
             words: tuple[str, ...]) -> None:
    """``root/<speaker>/<word>_<take>.wav``, as :func:`generate_words` writes them but without
    background noise (the tests' answers must not hinge on a word lost in babble)."""
    for speaker in (s for s in SPEAKERS if s.name in speakers):
        bed = babble_bed(seed=seed, sr=speaker.sr)
        (root / speaker.name).mkdir(parents=True, exist_ok=True)
        for word in words:
            for take in range(takes):
                y, _ = spoken_word(word=word, speaker=speaker, seed=seed, take=take,
                                   babble=bed, noise=False)
                write_wav(root / speaker.name / f"{word}_{take:03d}.wav", y, sr=speaker.sr)


def _link_tree(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        os.link(f, dst / f.name)


def make_voice_words(root: Path) -> VoiceWords:
    pool = root / "pool"
    generate(pool / "a", seed=0, takes=3, speakers=(ALLOWED,), words=WORDS)
    generate(pool / "n", seed=0, takes=1, speakers=IMPOSTORS, words=WORDS)
    generate(pool / "k", seed=1, takes=2, speakers=(NEW_VOICE,), words=WORDS[:5])
    generate(pool / "h", seed=2, takes=1, speakers=(NEW_VOICE, ALLOWED, *UNHEARD),
             words=WORDS[:4])
    generate(pool / "i", seed=3, takes=1, speakers=("cleo", "jon", "nia"), words=WORDS)
    data, only, ev = root / "data", root / "allowed_only", root / "evaluate"
    _link_tree(pool / "a" / ALLOWED, data / "allowed" / ALLOWED)
    _link_tree(pool / "a" / ALLOWED, only / "allowed" / ALLOWED)
    for name in IMPOSTORS:
        _link_tree(pool / "n" / name, data / "not_allowed" / name)
    _link_tree(pool / "h" / ALLOWED, ev / "allowed" / ALLOWED)
    for name in UNHEARD:
        _link_tree(pool / "h" / name, ev / "not_allowed" / name)
    return VoiceWords(data=data, allowed_only=only, impostor_folder=pool / "i",
                      enrol=pool / "k" / NEW_VOICE, held_out=pool / "h", evaluate=ev,
                      cache=root / "cache")


def voice_config(words: VoiceWords, runs: Path, name: str, **fields: object) -> Config:
    """The voice recipe on ``words.data`` with a shared embedding cache."""
    return Config.from_recipe("voice", **{"data": str(words.data), "runs_dir": str(runs),
                                          "name": name, "cache_dir": str(words.cache),
                                          "workers": 1, "report_errors": 2, **fields})


@pytest.fixture(scope="session")
def voice_words(tmp_path_factory: pytest.TempPathFactory) -> VoiceWords:
    return make_voice_words(tmp_path_factory.mktemp("voice-words"))


@pytest.fixture(scope="session")
def voice_run(voice_words: VoiceWords, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A trained voice gate run folder (the voice recipe on ``voice_words.data``)."""
    from audiogate.gates import train

    runs = tmp_path_factory.mktemp("voice-runs")
    yield train(voice_config(voice_words, runs, "gate"), progress=False).run.root
