"""Benchmark: the voice gate's speaker embeddings on generated speech, with unheard impostors.

    python -m bench.voice                    # about a minute on 2 cores
    python -m bench.voice --work /tmp/agvoice --threads 2

Speech is generated with espeak-ng (``apt-get install -y espeak-ng``): each *speaker* is an
espeak voice variant with its own pitch and speed; every clip jitters both a little, adds 0.1-0.6
s of silence before and after and background noise at 20-40 dB SNR, and is written at 22.05 kHz
(espeak's rate; audiogate resamples). espeak's variants are settings of one formant
synthesiser, and several (``m1``, ``m3``, ``croak``, ``Alex``; ``f2`` and ``f4``) are
near-clones at the same pitch: the encoder finds them as alike as two words of one variant
(cosine ~0.85). So a speaker here is a (variant, pitch) pair, and two speakers of one such
family differ in pitch by at least 30 of espeak's 0-99 points. Roles:

* 2 allowed speakers, enrolled from ``--enrol`` clips each (enrolment words);
* validation: new words of the allowed speakers + the *calibration* impostor speakers; the
  threshold is the one for FAR 1% there (:func:`~audiogate.reporting.metrics.choose_threshold`);
* test: other new words of the allowed speakers + *held-out* impostor speakers, never seen
  before; reported: EER, ROC-AUC, FAR/FRR and macro-F1 at that threshold;
* a third speaker is then enrolled from ``--enrol`` new files (decode + VAD + embed + enrol +
  save, cold, timed) and its test clips are judged at the same threshold.

Also reported: the largest difference between audiogate's embeddings and resemblyzer's own
``VoiceEncoder.embed_utterance`` on the test clips (VAD off, same volume normalisation), the
embedding time per clip, steady state (batches of clips already in memory), for
PyTorch and the ONNX export, with ``--threads`` intra-op threads (default 1: on a shared 2-core
machine more threads are slower), and the cold ``embed_clips`` wall time over all files.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from audiogate.data.audio_io import load_audio, write_wav
from audiogate.data.discover import Clip
from audiogate.reporting.metrics import choose_threshold, gate_report, macro_f1
from audiogate.speech.embeddings import (
    Embedder,
    EmbeddingCache,
    EmbedSettings,
    EmbedSpec,
    embed_clips,
)
from audiogate.speech.encoder import SAMPLE_RATE, WindowRunner, embed_utterances
from audiogate.speech.export import OnnxEncoder, export_encoder
from audiogate.speech.profile import VoiceProfile

ESPEAK_SR = 22050
RULE = "far=0.01"
"""The operating point chosen on validation."""
ALLOWED = (("en+m3", 20, 150), ("en+f2", 50, 165))
"""(espeak voice, base pitch 0-99, base speed wpm) of the allowed speakers."""
NEW_ALLOWED = ("en+klatt", 50, 160)
"""The speaker enrolled last, from new files."""
CALIBRATION = (("en+m7", 20, 160), ("en+Annie", 50, 155), ("en+croak", 80, 170),
               ("en+f4", 80, 150), ("en+klatt", 20, 145), ("en+Alex", 80, 160))
"""Impostors seen on validation (they set the threshold)."""
HELD_OUT = (("en+m7", 80, 165), ("en+Annie", 80, 150), ("en+m1", 80, 140),
            ("en+f4", 20, 170), ("en+klatt", 80, 155), ("en+m5", 80, 175))
"""Impostors first heard at test time."""
ENROL_WORDS = ("open", "door", "seven", "river", "yellow", "garden", "window", "coffee", "music",
               "paper", "light", "table")
VAL_WORDS = ("morning", "orange", "silver", "thunder", "basket", "pencil", "rabbit", "candle")
TEST_WORDS = ("kitchen", "monday", "forest", "engine", "button", "lemon", "picture", "summer",
              "number", "castle")


@dataclass(frozen=True)
class Speaker:
    voice: str
    pitch: int
    speed: int


def say(word: str, speaker: Speaker, *, rng: np.random.Generator) -> np.ndarray:
    """One spoken word at :data:`ESPEAK_SR` with silence and noise around it, peak 0.5."""
    pitch = int(np.clip(speaker.pitch + rng.integers(-4, 5), 0, 99))
    speed = int(speaker.speed + rng.integers(-10, 11))
    out = subprocess.run(["espeak-ng", "-v", speaker.voice, "-p", str(pitch), "-s", str(speed),
                          "--stdout", word], capture_output=True, check=True).stdout
    y, sr = sf.read(io.BytesIO(out), dtype="float32")
    if sr != ESPEAK_SR:
        raise RuntimeError(f"espeak-ng wrote {sr} Hz, expected {ESPEAK_SR}")
    lead, tail = (np.zeros(int(rng.uniform(0.1, 0.6) * sr), np.float32) for _ in range(2))
    y = np.concatenate([lead, y / max(float(np.abs(y).max()), 1e-9) * 0.5, tail])
    snr_db = rng.uniform(20.0, 40.0)
    noise = rng.standard_normal(y.size).astype(np.float32)
    speech_rms = float(np.sqrt(np.mean(np.square(y[lead.size:y.size - tail.size]))))
    return y + noise * speech_rms * 10 ** (-snr_db / 20)


def write_speaker(root: Path, name: str, speaker: Speaker, words: Sequence[str], *,
                  seed: int) -> list[Path]:
    """``root/name/<word>.wav`` for each word (deterministic for ``seed``)."""
    rng = np.random.default_rng(seed)
    paths = []
    for word in words:
        path = root / name / f"{word}.wav"
        write_wav(path, say(word, speaker, rng=rng), sr=ESPEAK_SR)
        paths.append(path)
    return paths


def clips_of(paths: Sequence[Path], label: int) -> list[Clip]:
    return [Clip(str(p), label) for p in paths]


def steady_embed_time(waves: list[np.ndarray], embedder: Embedder, *, repeats: int = 3) -> float:
    """Seconds per clip embedding ``waves`` in one batch (best of ``repeats``, after a warm-up
    run)."""
    embedder.embed(waves[:4])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        embedder.embed(waves)
        best = min(best, time.perf_counter() - start)
    return best / len(waves)


def against_resemblyzer(waves: list[np.ndarray], run: WindowRunner) -> tuple[float, float]:
    """Largest absolute difference and smallest cosine between audiogate's utterance embeddings
    and resemblyzer's ``VoiceEncoder.embed_utterance`` of the same volume-normalised clips."""
    with warnings.catch_warnings():  # resemblyzer imports scipy.ndimage.morphology
        warnings.simplefilter("ignore", DeprecationWarning)
        from resemblyzer import VoiceEncoder, normalize_volume

    reference = VoiceEncoder("cpu", verbose=False)
    want = np.stack([reference.embed_utterance(normalize_volume(w, -30, increase_only=True))
                     for w in waves])
    got = embed_utterances(waves, run=run)
    return float(np.abs(got - want).max()), float(np.min(np.sum(got * want, axis=1)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="folder for the generated "
                        "clips (default: a temporary folder, removed)")
    parser.add_argument("--enrol", type=int, default=10, help="enrolment clips per speaker")
    parser.add_argument("--top-k", type=int, default=5, help="scoring: mean of top-k")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--workers", type=int, default=2, help="embedding processes")
    parser.add_argument("--no-vad", action="store_true", help="embed whole clips")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        print("bench.voice needs espeak-ng: apt-get install -y espeak-ng", file=sys.stderr)
        return 2
    if args.enrol > len(ENROL_WORDS):
        parser.error(f"--enrol must be <= {len(ENROL_WORDS)}")
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="agvoice-"))
    try:
        return run(args, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    start = time.perf_counter()
    data = work / "clips"
    enrol_words = ENROL_WORDS[:args.enrol]
    seed = args.seed * 1000
    enrol: dict[str, list[Path]] = {}
    val: list[Clip] = []
    test: list[Clip] = []
    for i, spk in enumerate(ALLOWED):
        name = f"allowed{i}"
        enrol[name] = write_speaker(data / "enrol", name, Speaker(*spk), enrol_words,
                                    seed=seed + i)
        val += clips_of(write_speaker(data / "val", name, Speaker(*spk), VAL_WORDS,
                                      seed=seed + 100 + i), 1)
        test += clips_of(write_speaker(data / "test", name, Speaker(*spk), TEST_WORDS,
                                       seed=seed + 200 + i), 1)
    for i, spk in enumerate(CALIBRATION):
        val += clips_of(write_speaker(data / "val", f"cal{i}", Speaker(*spk), VAL_WORDS,
                                      seed=seed + 300 + i), 0)
    for i, spk in enumerate(HELD_OUT):
        test += clips_of(write_speaker(data / "test", f"heldout{i}", Speaker(*spk), TEST_WORDS,
                                       seed=seed + 400 + i), 0)
    new_enrol = write_speaker(data / "new", "enrol", Speaker(*NEW_ALLOWED), enrol_words,
                              seed=seed + 500)
    new_test = clips_of(write_speaker(data / "new", "test", Speaker(*NEW_ALLOWED), TEST_WORDS,
                                      seed=seed + 501), 1)
    generated = time.perf_counter() - start

    settings = EmbedSettings(vad=None) if args.no_vad else EmbedSettings()
    spec = EmbedSpec.of(settings)
    cache = EmbeddingCache(work, spec, temporary=True)  # cold on every run
    enrol_clips = [c for paths in enrol.values() for c in clips_of(paths, 1)]
    everything = enrol_clips + val + test
    t0 = time.perf_counter()
    embedded, skipped = embed_clips(everything, cache=cache, workers=args.workers,
                                    progress=False)
    cold = time.perf_counter() - t0
    if skipped:
        print(f"skipped: {skipped}", file=sys.stderr)
        return 1
    vectors = dict(zip((c.path for c in embedded.clips), embedded.vectors, strict=True))

    profile = VoiceProfile(spec=spec, top_k=args.top_k)
    for name, paths in enrol.items():
        profile = profile.enrol(name, np.stack([vectors[str(p)] for p in paths]))

    def judge(clips: Sequence[Clip]) -> tuple[np.ndarray, np.ndarray]:
        labels = np.asarray([c.label for c in clips])
        return labels, profile.score(np.stack([vectors[c.path] for c in clips]))

    y_val, s_val = judge(val)
    threshold = choose_threshold(y_val, s_val, rule=RULE)
    y_test, s_test = judge(test)
    report = gate_report(y_test, s_test, threshold=threshold)
    f1 = macro_f1(y_test, (s_test >= threshold).astype(np.int64), n_classes=2)

    # enrol a new speaker from files, cold: decode, VAD, embed, enrol, save
    t0 = time.perf_counter()
    fresh = EmbeddingCache(work, spec, temporary=True)
    new_emb, _ = embed_clips(clips_of(new_enrol, 1), cache=fresh, workers=1, progress=False)
    profile = profile.enrol("new", new_emb.vectors)
    profile.save(work / "profile.pt")
    enrol_s = time.perf_counter() - t0
    new_emb_test, _ = embed_clips(new_test, cache=fresh, workers=1, progress=False)
    new_frr = float(np.mean(profile.score(new_emb_test.vectors) < threshold))
    old_frr = report["frr"]

    waves = [load_audio(c.path, sr=SAMPLE_RATE) for c in test]
    torch_s = steady_embed_time(waves, Embedder(settings))
    onnx_path = work / "encoder.onnx"
    export = export_encoder(onnx_path)
    onnx_s = steady_embed_time(waves, Embedder(settings, run=OnnxEncoder(
        str(onnx_path), threads=args.threads)))
    mean_dur = float(np.mean([w.size for w in waves])) / SAMPLE_RATE
    ref_diff, ref_cos = against_resemblyzer(waves, Embedder(settings).run)

    n_allowed_test = int((y_test == 1).sum())
    print(f"voice gate on generated speech (espeak-ng), VAD {'off' if args.no_vad else 'on'}, "
          f"top-k {args.top_k}, torch threads {args.threads}, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"  data: {len(ALLOWED)} allowed speakers x {args.enrol} enrolment clips; validation "
          f"{int((y_val == 1).sum())} allowed + {int((y_val == 0).sum())} clips of "
          f"{len(CALIBRATION)} calibration impostors; test {n_allowed_test} allowed (new words) "
          f"+ {int((y_test == 0).sum())} clips of {len(HELD_OUT)} held-out impostors; "
          f"generated in {generated:.1f} s")
    print(f"  threshold ({RULE} on validation): {threshold:.4f}")
    print(f"  test: EER {report['eer']:.3f}  ROC-AUC {report['roc_auc']:.3f}  "
          f"FAR {report['far']:.3f}  FRR {report['frr']:.3f}  macro-F1 {f1:.3f}")
    print(f"  new speaker enrolled from {len(new_enrol)} files in {enrol_s:.2f} s "
          f"(decode + VAD + embed + enrol + save); its FRR at the same threshold "
          f"{new_frr:.3f} (allowed speakers: {old_frr:.3f})")
    print(f"  embedding time per clip (mean {mean_dur:.2f} s of audio), steady state: "
          f"PyTorch {1000 * torch_s:.1f} ms, ONNX {1000 * onnx_s:.1f} ms "
          f"(export max |diff| {export.max_abs_diff:.1e})")
    print(f"  vs resemblyzer's VoiceEncoder on the {len(waves)} test clips: max |diff| "
          f"{ref_diff:.1e}, min cosine {ref_cos:.7f}")
    print(f"  embed_clips, cold cache, {len(everything)} files, {args.workers} workers: "
          f"{cold:.1f} s ({1000 * cold / len(everything):.0f} ms per file, incl. decoding "
          f"and process start-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
