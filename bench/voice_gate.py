"""Benchmark: the voice gate (``--recipe voice``) on bench.speech's speaker task.

    python -m bench.voice_gate                        # about 10 minutes on 2 cores
    python -m bench.voice_gate --seeds 3 --work /tmp/agvoicegate

Uses the spoken-word pool and the ``speaker`` task of :mod:`bench.speech` (16 espeak-ng
voices; allowed: every word of ``ava`` and ``ben``; not_allowed: 15 clips of each other voice;
``group_by = "folder"``, so test impostors are voices never heard in training or validation
and the allowed voices' test words are words they never said in training). Prints:

1. **variants**: the voice recipe with each head (``none``, ``logistic``) and operating point
   (``f1``, ``eer``, ``far=0.02``), test macro-F1, FAR, FRR, EER and ROC-AUC, mean over
   ``--seeds`` splits (the split seed; the words stay);
2. **voices**: for each espeak voice, the mean cosine similarity of its clips' speaker
   embeddings to each other and to the nearest other voice's (how alike the voices are to
   the pretrained encoder: what limits the gate here);
3. **enrolment**: a third voice (``iris``) enrolled from 10 clips into the seed-0 gate, with
   ``audiogate enroll`` (a new process: start-up, decode, VAD, embed, write) and with
   :meth:`~audiogate.gates.voice.classifier.VoiceClassifier.enroll` (a fresh gate, encoder load
   included), wall and CPU seconds (on a shared machine CPU seconds are the steadier
   figure); its FRR on 90 other clips at the gate's threshold beside the allowed voices'
   test FRR, for both the recipe's operating point and the EER one;
4. **ONNX**: the exported gate's largest score difference from PyTorch on the test clips, and
   milliseconds per clip of both (steady state, ``predict_many`` over the test clips).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import audiogate
from audiogate.config import Config
from audiogate.data.discover import Clip
from audiogate.data.split import read_split
from audiogate.gates.voice.data import embed_settings
from audiogate.reporting.metrics import error_rates
from audiogate.speech.embeddings import EmbeddingCache, EmbedSpec, embed_clips

from .speech import SIZES
from .speech_gen import SPEAKERS
from .speech_tasks import build_tasks, pool

HEADS = ("none", "logistic")
HEAD_SCORE: dict[str, dict[str, Any]] = {"logistic": {"voice_score": "topk"}}
"""The logistic head scores by top-k similarity; ``none`` runs the recipe's own rule."""
RULES = ("f1", "eer", "far=0.02")
NEW_VOICE = "iris"
ENROL_TAKE = 0


def _child_cpu_s() -> float:
    """CPU seconds of this process's reaped children."""
    import resource

    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _config(task: Path, work: Path, name: str, **fields: Any) -> Config:
    return Config.from_recipe("voice", data=str(task), runs_dir=str(work / "runs"), name=name,
                              cache_dir=str(work / "cache"), group_by="folder",
                              report_errors=0, **fields)


def _train(config: Config) -> Path:
    import shutil

    shutil.rmtree(Path(config.runs_dir) / config.name, ignore_errors=True)
    return audiogate.train(config, progress=False).run.root


def variants(task: Path, work: Path, seeds: int) -> list[str]:
    """Table 1: mean test figures per head and operating point."""
    import json

    lines = ["| head | operating point | test F1 | FAR | FRR | EER | ROC-AUC | F1 per seed |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for head in HEADS:
        for rule in RULES:
            rows = []
            for seed in range(seeds):
                run = _train(_config(task, work, f"{head}-{rule}-{seed}", seed=seed,
                                     voice_head=head, operating_point=rule,
                                     **HEAD_SCORE.get(head, {})))
                test = json.loads((run / "test_metrics.json").read_text())
                g = test["gate"]
                rows.append([test["macro_f1"], g["far"], g["frr"], g["eer"], g["roc_auc"]])
            m = np.mean(rows, axis=0)
            per = " ".join(f"{r[0]:.2f}" for r in rows)
            lines.append(f"| {head} | {rule} | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.3f} | "
                         f"{m[3]:.3f} | {m[4]:.3f} | {per} |")
            _say(lines[-1])
    return lines


def voices(words: list[Any], work: Path) -> list[str]:
    """Table 2: within-voice and nearest-other-voice similarity."""
    config = Config(cache_dir=str(work / "cache"))
    names = [s.name for s in SPEAKERS]
    clips = [Clip(c.path, names.index(c.speaker), c.speaker) for c in words]
    spec = EmbedSpec.of(embed_settings(config))
    embedded, _ = embed_clips(clips, cache=EmbeddingCache(config.cache_path(), spec),
                              workers=0, progress=False)
    v, labels = embedded.vectors, embedded.labels
    sims = np.zeros((len(names), len(names)))
    for i in range(len(names)):
        for j in range(len(names)):
            block = v[labels == i] @ v[labels == j].T
            sims[i, j] = block[~np.eye(len(block), dtype=bool)].mean() if i == j else block.mean()
    lines = ["| voice | espeak-ng voice | within | nearest other voice | its similarity |",
             "|---|---|---:|---|---:|"]
    for i, s in enumerate(SPEAKERS):
        other = sims[i].copy()
        other[i] = -1
        j = int(other.argmax())
        lines.append(f"| {s.name} | {s.voice} p{s.pitch} {s.sr // 1000} kHz | {sims[i, i]:.2f} "
                     f"| {names[j]} | {sims[i, j]:.2f} |")
    return lines


def enrolment(task: Path, work: Path, words: list[Any]) -> list[str]:
    """Table 3: enrolling a new voice, timed, and its FRR beside the allowed voices'."""
    import json

    mine = [c for c in words if c.speaker == NEW_VOICE]
    enrol = [c.path for c in mine if c.take == ENROL_TAKE]
    held = [c.path for c in mine if c.take != ENROL_TAKE]
    lines = ["| operating point | threshold | allowed voices' test FRR | new voice's FRR "
             "(90 clips) | `audiogate enroll` wall / CPU s | `enroll()` wall / CPU s |",
             "|---|---:|---:|---:|---:|---:|"]
    for rule in ("far=0.02", "eer"):
        run = _train(_config(task, work, f"enrol-{rule}", operating_point=rule))
        best = run / "models" / "best.pt"
        out = work / f"enrolled-{rule}.pt"
        began, cpu = time.perf_counter(), _child_cpu_s()
        subprocess.run([sys.executable, "-m", "audiogate", "-q", "enroll", "--checkpoint",
                        str(best), "--allowed", *enrol, "--name", NEW_VOICE, "--out", str(out)],
                       check=True, capture_output=True)
        cli = (time.perf_counter() - began, _child_cpu_s() - cpu)
        began, cpu = time.perf_counter(), time.process_time()
        gate = audiogate.load(best)
        gate.enroll(NEW_VOICE, enrol)
        api = (time.perf_counter() - began, time.process_time() - cpu)
        scores = np.array([p.score for p in gate.predict_many(held)])
        _, frr = error_rates(np.ones(len(scores)), scores, threshold=gate.threshold or 0.5)
        test = json.loads((run / "test_metrics.json").read_text())["gate"]
        lines.append(f"| {rule} | {gate.threshold:.3f} | {test['frr']:.3f} | {frr:.3f} "
                     f"| {cli[0]:.1f} / {cli[1]:.1f} | {api[0]:.1f} / {api[1]:.1f} |")
        _say(lines[-1])
    return lines


def onnx(work: Path) -> list[str]:
    """Table 4: ONNX vs PyTorch on the test clips of the seed-0 recipe run."""
    run = work / "runs" / "enrol-far=0.02"
    best = run / "models" / "best.pt"
    clips = [c.path for c in read_split(run / "split.csv").test]
    report = audiogate.load(best).export(work / "gate.onnx", source=best)
    out = ["| backend | ms per clip | largest score difference from PyTorch |",
           "|---|---:|---:|"]
    scores = {}
    for name, gate in (("torch", audiogate.load(best)), ("onnx", audiogate.load(
            work / "gate.onnx"))):
        gate.predict_many(clips[:4])  # warm up
        began = time.perf_counter()
        scores[name] = np.array([p.score for p in gate.predict_many(clips)])
        ms = 1000 * (time.perf_counter() - began) / len(clips)
        diff = float(np.abs(scores[name] - scores["torch"]).max())
        out.append(f"| {name} | {ms:.1f} | {diff:.1e} |")
    out.append(f"\nexport check on {report.n_probe_clips} probe clips: max |score diff| "
               f"{report.max_abs_diff:.1e}; file {report.bytes / 1e6:.1f} MB")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir()) / "audiogate-voice-gate")
    parser.add_argument("--seeds", type=int, default=6, help="splits per variant")
    args = parser.parse_args(argv)
    began, load = time.perf_counter(), os.getloadavg()[0]
    _say(f"spoken words and the speaker task under {args.work} ...")
    words = pool(work=args.work, size=SIZES["full"], seed=0)
    task = build_tasks(words, root=args.work / "tasks", size=SIZES["full"], seed=0)["speaker"]
    sections = [("Variants (speaker task, test split, mean over "
                 f"{args.seeds} splits)", variants(task, args.work, args.seeds)),
                ("Voices (speaker embeddings of all 1600 clips)", voices(words, args.work)),
                ("Enrolment of a new voice (seed-0 split)", enrolment(task, args.work, words)),
                ("ONNX export (seed-0 split, recipe voice)", onnx(args.work))]
    for title, lines in sections:
        print(f"\n**{title}**\n")
        print("\n".join(lines))
    print(f"\n{len(os.sched_getaffinity(0))} cores; 1-minute load average {load:.1f} at the "
          f"start, {os.getloadavg()[0]:.1f} at the end; {time.perf_counter() - began:.0f} s.")


if __name__ == "__main__":
    main()
