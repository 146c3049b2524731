"""Speaker embeddings of clips: computed in parallel worker processes, cached on disk.

:class:`Embedder` turns waveforms into embeddings: each clip is volume-normalised, optionally
cut to its speech (Silero VAD, :mod:`audiogate.speech.vad`), then embedded
(:func:`~audiogate.speech.encoder.embed_utterances`); windows of many clips share a batch.
A clip in which the VAD finds no speech is embedded whole and reported with 0 s of speech, so
callers can tell (and, for a gate, reject) it.

:func:`embed_clips` does that for files, like :func:`~audiogate.data.decode.cache_clips` does
for features: worker processes decode, hash and embed; the main process appends to an
:class:`EmbeddingCache`, the cache store (:mod:`audiogate.data.store`) with one namespace per
:class:`EmbedSpec` (encoder weights and settings, VAD model and settings, decoded length):
``<root>/embeddings-<digest>/<shard>.vectors.npy``, float32 ``[shape=(rows, EMBED_DIM)]``,
and each entry's seconds of speech in the shard's index.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..data.discover import Clip, Skipped
from ..data.store import Entry, ShardStore, Source, read_source
from ..errors import ConfigError
from ..files import sha256_file
from .encoder import (
    EMBED_DIM,
    SAMPLE_RATE,
    EncoderSettings,
    WindowRunner,
    embed_utterances,
    load_encoder,
    normalize_volume,
    torch_runner,
    weights_digest,
)
from .vad import (
    SileroVad,
    VadSettings,
    cut_segments,
    default_vad,
    model_path,
    segments_from_probabilities,
)

log = logging.getLogger(__name__)

EMBED_CACHE_VERSION = 1
"""Bumped whenever the stored layout or the embedding computation changes."""
SHARD_ROWS = 1024
"""New embeddings buffered before a shard is written (1 kB each)."""
PREFIX = "embeddings-"
"""Start of the embedding cache's folder names (then the digest of the :class:`EmbedSpec`)."""


@dataclass(frozen=True, kw_only=True)
class EmbedSettings:
    """How a clip becomes an embedding: encoder settings, VAD (None = off) and how much of
    each clip is used (its first ``max_seconds``)."""

    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    vad: VadSettings | None = field(default_factory=VadSettings)
    max_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.max_seconds <= 3600:
            raise ConfigError(f"max_seconds must be in (0, 3600], got {self.max_seconds}")


@functools.lru_cache(maxsize=1)
def _vad_digest() -> str:
    return sha256_file(model_path())


@dataclass(frozen=True)
class EmbedSpec:
    """What an embedding depends on: the settings and the digests of the model files."""

    settings: EmbedSettings
    encoder_sha256: str
    vad_sha256: str | None

    @classmethod
    def of(cls, settings: EmbedSettings) -> EmbedSpec:
        """The spec of ``settings`` with the installed models."""
        return cls(settings, weights_digest(), _vad_digest() if settings.vad else None)

    def as_dict(self) -> dict[str, Any]:
        return {"version": EMBED_CACHE_VERSION, "settings": asdict(self.settings),
                "encoder_sha256": self.encoder_sha256, "vad_sha256": self.vad_sha256}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmbedSpec:
        """Inverse of :meth:`as_dict`; :class:`ConfigError` for another embedding version or
        invalid settings."""
        if data.get("version") != EMBED_CACHE_VERSION:
            raise ConfigError(f"embedding version {data.get('version')} is not "
                              f"{EMBED_CACHE_VERSION}; embed the clips again")
        settings, vad = data["settings"], data["settings"]["vad"]
        embed = EmbedSettings(encoder=EncoderSettings(**settings["encoder"]),
                              vad=VadSettings(**vad) if vad is not None else None,
                              max_seconds=float(settings["max_seconds"]))
        vad_sha = data["vad_sha256"]
        return cls(embed, str(data["encoder_sha256"]), None if vad_sha is None else str(vad_sha))



@dataclass(frozen=True)
class Embeddings:
    """``vectors`` ``[shape=(n, EMBED_DIM)]`` float32 (unit rows, or zero) and the seconds of
    speech the VAD kept in each clip ``[shape=(n,)]`` (the clip's length with VAD off)."""

    vectors: np.ndarray
    speech_s: np.ndarray


class Embedder:
    """Waveforms at 16 kHz -> :class:`Embeddings`.

    ``run``: the encoder (default: the PyTorch one); ``vad``: the VAD model (default: one
    shared per process), used only when ``settings.vad`` is set.
    """

    def __init__(self, settings: EmbedSettings = EmbedSettings(), *,
                 run: WindowRunner | None = None, vad: SileroVad | None = None,
                 batch_windows: int = 64) -> None:
        self.settings = settings
        self.run = run or torch_runner(load_encoder())
        self.vad = (vad or default_vad()) if settings.vad else None
        self.batch_windows = batch_windows

    def speech(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each clip cut to its first ``max_seconds``, volume-normalised and cut to its speech
        (empty if none is found; whole if the VAD is off), as the encoder gets it."""
        target, n_max = self.settings.encoder.target_dbfs, self.max_samples
        normed = [normalize_volume(w[:n_max], target_dbfs=target) for w in waves]
        if self.vad is None or self.settings.vad is None:
            return normed
        out = []
        for y, probs in zip(normed, self.vad.probabilities(normed), strict=True):
            segments = segments_from_probabilities(probs, duration_s=y.size / SAMPLE_RATE,
                                                   settings=self.settings.vad)
            out.append(cut_segments(y, segments, sr=SAMPLE_RATE) if segments else y[:0])
        return out

    @property
    def max_samples(self) -> int:
        """Samples of a clip used at most."""
        return round(self.settings.max_seconds * SAMPLE_RATE)

    def embed(self, waves: Sequence[np.ndarray]) -> Embeddings:
        """Embeddings of 1-D float clips at 16 kHz (a clip without speech is embedded
        whole, with 0 s of speech)."""
        speech = self.speech(waves)
        used = [s if s.size else np.asarray(w[:self.max_samples], np.float32)
                for s, w in zip(speech, waves, strict=True)]
        vectors = embed_utterances(used, run=self.run, settings=self.settings.encoder,
                                   batch_windows=self.batch_windows)
        return Embeddings(vectors, np.asarray([s.size / SAMPLE_RATE for s in speech]))


class EmbeddingCache(ShardStore):
    """One namespace of the embedding cache (:mod:`audiogate.data.store`): a clip's
    embedding ``[shape=(EMBED_DIM,)]`` and its seconds of speech, by the digest of its bytes;
    ``temporary=True`` keeps it in a temporary folder removed with the object (nothing kept)."""

    what = "embedding cache"

    def __init__(self, root: str | os.PathLike[str], spec: EmbedSpec, *,
                 temporary: bool = False) -> None:
        self.spec = spec
        self._rows: dict[int, np.ndarray] = {}  # shard -> its vectors, mapped on first read
        super().__init__(root, spec=spec.as_dict(), columns=("vectors",), prefix=PREFIX,
                         shard_rows=SHARD_ROWS, temporary=temporary)

    def get(self, ref: tuple[int, int]) -> tuple[np.ndarray, float]:
        """The stored embedding ``[shape=(EMBED_DIM,)]`` and speech seconds at ``(shard,
        row)`` (:meth:`locate`)."""
        shard, row = ref
        if shard not in self._rows:
            self._rows[shard] = np.load(self.column_path(shard, "vectors"), mmap_mode="r")
        return (np.array(self._rows[shard][row], dtype=np.float32),
                float(self.shards[shard].fields[row][0]))


@dataclass
class EmbeddedClips:
    """Clips with their embeddings: ``vectors`` ``[shape=(n, EMBED_DIM)]``, ``speech_s`` and
    ``labels`` ``[shape=(n,)]``; row ``i`` belongs to ``clips[i]``."""

    clips: list[Clip]
    labels: np.ndarray
    vectors: np.ndarray
    speech_s: np.ndarray


@functools.lru_cache(maxsize=2)
def _embedder(settings: EmbedSettings) -> Embedder:
    return Embedder(settings)


def _embed_chunk(paths: Sequence[str], settings: EmbedSettings,
                 ) -> list[tuple[Source, Entry | None]]:
    """Hash, decode and embed ``paths`` (runs in a worker process)."""
    out: list[tuple[Source, Entry | None]] = []
    decoded: list[tuple[int, np.ndarray]] = []
    for path in paths:
        source, y = read_source(path, sr=SAMPLE_RATE, max_seconds=settings.max_seconds)
        if y is not None:
            decoded.append((len(out), y))
        out.append((source, None))
    if decoded:
        result = _embedder(settings).embed([y for _, y in decoded])
        for (i, _), vector, speech_s in zip(decoded, result.vectors, result.speech_s,
                                             strict=True):
            source = out[i][0]
            out[i] = (source, Entry(str(source.digest), (float(speech_s),),
                                    {"vectors": vector}))
    return out


def embed_clips(clips: Sequence[Clip], *, cache: EmbeddingCache, workers: int = 0,
                progress: bool = True, desc: str = "embed") -> tuple[EmbeddedClips,
                                                                      list[Skipped]]:
    """Bring every clip's embedding into ``cache`` (computing only the missing ones, in
    ``workers`` processes; 0 = all cores) and return the usable clips in input order, with
    the unusable ones and why."""
    sources = cache.fill(clips, functools.partial(_embed_chunk, settings=cache.spec.settings),
                         workers=workers, progress=progress, desc=desc)
    kept, refs, skipped = cache.sort_out(clips, sources, missing="could not be embedded")
    rows = [cache.get(ref) for ref in refs]
    vectors = (np.stack([v for v, _ in rows]) if rows
               else np.zeros((0, EMBED_DIM), np.float32))
    return EmbeddedClips(clips=kept, labels=np.asarray([c.label for c in kept], np.int64),
                         vectors=vectors, speech_s=np.asarray([s for _, s in rows])), skipped
