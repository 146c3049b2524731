"""The clips of a voice gate run: discovered, embedded once (cached) and split like any run.

:func:`prepare_voice_data` is :func:`~audiogate.data.prepare.prepare_data` for ``model =
"ge2e"``: the same discovery (``group_by``, skipped files and why), copies of one file in one
group; the split is by person (:func:`person_split`: every allowed voice split within itself,
impostors held out whole); each clip is embedded by the speaker encoder
(:func:`~audiogate.speech.embeddings.embed_clips`, in worker processes, into the embedding
cache) instead of decoded into log-mel features. A data folder
with only ``allowed/`` is accepted: the gate then learns no impostor from the data, and its
threshold comes from impostor voices (:mod:`audiogate.speech.impostors`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ...config import Config
from ...data.discover import SPEC_CLASSES, Clip, Skipped, discover, require_all_classes
from ...data.prepare import split_for
from ...data.split import Split, merge_identical, stratified_split
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


def person_split(clips: Sequence[Clip], *, root: str, content: Mapping[str, str],
                 test_size: float, val_size: float, seed: int) -> Split:
    """A voice gate's split, by person:

    * each allowed voice (:func:`voice_name`) is split *within* itself: its clips go to
      train, validation and test in the configured fractions (at least one to train), so
      every allowed voice is enrolled from training clips and judged on held-out clips of its
      own, whatever ``group_by`` says; clips of the same ``content`` (path -> a digest of the
      file's bytes) stay together;
    * the ``not_allowed`` clips are split by their groups (``group_by``): an impostor held out
      whole is never heard before the test, which is what makes its false-accept rate honest.

    (:func:`~audiogate.gates.voice.fit.enrol_training` refuses a voice whose training clips
    hold no speech.)
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[Clip]] = {"train": [], "val": [], "test": []}
    allowed = [c for c in clips if c.label == 1]
    voices: dict[str, dict[str, list[Clip]]] = {}
    for clip in allowed:  # copies of one file move together
        voices.setdefault(voice_name(clip, root=root), {}).setdefault(
            content.get(clip.path, clip.path), []).append(clip)
    for name in sorted(voices):
        units = [voices[name][k] for k in sorted(voices[name])]
        order = rng.permutation(len(units))
        n = len(units)
        n_test = max(1, round(test_size * n)) if n >= 3 else 0
        n_val = max(1, round(val_size * n)) if n >= 3 else 0
        for rank, i in enumerate(order):
            subset = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            parts[subset].extend(units[i])
        if n < 3:
            log.warning("voice %r has %d clip(s): all enrolled, none held out to judge it",
                        name, n)
    impostors = [replace(c, label=0) for c in clips if c.label == 0]
    if impostors:
        held = stratified_split(impostors, test_size=test_size, val_size=val_size, seed=seed)
        for subset in parts:
            parts[subset].extend(getattr(held, subset))
    return Split(**parts)


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
    content = {c.path: cache.digest_of(c.path) or c.path for c in embedded.clips}
    merged = merge_identical(embedded.clips, [content[c.path] for c in embedded.clips])
    embedded = replace(embedded, clips=merged)
    if config.split_file:
        split, unlisted = split_for(replace(config, balance="none"), merged)
        skipped += unlisted
    else:
        split = person_split(merged, root=config.data, content=content,
                             test_size=config.test_size, val_size=config.val_size,
                             seed=config.seed)
    unheard = sorted({voice_name(c, root=config.data) for c in merged if c.label == 1}
                     - {voice_name(c, root=config.data) for c in split.train if c.label == 1})
    if unheard:
        raise DataError(f"{config.data}: the split puts no clip of allowed voice(s) "
                        f"{', '.join(unheard)} in train, so they cannot be enrolled and the "
                        "gate would reject them; give each allowed voice training clips")
    log.info("classes %s, usable %s; split train %d / val %d / test %d", found.classes, usable,
             len(split.train), len(split.val), len(split.test))
    return VoiceData(found.classes, embedded, split, cache, skipped, usable)
