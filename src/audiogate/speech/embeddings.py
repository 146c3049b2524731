"""Speaker embeddings of clips: computed in parallel worker processes, cached on disk.

:class:`Embedder` turns waveforms into embeddings: each clip is volume-normalised, optionally
cut to its speech (Silero VAD, :mod:`audiogate.speech.vad`), then embedded
(:func:`~audiogate.speech.encoder.embed_utterances`); windows of many clips share a batch.
A clip in which the VAD finds no speech is embedded whole and reported with 0 s of speech, so
callers can tell (and, for a gate, reject) it.

:func:`embed_clips` does that for files, like :func:`~audiogate.data.decode.cache_clips` does
for features: worker processes decode, hash and embed; the main process appends to an
:class:`EmbeddingCache`, one namespace per :class:`EmbedSpec` (encoder weights and settings,
VAD model and settings, decoded length), keyed by the SHA-256 of each file's bytes. Layout::

    <root>/voice-<namespace>/spec.json        what the namespace holds, for people
    <root>/voice-<namespace>/<shard>.npy      float32 [shape=(rows, EMBED_DIM)]
    <root>/voice-<namespace>/<shard>.json     the shard's index, written last

As in the feature cache, files are written under temporary names and renamed, a shard exists
once its index does, and a second run costs one ``stat`` per file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..data.audio_io import load_audio
from ..data.cache import FastKey, Source, fast_key
from ..data.decode import _ordered_map, sort_out
from ..data.discover import Clip, Skipped
from ..errors import AudioError, ConfigError, DataError
from ..files import atomic_write, sha256_file, to_json, write_bytes
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

    def namespace(self) -> str:
        """Folder name: a digest of :meth:`as_dict`."""
        blob = to_json(self.as_dict(), indent=None, sort_keys=True)
        return "voice-" + hashlib.sha256(blob.encode()).hexdigest()[:24]


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


@dataclass
class _Shard:
    name: str
    rows: np.ndarray | None = None  # loaded on first read


class EmbeddingCache:
    """One namespace of the embedding cache; ``temporary=True`` keeps it in a temporary folder
    removed with the object (nothing kept)."""

    def __init__(self, root: str | os.PathLike[str], spec: EmbedSpec, *,
                 temporary: bool = False) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="audiogate-voice-") if temporary else None
        self.spec = spec
        self.folder = Path(self._tmp.name if self._tmp else root) / spec.namespace()
        self._shards: list[_Shard] = []
        self._where: dict[str, tuple[int, int, float]] = {}  # digest -> shard, row, speech_s
        self._sources: dict[FastKey, Source] = {}
        self._new: list[tuple[Source, np.ndarray | None, float]] = []
        try:
            write_bytes(self.folder / "spec.json", to_json(spec.as_dict(), indent=1).encode(),
                        durable=False)
        except OSError as exc:
            raise DataError(f"cannot write the embedding cache in {self.folder} ({exc})") from None
        for index in sorted(self.folder.glob("shard-*.json")):
            self._register(index)

    def _register(self, index: Path) -> None:
        name = index.name[: -len(".json")]
        try:
            meta = json.loads(index.read_text())
            entries, sources = meta["entries"], meta["sources"]
            if entries and not (self.folder / f"{name}.npy").is_file():
                raise ValueError("data file missing")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring damaged embedding cache shard %s (%s)", index, exc)
            return
        self._shards.append(_Shard(name))
        for row, (digest, speech_s) in enumerate(entries):
            self._where.setdefault(digest, (len(self._shards) - 1, row, float(speech_s)))
        for path, size, mtime, digest, reason in sources:
            key = (path, int(size), int(mtime))
            self._sources[key] = Source(key, digest, reason)

    def source(self, key: FastKey) -> Source | None:
        """The recorded source for ``key`` if its embedding (or its failure) is usable."""
        src = self._sources.get(key)
        if src is None or (src.reason is None and src.digest not in self._where):
            return None
        return src

    def add(self, source: Source, vector: np.ndarray | None, speech_s: float = 0.0) -> None:
        """Record what a file gave (failures only for files that could be hashed)."""
        if source.reason is not None and source.digest is None:
            return
        self._new.append((source, vector, speech_s))
        if len(self._new) >= SHARD_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the buffered embeddings and sources as one new shard."""
        if not self._new:
            return
        name = f"shard-{time.time_ns():x}-{os.getpid()}-{secrets.token_hex(3)}"
        fresh: dict[str, tuple[np.ndarray, float]] = {}
        for source, vector, speech_s in self._new:
            if vector is not None and source.digest and source.digest not in self._where:
                fresh.setdefault(source.digest, (vector, speech_s))
        if fresh:
            with atomic_write(self.folder / f"{name}.npy", durable=False) as fh:
                np.lib.format.write_array(fh, np.stack([v for v, _ in fresh.values()]))
        meta = {"version": EMBED_CACHE_VERSION,
                "entries": [[d, s] for d, (_, s) in fresh.items()],
                "sources": [[*src.key, src.digest, src.reason] for src, _, _ in self._new]}
        write_bytes(self.folder / f"{name}.json", to_json(meta, indent=None).encode(),
                    durable=False)
        self._new = []
        self._register(self.folder / f"{name}.json")

    def get(self, digest: str) -> tuple[np.ndarray, float] | None:
        """The stored embedding ``[shape=(EMBED_DIM,)]`` and speech seconds of a file's
        contents, or None."""
        where = self._where.get(digest)
        if where is None:
            return None
        shard_id, row, speech_s = where
        shard = self._shards[shard_id]
        if shard.rows is None:
            shard.rows = np.load(self.folder / f"{shard.name}.npy", mmap_mode="r")
        return np.array(shard.rows[row], dtype=np.float32), speech_s


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
                 ) -> list[tuple[Source, np.ndarray | None, float]]:
    """Hash, decode and embed ``paths`` (runs in a worker process)."""
    out: list[tuple[Source, np.ndarray | None, float]] = []
    decoded: list[tuple[int, np.ndarray]] = []
    for path in paths:
        key = fast_key(path) or (path, -1, -1)
        try:
            y = load_audio(path, sr=SAMPLE_RATE, max_seconds=settings.max_seconds)
            digest = sha256_file(path)
        except AudioError as exc:
            out.append((Source(key, _digest_or_none(path), exc.reason), None, 0.0))
            continue
        except OSError as exc:
            out.append((Source(key, None, f"cannot read ({exc.strerror or exc})"), None, 0.0))
            continue
        decoded.append((len(out), y))
        out.append((Source(key, digest), None, 0.0))
    if decoded:
        result = _embedder(settings).embed([y for _, y in decoded])
        for (i, _), vector, speech_s in zip(decoded, result.vectors, result.speech_s,
                                             strict=True):
            out[i] = (out[i][0], vector, float(speech_s))
    return out


def _digest_or_none(path: str) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


def embed_clips(clips: Sequence[Clip], *, cache: EmbeddingCache, workers: int = 0,
                progress: bool = True, desc: str = "embed") -> tuple[EmbeddedClips,
                                                                      list[Skipped]]:
    """Bring every clip's embedding into ``cache`` (computing only the missing ones, in
    ``workers`` processes; 0 = all cores) and return the usable clips in input order, with
    the unusable ones and why."""
    sources: list[Source | None] = []
    todo: list[int] = []
    for i, clip in enumerate(clips):
        key = fast_key(clip.path)
        sources.append(cache.source(key) if key else None)
        if sources[-1] is None:
            todo.append(i)
    bar = tqdm(total=len(todo), desc=desc, unit="file", disable=not progress or not todo,
               leave=False)
    fn = functools.partial(_embed_chunk, settings=cache.spec.settings)
    try:
        for i, (source, vector, speech_s) in zip(todo, _ordered_map(
                fn, [clips[i].path for i in todo], workers=workers, bar=bar), strict=True):
            cache.add(source, vector, speech_s)
            sources[i] = source
    finally:
        cache.flush()
        bar.close()
    kept, rows, skipped = sort_out(clips, sources, cache.get, missing="could not be embedded")
    vectors = (np.stack([v for v, _ in rows]) if rows
               else np.zeros((0, EMBED_DIM), np.float32))
    return EmbeddedClips(clips=kept, labels=np.asarray([c.label for c in kept], np.int64),
                         vectors=vectors, speech_s=np.asarray([s for _, s in rows])), skipped
