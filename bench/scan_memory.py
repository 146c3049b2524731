"""Peak memory of `audiogate scan` on long recordings: streamed (now) vs decoded whole (before).

    python -m bench.scan_memory                       # 1 h and 8 h; in-memory baseline for 1 h
    python -m bench.scan_memory --hours 1 --baseline-hours 1

Each recording is a WAV generated block by block in a temporary folder (deleted after), 44.1
kHz stereo 16-bit like a typical field recording, so the scan decodes, mixes and resamples it.
Every figure is the peak resident memory (``ru_maxrss``) of one fresh process:

* ``floor``: Python, torch and audiogate imported and the model loaded, nothing scanned;
* ``streamed``: ``python -m audiogate -q scan --checkpoint CKPT FILE --json``;
* ``in memory``: the same scan with the file decoded whole first (``load_audio`` then
  ``scan_wave``: what ``scan_file`` did before it streamed).

The model is an untrained SimpleConvNet with the default config (memory does not depend on the
weights): a 1.99 s window every 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

RECORDING_SR = 44100
CHANNELS = 2
BLOCK_S = 10
"""Seconds generated and written at a time."""
MB = 1024 * 1024

MAKE_CHECKPOINT = """
import sys, torch
from audiogate.config import SPEC_RECIPE, Config
from audiogate.models import ModelSpec
from audiogate.models.checkpoint import save_checkpoint
config = Config(fixed_length=SPEC_RECIPE["fixed_length"])  # 2 s, the notebook's
spec = ModelSpec.of(config, n_classes=2)
torch.manual_seed(0)
save_checkpoint(sys.argv[1], net=spec.build(), spec=spec, config=config,
                classes=("not_allowed", "allowed"), epoch=1, metrics={})
"""
FLOOR = """
import sys, audiogate
audiogate.load(sys.argv[1])
"""
IN_MEMORY = """
import sys, audiogate
from audiogate.data.audio_io import load_audio
from audiogate.deploy.scan import scan_wave
gate = audiogate.load(sys.argv[1])
y = load_audio(sys.argv[2], sr=gate.features.sr)
scan_wave(gate, wave=y, sr=gate.features.sr, source=sys.argv[2])
"""


def write_recording(path: Path, *, hours: float, seed: int = 0) -> None:
    """Alternating 10 s blocks of tone and noise, written as they are made (never whole)."""
    rng = np.random.default_rng(seed)
    n = BLOCK_S * RECORDING_SR
    t = np.arange(n) / RECORDING_SR
    with sf.SoundFile(path, "w", samplerate=RECORDING_SR, channels=CHANNELS,
                      subtype="PCM_16") as out:
        for k in range(round(hours * 3600 / BLOCK_S)):
            if k % 2:
                mono = 0.3 * rng.standard_normal(n)
            else:
                mono = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 600) * t)
            out.write(np.repeat(mono.astype(np.float32)[:, None], CHANNELS, axis=1))


def peak_rss(cmd: list[str]) -> tuple[float, float]:
    """Peak resident memory (MB) and wall time (s) of ``cmd`` run as one fresh process.

    On Linux a child's ``ru_maxrss`` starts at its parent's resident size when it is spawned,
    so this process imports neither torch nor audiogate (it stays near 40 MB; see
    :func:`own_rss`): a child's figure is its own peak.
    """
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err}")
    return usage.ru_maxrss / 1024, time.perf_counter() - began


def own_rss() -> float:
    """Peak resident memory (MB) of this measuring process."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, nargs="+", default=[1.0, 8.0])
    parser.add_argument("--baseline-hours", type=float, nargs="*", default=[1.0],
                        help="lengths also scanned decoded whole (needs ~1.4 GB per hour)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="audiogate-scan-bench-") as tmp:
        ckpt = str(Path(tmp) / "model.pt")
        peak_rss([sys.executable, "-c", MAKE_CHECKPOINT, ckpt])
        floor, _ = peak_rss([sys.executable, "-c", FLOOR, ckpt])
        print(f"floor (python + torch + audiogate + model): {floor:.0f} MB "
              f"(measuring process: {own_rss():.0f} MB)", flush=True)
        print(f"{'recording':<28} {'file (MB)':>9} {'streamed (MB)':>13} {'time (s)':>8} "
              f"{'in memory (MB)':>14} {'ratio':>6}")
        for hours in args.hours:
            path = Path(tmp) / f"long_{hours:g}h.wav"
            write_recording(path, hours=hours)
            size = path.stat().st_size / MB
            streamed, seconds = peak_rss([sys.executable, "-m", "audiogate", "-q", "scan",
                                          "--checkpoint", ckpt, str(path), "--json"])
            whole = "-"
            ratio = "-"
            if hours in args.baseline_hours:
                in_memory, _ = peak_rss([sys.executable, "-c", IN_MEMORY, ckpt, str(path)])
                whole, ratio = f"{in_memory:.0f}", f"{in_memory / streamed:.1f}x"
            name = f"{hours:g} h, {RECORDING_SR / 1000:g} kHz, {CHANNELS} ch, 16-bit"
            print(f"{name:<28} {size:>9.0f} {streamed:>13.0f} {seconds:>8.0f} {whole:>14} "
                  f"{ratio:>6}", flush=True)
            path.unlink()
        print(f"measuring process peak: {own_rss():.0f} MB")


if __name__ == "__main__":
    main()
