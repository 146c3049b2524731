"""The clips of a voice gate run: discovered, embedded once (cached) and split like any run.

:func:`prepare_voice_data` is :func:`~audiogate.data.prepare.prepare_data` for ``model =
"ge2e"``: the same discovery (``group_by``, skipped files and why), copies of one file in one
group, the same stratified group-aware split and training-only balance; but each clip is
embedded by the speaker encoder (:func:`~audiogate.speech.embeddings.embed_clips`, in worker
processes, into the embedding cache) instead of decoded into log-mel features. A data folder
with only ``allowed/`` is accepted: the gate then learns no impostor from the data, and its
threshold comes from impostor voices (:mod:`audiogate.speech.impostors`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ...config import Config
from ...data.discover import SPEC_CLASSES, Clip, Skipped, discover, require_all_classes
from ...data.split import Split, make_split, merge_identical
from ...errors import DataError
from ...speech.embeddings import (
    EmbeddedClips,
    EmbeddingCache,
    EmbedSettings,
    EmbedSpec,
    embed_clips,
)
from ...speech.vad import VadSettings

log = logging.getLogger(__name__)

ALLOWED = "allowed"


def embed_settings(config: Config) -> EmbedSettings:
    """How ``config`` embeds clips: VAD on or off, the first ``max_clip_s`` seconds (what
    ``predict`` judges)."""
    return EmbedSettings(vad=VadSettings() if config.voice_vad else None,
                         max_seconds=config.max_clip_s)


def open_embedding_cache(config: Config) -> EmbeddingCache:
    """The embedding cache of ``config`` (a temporary one when ``cache`` is off)."""
    return EmbeddingCache(config.cache_path(), EmbedSpec.of(embed_settings(config)),
                          temporary=not config.cache)


@dataclass
class VoiceData:
    """Every usable clip with its embedding, and the run's split of them."""

    classes: tuple[str, ...]
    clips: EmbeddedClips
    split: Split
    cache: EmbeddingCache
    skipped: list[Skipped] = field(default_factory=list)
    usable: dict[str, int] = field(default_factory=dict)

    def part(self, subset: str) -> EmbeddedClips:
        """The clips of ``subset`` (train, val, test) in the split's order, with their
        embeddings; ``clips`` carry their split groups."""
        chosen = getattr(self.split, subset)
        index = {c.path: i for i, c in enumerate(self.clips.clips)}
        rows = np.asarray([index[c.path] for c in chosen], dtype=np.int64)
        return EmbeddedClips(clips=list(chosen), labels=self.clips.labels[rows],
                             vectors=self.clips.vectors[rows],
                             speech_s=self.clips.speech_s[rows])


def voice_name(clip: Clip, *, root: str) -> str:
    """The enrolled voice a training clip of ``allowed/`` belongs to: its first sub-folder
    (``allowed/<name>/...``), else ``allowed``."""
    parts = Path(clip.path).relative_to(Path(root, ALLOWED)).parts
    return parts[0] if len(parts) > 1 else ALLOWED


def _split(clips: list[Clip], config: Config) -> Split:
    """The run's split; clips of one class only (``allowed/`` alone) are split as one
    class."""
    labels = {c.label for c in clips}
    if len(labels) > 1:
        return make_split(clips, test_size=config.test_size, val_size=config.val_size,
                          seed=config.seed, balance_by=config.balance)
    (label,) = labels
    one = make_split([replace(c, label=0) for c in clips], test_size=config.test_size,
                     val_size=config.val_size, seed=config.seed, balance_by="none")
    return Split(**{k: [replace(c, label=label) for c in getattr(one, k)]
                    for k in ("train", "val", "test")})


def prepare_voice_data(config: Config, *, progress: bool = True) -> VoiceData:
    """Discover ``config.data``, embed every clip (into the cache), split and balance.

    Raises :class:`~audiogate.errors.DataError` when the data cannot make a run.
    """
    found = discover(config.data, group_by=config.group_by, allowed_only=True)
    if found.classes != SPEC_CLASSES:
        raise DataError(f"{config.data}: a voice gate needs the class folders allowed/ (the "
                        f"voices to let through) and, optionally, not_allowed/; found "
                        f"{list(found.classes)}")
    cache = open_embedding_cache(config)
    embedded, bad = embed_clips(found.clips, cache=cache, workers=config.workers,
                                progress=progress)
    skipped = found.skipped + bad
    usable = {name: int((embedded.labels == i).sum()) for i, name in enumerate(found.classes)}
    require_all_classes({ALLOWED: usable[ALLOWED]}, where=config.data, skipped=skipped)
    merged = merge_identical(embedded.clips, [cache.digest_of(c.path) or c.path
                                              for c in embedded.clips])
    embedded = replace(embedded, clips=merged)
    split = _split(merged, config)
    log.info("classes %s, usable %s; split train %d / val %d / test %d", found.classes, usable,
             len(split.train), len(split.val), len(split.test))
    return VoiceData(found.classes, embedded, split, cache, skipped, usable)
