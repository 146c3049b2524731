"""The voice gate's built-in impostor voices: their clips spoken, embedded, and shipped.

    python -m bench.impostors                     # about a minute on 2 cores; needs espeak-ng
    python -m bench.impostors --keep /tmp/agimp   # keep the generated WAVs there

The 16 voices of :mod:`bench.speech_gen` say its 10 words twice each (320 clips, seed
:data:`SEED`); every clip is embedded exactly as a voice gate run embeds a file (decoded at
16 kHz, whole: no clip reaches ``max_clip_s``), once with the VAD on and once with it off, and
the embeddings go to ``src/audiogate/voice/builtin_impostors.npz`` (float32; see
:mod:`audiogate.speech.builtin`) with each clip's voice and length and the specs they were
made with (embedding version, encoder weights and VAD model SHA-256, settings). A run with
``impostors = builtin`` uses them only under those same models and settings.

Run it again, and commit the file, whenever the encoder weights, the VAD model or the
embedding computation change. Prints what it wrote, and checks that a run reads back what
was computed.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from audiogate.data.audio_io import load_audio
from audiogate.data.discover import Clip
from audiogate.speech.builtin import (
    BUILTIN_FILE,
    STORED_DTYPE,
    BuiltinSet,
    builtin_embeddings,
    write_builtin,
)
from audiogate.speech.embeddings import (
    EmbeddedClips,
    EmbeddingCache,
    EmbedSettings,
    EmbedSpec,
    embed_clips,
)
from audiogate.speech.encoder import SAMPLE_RATE
from audiogate.speech.vad import VadSettings

from .speech_gen import SPEAKERS, WORDS, SpokenClip, generate_words, require_espeak

SEED = 7919
"""Seed of the built-in impostor words (not the benchmark's, so its takes differ)."""
TAKES = 2
SETTINGS = (EmbedSettings(vad=VadSettings()), EmbedSettings(vad=None))
"""One variant per way a run can embed (``voice_vad`` on, off); ``max_seconds`` is the
default, longer than every clip."""


def espeak_version() -> str:
    done = subprocess.run([require_espeak(), "--version"], capture_output=True, text=True,
                          check=False)
    return done.stdout.split("  Data at")[0].strip()  # the version, not the install path


def embed_variant(clips: list[Clip], settings: EmbedSettings, *, workers: int) -> EmbeddedClips:
    """``clips`` embedded as a run with ``settings`` embeds them; every clip must be usable."""
    cache = EmbeddingCache("", EmbedSpec.of(settings), temporary=True)
    embedded, skipped = embed_clips(clips, cache=cache, workers=workers, progress=True,
                                    desc="embed")
    if skipped:
        raise SystemExit(f"{len(skipped)} generated clips could not be embedded: {skipped[:3]}")
    return embedded


def build(spoken: list[SpokenClip], *, workers: int) -> BuiltinSet:
    """The set for the generated clips ``spoken`` (in generation order)."""
    clips = [Clip(c.path, 0, c.speaker) for c in spoken]
    seconds = np.asarray([sf.info(c.path).frames / sf.info(c.path).samplerate for c in spoken])
    samples = np.asarray([load_audio(c.path, sr=SAMPLE_RATE).size for c in spoken])
    for settings in SETTINGS:
        if seconds.max() > settings.max_seconds:
            raise SystemExit(f"a clip lasts {seconds.max():.2f} s, past max_seconds")
    variants = [embed_variant(clips, settings, workers=workers) for settings in SETTINGS]
    return BuiltinSet(
        about={"generator": "bench.impostors (bench.speech_gen, espeak-ng)",
               "espeak_ng": espeak_version(), "seed": SEED, "takes": TAKES,
               "words": list(WORDS), "voices": [s.name for s in SPEAKERS],
               "sample_rate": SAMPLE_RATE},
        names=np.asarray([f"{c.speaker}/{c.word}_{c.take:03d}" for c in spoken]),
        voices=np.asarray([c.speaker for c in spoken]), seconds=seconds, samples=samples,
        specs=[EmbedSpec.of(settings).as_dict() for settings in SETTINGS],
        vectors=np.stack([v.vectors for v in variants]),
        speech_s=np.stack([v.speech_s for v in variants]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BUILTIN_FILE,
                        help="where to write the .npz (default: the package's own)")
    parser.add_argument("--keep", type=Path, help="generate the WAVs here and keep them")
    parser.add_argument("--workers", type=int, default=0, help="processes (0 = every core)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="agimpostors-") as tmp:
        root = args.keep or Path(tmp)
        spoken = generate_words(root=root, seed=SEED, takes=TAKES, words=WORDS,
                                workers=args.workers)
        built = build(spoken, workers=args.workers)
    size = write_builtin(args.out, built)
    print(f"wrote {args.out}: {size / 1024:.0f} KiB, {len(built.names)} clips of "
          f"{len(set(built.voices.tolist()))} voices ({TAKES} takes of {len(WORDS)} words, "
          f"seed {SEED}, {built.about['espeak_ng']}), {np.dtype(STORED_DTYPE).name} "
          f"embeddings, longest clip {built.seconds.max():.3f} s")
    for settings, spec, full in zip(SETTINGS, built.specs, built.vectors, strict=True):
        read = builtin_embeddings(EmbedSpec.of(settings), path=args.out)
        print(f"  VAD {'on ' if spec['vad_sha256'] else 'off'}: encoder "
              f"{spec['encoder_sha256'][:12]}, VAD model {str(spec['vad_sha256'])[:12]}; "
              f"clips without speech {int((read.speech_s == 0).sum())}; read back as a run "
              f"reads it: largest difference {np.abs(read.vectors - full).max():.1e}")


if __name__ == "__main__":
    main()
