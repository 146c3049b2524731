"""The ``audiogate enroll`` command: add or remove allowed voices of a voice gate checkpoint.

::

    audiogate enroll --checkpoint runs/v/models/best.pt --allowed carol/ --out gate.pt
    audiogate enroll --checkpoint gate.pt --allowed a.wav b.wav --name dave --out gate.pt
    audiogate enroll --checkpoint gate.pt --remove carol --out gate.pt

No training: the new voice's clips are embedded and added to the enrolled ones (or a voice's
are dropped), the threshold is kept, and the new checkpoint is written atomically.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import ConfigError


def enroll_command(args: argparse.Namespace) -> int:
    """Run ``audiogate enroll`` (its parser is in :mod:`audiogate.cli`)."""
    from ..deploy.inference import expand_inputs
    from .checkpoint import is_voice_checkpoint
    from .classifier import VoiceClassifier

    began = time.perf_counter()
    if bool(args.allowed) == bool(args.remove):
        raise ConfigError("give either --allowed PATH... (enrol a voice) or --remove NAME")
    if not is_voice_checkpoint(args.checkpoint):
        raise ConfigError(f"{args.checkpoint} is not a voice gate checkpoint (train one with "
                          "--recipe voice); only voice gates enrol voices")
    gate = VoiceClassifier.load(args.checkpoint, workers=args.workers)
    if args.remove:
        gate.remove(args.remove)
        done = f"removed {args.remove!r}"
    else:
        name = args.name or _default_name(args.allowed)
        files, missing = expand_inputs(args.allowed)
        if not files:
            raise ConfigError(f"no audio files in {' '.join(args.allowed)}")
        result = gate.enroll(name, files, replace_existing=args.replace)
        skipped = [*missing, *result.skipped]
        done = f"enrolled {name!r} from {result.n_clips} clip(s)"
        if skipped:
            done += f" ({len(skipped)} left out)"
            for s in skipped[:20]:
                print(f"  left out {s.path}: {s.reason}")
    gate.save(args.out)
    voices = ", ".join(f"{k} ({n})" for k, n in gate.voices.items())
    print(f"{done} -> {args.out} in {time.perf_counter() - began:.1f} s")
    print(f"voices (clips): {voices}; threshold {gate.threshold}")
    return 0


def _default_name(paths: list[str]) -> str:
    first = Path(paths[0])
    if len(paths) == 1 and first.is_dir():
        return first.resolve().name
    raise ConfigError("--name is required unless --allowed is one folder (named after the "
                      "voice)")
