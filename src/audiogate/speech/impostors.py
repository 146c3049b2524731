"""Impostor voices that set a voice gate's threshold when the data has few or none.

A gate built from ``allowed/`` clips alone has no rejected example to choose a threshold on;
the operating point (``operating_point = "far=0.02"``, say) is then met on *impostor* clips
added to validation (``impostors`` in the config):

* ``builtin``: words spoken by the 16 voices of the benchmark's generator (espeak-ng,
  ``bench/speech_gen.py``), shipped as embeddings (``builtin_impostors.npz`` beside this
  module, made by ``python -m bench.impostors``), so no clip is generated at run time and no
  program is needed. They are used only when they are exactly what this run would compute:
  the same encoder weights and VAD model (by SHA-256), the same encoder and VAD settings, and
  a ``max_clip_s`` that cuts no built-in clip; otherwise the run stops and says what to do.
  They are synthetic voices: they tell how the gate treats voices that are not enrolled, not
  how it treats a real person who tries to pass; recordings of other people (a folder) are
  the better calibration, and the only sound one when the allowed voices are themselves
  espeak-ng voices (the built-in set holds all 16 of the generator's voices);
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

from ..data.discover import Clip, Skipped, expand_inputs
from ..errors import DataError
from .builtin import builtin_embeddings
from .embeddings import EmbeddedClips, EmbeddingCache, embed_clips
from .encoder import EMBED_DIM

log = logging.getLogger(__name__)

BUILTIN = "builtin"


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


def folder_clips(folder: Path) -> list[Clip]:
    """Every audio file under ``folder``, grouped by its first sub-folder."""
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


def load_impostors(source: str, *, cache: EmbeddingCache, workers: int,
                   progress: bool) -> Impostors:
    """The impostor clips of ``source`` (see :func:`resolve_source`): a folder's embedded into
    ``cache``, the built-in ones as shipped for ``cache.spec`` (:class:`DataError` or
    :class:`~audiogate.errors.ConfigError`, saying what to do, when they do not fit it)."""
    if source == "none":
        return Impostors("none", _empty())
    if source == BUILTIN:
        return Impostors(BUILTIN, builtin_embeddings(cache.spec))
    clips = folder_clips(Path(source))
    embedded, skipped = embed_clips(clips, cache=cache, workers=workers, progress=progress,
                                    desc="impostors")
    if not embedded.clips:
        raise DataError(f"none of the {len(clips)} impostor clips of {source} is usable")
    return Impostors(source, embedded, skipped)


def _empty() -> EmbeddedClips:
    return EmbeddedClips(clips=[], labels=np.zeros(0, np.int64),
                         vectors=np.zeros((0, EMBED_DIM), np.float32), speech_s=np.zeros(0))
