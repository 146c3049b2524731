"""Impostor voices that set a voice gate's threshold when the data has few or none.

A gate built from ``allowed/`` clips alone has no rejected example to choose a threshold on;
the operating point (``operating_point = "far=0.02"``, say) is then met on *impostor* clips
added to validation (``impostors`` in the config):

* ``builtin``: words spoken by the 16 voices of the built-in generator
  (:mod:`audiogate.data.speech`, espeak-ng), generated once and kept under the cache folder
  (``<cache>/voice-impostors-v1-...``). They are synthetic voices: they tell how the gate
  treats voices that are not enrolled, not how it treats a real person who tries to pass;
  recordings of other people (a folder) are the better calibration, and the only sound one
  when the allowed voices are themselves espeak-ng voices (the built-in set holds all 16 of
  :data:`~audiogate.data.speech.SPEAKERS`);
* a folder: every audio file under it (recursively), one impostor voice per first
  sub-folder;
* ``auto``: ``builtin`` when the data has no ``not_allowed`` clip, else none;
* ``none``.

Impostors only set the threshold: they are never enrolled, never in the head's training
data, never in the test split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.discover import Clip, Skipped
from ..data.speech import SPEAKERS, WORDS, generate_words
from ..errors import DataError
from ..files import write_json
from .embeddings import EmbeddedClips, EmbeddingCache, embed_clips
from .encoder import EMBED_DIM

log = logging.getLogger(__name__)

BUILTIN = "builtin"
BUILTIN_VERSION = 1
BUILTIN_SEED = 7919
"""Seed of the built-in impostor words (not the benchmark's, so its takes differ)."""
BUILTIN_TAKES = 2
BUILTIN_WORDS: tuple[str, ...] = WORDS
COMPLETE = "complete.json"


@dataclass
class Impostors:
    """Impostor clips (label 0) with their embeddings; ``source``: none, builtin or the
    folder; ``skipped``: impostor files that could not be used."""

    source: str
    clips: EmbeddedClips
    skipped: list[Skipped] = field(default_factory=list)

    def describe(self) -> dict[str, object]:
        return {"source": self.source, "clips": len(self.clips.clips),
                "voices": sorted({c.group for c in self.clips.clips}),
                "skipped": len(self.skipped)}


def resolve_source(setting: str, *, has_negatives: bool) -> str:
    """``none``, ``builtin`` or a folder, from the ``impostors`` setting."""
    if setting == "auto":
        return "none" if has_negatives else BUILTIN
    return setting


def builtin_folder(root: Path) -> Path:
    return root / (f"voice-impostors-v{BUILTIN_VERSION}-seed{BUILTIN_SEED}-"
                   f"takes{BUILTIN_TAKES}-words{len(BUILTIN_WORDS)}")


def builtin_clips(root: Path, *, workers: int = 0) -> list[Clip]:
    """The built-in impostor clips under ``root`` (generated the first time: about 10-30 s
    on two cores), grouped by voice."""
    folder = builtin_folder(root)
    if not (folder / COMPLETE).is_file():  # written last: the folder is whole once it exists
        log.info("generating built-in impostor voices under %s (once) ...", folder)
        generate_words(root=folder, seed=BUILTIN_SEED, takes=BUILTIN_TAKES,
                       words=BUILTIN_WORDS, workers=workers)
        write_json(folder / COMPLETE, {"version": BUILTIN_VERSION, "seed": BUILTIN_SEED,
                                       "takes": BUILTIN_TAKES, "words": list(BUILTIN_WORDS)})
    return [Clip(str(folder / s.name / f"{w}_{t:03d}.wav"), 0, s.name)
            for s in SPEAKERS for w in BUILTIN_WORDS for t in range(BUILTIN_TAKES)]


def folder_clips(folder: Path) -> list[Clip]:
    """Every audio file under ``folder``, grouped by its first sub-folder."""
    from ..deploy.inference import expand_inputs  # local: deploy imports voice lazily

    if not folder.is_dir():
        raise DataError(f"impostor folder not found: {folder}")
    files, _ = expand_inputs([folder])
    if not files:
        raise DataError(f"no audio files in the impostor folder {folder}")
    out = []
    for path in files:
        parts = Path(path).relative_to(folder).parts
        out.append(Clip(path, 0, parts[0] if len(parts) > 1 else ""))
    return out


def load_impostors(source: str, *, root: Path, cache: EmbeddingCache, workers: int,
                   progress: bool) -> Impostors:
    """The impostor clips of ``source`` (see :func:`resolve_source`), embedded into
    ``cache``; built-in ones are generated under ``root``."""
    if source == "none":
        return Impostors("none", _empty())
    clips = builtin_clips(root, workers=workers) if source == BUILTIN else \
        folder_clips(Path(source))
    embedded, skipped = embed_clips(clips, cache=cache, workers=workers, progress=progress,
                                    desc="impostors")
    if not embedded.clips:
        raise DataError(f"none of the {len(clips)} impostor clips of {source} is usable")
    return Impostors(source, embedded, skipped)


def _empty() -> EmbeddedClips:
    return EmbeddedClips(clips=[], labels=np.zeros(0, np.int64),
                         vectors=np.zeros((0, EMBED_DIM), np.float32), speech_s=np.zeros(0))
