"""The built-in impostor voices, shipped as embeddings: the file, and the rows that fit a run.

``builtin_impostors.npz`` beside this module is written by ``python -m bench.impostors`` (from
a source checkout; it speaks the clips with espeak-ng and embeds them) and read with
``allow_pickle=False``. For ``n`` clips and ``k`` embedding specs it holds::

    format     int                       BUILTIN_FORMAT
    about      str (JSON)                how the clips were made (generator, seed, words...)
    names      [shape=(n,)] str          "<voice>/<word>_<take>"
    voices     [shape=(n,)] str          each clip's voice: its impostor group
    seconds    [shape=(n,)] float64      each clip's length as recorded (s)
    samples    [shape=(n,)] int64        its length decoded at 16 kHz (samples)
    specs      str (JSON)                k :meth:`EmbedSpec.as_dict` (VAD on, VAD off)
    vectors    [shape=(k, n, EMBED_DIM)] float32, unit rows
    speech_s   [shape=(k, n)] float64    seconds of speech the VAD kept

A run uses the rows of the spec that is its own: same embedding version, encoder weights
and VAD model (SHA-256) and the same encoder and VAD settings. ``max_seconds`` (a run's
``max_clip_s``) is the one setting allowed to differ, as long as it cuts no clip: then the
clips are embedded whole either way. Anything else is refused with what to do instead,
since the clips themselves are not shipped and cannot be embedded again here.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from ..data.discover import Clip
from ..errors import ConfigError, DataError
from ..files import to_json
from .embeddings import EmbeddedClips, EmbedSpec
from .encoder import EMBED_DIM, SAMPLE_RATE

BUILTIN_FILE: Final = Path(__file__).with_name("builtin_impostors.npz")
BUILTIN_FORMAT: Final = 1
"""Layout of the file; bumped when it changes."""
STORED_DTYPE: Final = np.float32
"""Embeddings are stored as computed (float16 would halve the file, about 150 KiB, but move
a score by up to 1.1e-4), so a run gets exactly what embedding the clips would give it."""
FOLDER: Final = ("set impostors = <a folder of recordings of other people> (one sub-folder "
                 "per voice)")
INSTEAD: Final = (f"{FOLDER}, or make the built-in embeddings again for the installed models "
                  "with `python -m bench.impostors` from a source checkout (needs espeak-ng)")
_WHO: Final = "impostors = builtin (what auto takes when the data has no not_allowed clip)"
_ZIP_TIME: Final = (1980, 1, 1, 0, 0, 0)
"""Fixed member dates: the same embeddings always make the same bytes."""


@dataclass(frozen=True)
class BuiltinSet:
    """The file's contents (see the module docstring); ``specs[i]`` goes with
    ``vectors[i]`` and ``speech_s[i]``."""

    about: dict[str, Any]
    names: np.ndarray
    voices: np.ndarray
    seconds: np.ndarray
    samples: np.ndarray
    specs: list[dict[str, Any]]
    vectors: np.ndarray
    speech_s: np.ndarray


def write_builtin(path: str | Path, s: BuiltinSet) -> int:
    """Write ``s`` as an ``.npz`` (deflated, fixed dates) at ``path``; returns its size in
    bytes."""
    arrays = {"format": np.asarray(BUILTIN_FORMAT, np.int64),
              "about": np.asarray(to_json(s.about, indent=None, sort_keys=True)),
              "names": np.asarray(s.names, str), "voices": np.asarray(s.voices, str),
              "seconds": np.asarray(s.seconds, np.float64),
              "samples": np.asarray(s.samples, np.int64),
              "specs": np.asarray(to_json(s.specs, indent=None, sort_keys=True)),
              "vectors": np.asarray(s.vectors, STORED_DTYPE),
              "speech_s": np.asarray(s.speech_s, np.float64)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    Path(path).write_bytes(buffer.getvalue())
    return len(buffer.getvalue())


def read_builtin(path: str | Path = BUILTIN_FILE) -> BuiltinSet:
    """The set stored at ``path``; :class:`DataError` if it is missing, damaged or of
    another format."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["format"]) != BUILTIN_FORMAT:
                raise ValueError(f"format {int(z['format'])}, not {BUILTIN_FORMAT}")
            s = BuiltinSet(about=json.loads(str(z["about"])), names=z["names"],
                           voices=z["voices"], seconds=z["seconds"], samples=z["samples"],
                           specs=json.loads(str(z["specs"])), vectors=z["vectors"],
                           speech_s=z["speech_s"])
        n = len(s.names)
        if (s.vectors.shape != (len(s.specs), n, EMBED_DIM) or s.speech_s.shape != (
                len(s.specs), n) or not len(s.voices) == len(s.seconds) == len(s.samples) == n):
            raise ValueError("arrays of mismatched shapes")
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise DataError(f"the built-in impostor embeddings {path} are missing or damaged "
                        f"({exc}); reinstall audiogate, or {INSTEAD}") from None
    return s


def _without_length(spec: Mapping[str, Any]) -> str:
    """``spec`` as canonical JSON, ``max_seconds`` left out."""
    out = json.loads(to_json(spec, indent=None))
    out["settings"].pop("max_seconds", None)
    return to_json(out, indent=None, sort_keys=True)


def _why_not(wanted: Mapping[str, Any], specs: Sequence[Mapping[str, Any]]) -> str:
    """What keeps every stored spec from being ``wanted``."""
    if all(s.get("version") != wanted["version"] for s in specs):
        return (f"they were made with embedding version {specs[0].get('version')}, this "
                f"audiogate computes version {wanted['version']}")
    if all(s["encoder_sha256"] != wanted["encoder_sha256"] for s in specs):
        return (f"they were made with other encoder weights (SHA-256 "
                f"{specs[0]['encoder_sha256'][:12]}..., installed "
                f"{wanted['encoder_sha256'][:12]}...)")
    vad, with_vad = wanted["vad_sha256"], [s["vad_sha256"] for s in specs if s["vad_sha256"]]
    if vad is not None and with_vad and vad not in with_vad:
        return (f"they were made with another VAD model (SHA-256 {with_vad[0][:12]}..., "
                f"installed {vad[:12]}...)")
    settings = to_json({k: v for k, v in wanted["settings"].items() if k != "max_seconds"},
                       indent=None, sort_keys=True)
    return f"none was made with this run's embedding settings {settings}"


def builtin_embeddings(spec: EmbedSpec, *, path: str | Path = BUILTIN_FILE) -> EmbeddedClips:
    """The built-in impostor clips (label 0, one group per voice) embedded as ``spec``
    embeds them, read from ``path``: :class:`DataError` when no stored spec is ``spec``
    (other models, other settings), :class:`ConfigError` when ``spec.settings.max_seconds``
    would cut a clip."""
    s = read_builtin(path)
    wanted = spec.as_dict()
    key = _without_length(wanted)
    match = [i for i, stored in enumerate(s.specs) if _without_length(stored) == key]
    if not match:
        raise DataError(f"{_WHO}: the shipped embeddings of the built-in impostor voices are "
                        f"not what this run would compute: {_why_not(wanted, s.specs)}; "
                        f"{INSTEAD}")
    max_s = spec.settings.max_seconds
    cut = (s.seconds > max_s) | (s.samples > round(max_s * SAMPLE_RATE))
    if cut.any():
        longest = float(max(s.seconds.max(), s.samples.max() / SAMPLE_RATE))
        raise ConfigError(f"{_WHO}: max_clip_s = {max_s:g} s cuts {int(cut.sum())} of the "
                          f"{len(cut)} built-in impostor clips (the longest lasts {longest:.3f} "
                          f"s), so their shipped embeddings are not what this run would "
                          f"compute; set max_clip_s to at least {np.ceil(longest * 100) / 100:g}"
                          f", or {FOLDER}")
    i = match[0]
    vectors = s.vectors[i].astype(np.float32)
    return EmbeddedClips(clips=[Clip(f"builtin:{name}", 0, str(voice))
                                for name, voice in zip(s.names, s.voices, strict=True)],
                         labels=np.zeros(len(s.names), np.int64), vectors=vectors,
                         speech_s=s.speech_s[i].astype(np.float64))
