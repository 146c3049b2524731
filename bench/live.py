"""Live benchmark (issue 25): gates listening to a long stream of recorded speech, measured the
way wake-word engines are (false accepts per hour, false-reject rate, latency, real-time
factor, memory over a long stream).

    python -m bench.live                # the word gate "open" (default, strong), the voice gate
    python -m bench.live --gates default --hours 0.25
    python -m bench.live --tiny         # seconds-long; what the test suite runs

The speech is recorded: a subset of the Arabic Speech Commands dataset (A. Ghandoura, F.
Hjabo, O. Al Dakkak, "Building and Benchmarking an Arabic Speech Commands Dataset for
Small-Footprint Keyword Spotting", Engineering Applications of Artificial Intelligence, 2021;
CC BY 4.0), read from ``--data`` (default ``../shared/data/asc``, or ``AUDIOGATE_ASC``).

The gates are trained here on the dataset's own speaker split (:func:`bench.real.build_task`
and :func:`bench.real.run_gate`): the word gate "open" against the other words (the
``default`` and ``strong`` recipes), and the voice gate (``voice`` recipe: three allowed
people enrolled from takes 1-3). Each listens (:class:`audiogate.deploy.listen.Listener`;
the word gates both ways, ``windows`` as a network gate does by default and ``speech`` as
``audiogate listen --vad`` does; the voice gate by speech, its own way) to two streams
(:mod:`bench.live_stream`: words placed in pink noise at 30, 20 and 10 dB SNR with non-speech
sounds now and then, the truth known to the sample):

* a *test* stream of ``--hours`` hours from people the gate never heard: the word gate's
  allowed words are "open" said by the 6 test speakers, the rest their other words; the voice
  gate's allowed words are the allowed people's take 5 (never enrolled), the rest every word
  of the 6 test speakers (impostors never heard);
* a *validation* stream of ``--val-minutes`` minutes built the same way from the validation
  speakers (the voice gate: take 4 of the allowed people), on which a second threshold is
  chosen: the lowest that gives at most :data:`TARGET_FA_PER_H` false accepts per hour there.

Reported per gate, at its own threshold and at the validation one: false accepts per hour of
audio that is not an allowed word, the false-reject rate of the allowed words (all, and at each
SNR), the latency
from the end of an allowed word's speech to its event (median, p95), the real-time factor per
core (the listener's CPU time, all threads, over the audio's duration) and the peak RSS after
10 minutes and at the end of the test stream. The latency is counted in the stream's own
samples, as a file source at real time would deliver them (everything fed up to the decision,
in 32 ms blocks), plus the listener's measured compute time for the block that decided it: it
is what a real-time listener sees, without waiting an hour in real time.

An allowed event *hits* an allowed word when it is decided between the word's speech start
and ``HIT_AFTER_S`` after its end (the windows that hold the whole word end up to a window
later); every other allowed event is a false accept.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audiogate.files import write_json

from . import real
from .live_stream import SNRS_DB, SR, Plan, make_plan, render

GATES = ("default", "strong", "voice")
TARGET_FA_PER_H = 0.5
HIT_AFTER_S = 1.0
"""How long after the end of an allowed word's speech an event still counts as its own (s);
the window length is added for window gates."""
RSS_AT_S = 600.0
TINY = {"hours": 0.04, "val_minutes": 1.5}

Result = dict[str, Any]


def _rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text()
                  .splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def listen_worker(checkpoint: str, plan_path: str, out: str, by: str = "gate") -> None:
    """In a fresh process: the gate listens to the plan's stream; its events and every judged
    unit (for thresholds replayed later), CPU time and RSS go to ``out`` (JSON)."""
    import torch

    from audiogate.deploy.listen import Judged, Listener, ListenSettings
    from audiogate.gates import load

    torch.set_num_threads(1)  # as audiogate listen does
    gate = load(checkpoint)
    plan = Plan.load(Path(plan_path))
    units = {k: array.array("d") for k in ("start", "end", "score", "active", "at", "compute")}

    def record(u: Judged) -> None:
        for key, value in (("start", u.start), ("end", u.end), ("score", u.score),
                           ("active", u.active), ("at", u.at), ("compute", u.compute_s)):
            units[key].append(float(value))

    vad = {"gate": None, "speech": True, "windows": False}[by]
    listener = Listener(gate, rate=SR, settings=ListenSettings(vad=vad), on_unit=record)
    events, cpu, fed, rss_at = [], 0.0, 0, None
    wall = time.perf_counter()
    for block in render(plan):
        began = time.process_time()
        events += listener.feed(block)
        cpu += time.process_time() - began
        fed += block.size
        if rss_at is None and fed >= RSS_AT_S * SR:
            rss_at = _rss_mb()
    began = time.process_time()
    events += listener.flush()
    cpu += time.process_time() - began
    write_json(Path(out), {
        "events": [e.as_dict() | {"latency_s": e.latency_s, "end_s": e.end} for e in events],
        "units": {k: list(v) for k, v in units.items()}, "mode": listener.mode,
        "threshold": listener.threshold, "hop": listener.decider.hop,
        "window_s": gate.features.n_samples / gate.features.sr, "cpu_s": cpu,
        "wall_s": time.perf_counter() - wall, "audio_s": plan.n / SR,
        "rss_10min_mb": None if rss_at is None else rss_at[1], "rss_end_mb": _rss_mb()[1],
        "rss_now_end_mb": _rss_mb()[0]})


def replay(measured: Result, *, threshold: float) -> list[dict[str, float]]:
    """The events the listener would have given at ``threshold``: the recorded units through
    a new :class:`~audiogate.deploy.listen.Decider` (the same rules, no model run)."""
    from audiogate.deploy.listen import Decider, Judged, ListenSettings

    speech = measured["mode"] == "speech"
    decider = Decider(positive="allowed", negative="not_allowed", threshold=threshold, sr=SR,
                      rate=SR, settings=ListenSettings(), per_unit=speech, hop=measured["hop"],
                      window=round(measured["window_s"] * SR))
    u = measured["units"]
    events, last = [], None
    for s, e, p, a, at, c in zip(u["start"], u["end"], u["score"], u["active"], u["at"],
                                 u["compute"], strict=True):
        last = Judged(int(s), int(e), p, bool(a), int(at), c)
        events += decider.push(last)
    if not speech:
        events += decider.close(last)
    return [{"event": ev.decision, "end_s": ev.end, "latency_s": ev.latency_s}
            for ev in events]


def score(events: Sequence[dict[str, Any]], plan: Plan, *, window_s: float) -> Result:
    """False accepts per hour, false-reject rate (all, and by SNR) and latencies of
    ``events`` on ``plan``."""
    truth = sorted(plan.allowed, key=lambda w: w.speech)
    after = round((HIT_AFTER_S + window_s) * SR)
    hit = [False] * len(truth)
    latencies, false_accepts = [], 0
    for ev in events:
        if ev["event"] != "allowed":
            continue
        decided = round((ev["end_s"] + ev["latency_s"]) * SR)
        match = next((i for i, w in enumerate(truth)
                      if not hit[i] and w.speech[0] <= decided <= w.speech[1] + after), None)
        if match is None:
            false_accepts += 1
            continue
        hit[match] = True
        latencies.append((decided - truth[match].speech[1]) / SR)
    lat = np.array(latencies) if latencies else np.array([np.nan])
    by_snr = {}
    for snr in sorted({w.snr_db for w in truth}, reverse=True):
        mine = [h for h, w in zip(hit, truth, strict=True) if w.snr_db == snr]
        by_snr[f"{snr:g}"] = 1.0 - sum(mine) / len(mine)
    return {"fa_per_h": false_accepts / (plan.other_s / 3600.0), "false_accepts": false_accepts,
            "frr": 1.0 - sum(hit) / max(1, len(truth)), "allowed_words": len(truth),
            "frr_by_snr": by_snr, "latency_median_ms": 1000 * float(np.median(lat)),
            "latency_p95_ms": 1000 * float(np.percentile(lat, 95)),
            "other_hours": plan.other_s / 3600.0}


def val_threshold(measured: Result, plan: Plan) -> float:
    """The lowest threshold (a grid of 0.01) at which the validation stream has at most
    :data:`TARGET_FA_PER_H` false accepts per hour."""
    for t in np.round(np.arange(0.01, 1.0, 0.01), 2):
        if score(replay(measured, threshold=float(t)), plan,
                 window_s=measured["window_s"])["fa_per_h"] <= TARGET_FA_PER_H:
            return float(t)
    return 1.0


def streams(gate: str, *, clips: Sequence[real.Recording], subsets: dict[str, str],
            people: Sequence[str], work: Path, hours: float, val_minutes: float,
            seed: int) -> dict[str, Plan]:
    """The test and validation plans of one gate (see the module doc)."""
    out = {}
    for name, subset, seconds in (("test", "test", hours * 3600), ("val", "val",
                                                                    val_minutes * 60)):
        if gate == "voice":
            take = real.TEST_TAKE if name == "test" else real.VAL_TAKE
            allowed = [c for c in clips if c.speaker in people and c.take == take]
            other = [c for c in clips if subsets[c.speaker] == subset and c.speaker not in people]
        else:
            mine = [c for c in clips if subsets[c.speaker] == subset]
            allowed = [c for c in mine if c.word == real.KEYWORD]
            other = [c for c in mine if c.word != real.KEYWORD]
        plan = make_plan(allowed=[str(c.path) for c in allowed],
                         other=[str(c.path) for c in other], seconds=seconds, seed=seed)
        plan.save(work / f"{gate}.{name}.plan.json")
        out[name] = plan
    return out


def measure(checkpoint: Path, plan_path: Path, out: Path, by: str) -> Result:
    """:func:`listen_worker` in a fresh process (its memory is the listener's alone)."""
    subprocess.run([sys.executable, "-m", "bench.live", "--worker", str(checkpoint),
                    str(plan_path), str(out), by], check=True)
    return json.loads(out.read_text())


def bench_gate(gate: str, *, args: argparse.Namespace, clips: Sequence[real.Recording],
               subsets: dict[str, str]) -> list[Result]:
    """Train the gate, listen to its streams (the word gates both ways), one result each."""
    task = "voice" if gate == "voice" else "word"
    data, split_file, drawn = real.build_task(task, clips=clips, subsets=subsets,
                                              root=args.work / "tasks", seed=args.seed,
                                              tiny=args.tiny)
    base = {"seed": args.seed, **(real.TINY if args.tiny else {})}
    real.say(f"{gate}: training ...")
    trained = real.run_gate(data=data, split_file=split_file, runs=args.work / "runs",
                            name=gate, overrides={**base, **real.RECIPES[gate]})
    checkpoint = Path(trained["run"]) / "models" / "best.pt"
    plans = streams(gate, clips=clips, subsets=subsets, people=drawn.get("allowed_people", []),
                    work=args.work, hours=args.hours, val_minutes=args.val_minutes,
                    seed=args.seed)
    out = []
    for by in ("gate",) if gate == "voice" else ("windows", "speech"):
        measured = {}
        for name in ("val", "test"):
            real.say(f"{gate} by {by}: listening to the {name} stream "
                 f"({plans[name].n / SR / 60:.0f} min) ...")
            measured[name] = measure(checkpoint, args.work / f"{gate}.{name}.plan.json",
                                     args.work / f"{gate}.{by}.{name}.measured.json", by)
        test, window = measured["test"], measured["test"]["window_s"]
        chosen = val_threshold(measured["val"], plans["val"])
        rows = {"own": {"threshold": test["threshold"],
                        **score(test["events"], plans["test"], window_s=window)},
                "val": {"threshold": chosen,
                        **score(replay(test, threshold=chosen), plans["test"],
                                window_s=window)}}
        out.append({"gate": gate, "mode": test["mode"], "train_s": trained["seconds"],
                    "test_f1": trained["f1"], "rows": rows,
                    "rtf_per_core": test["cpu_s"] / test["audio_s"],
                    "rtf_wall": test["wall_s"] / test["audio_s"],
                    "rss_10min_mb": test["rss_10min_mb"], "rss_end_mb": test["rss_end_mb"],
                    "hours": test["audio_s"] / 3600,
                    "allowed_people": drawn.get("allowed_people")})
    return out


def report(results: Result) -> str:
    snrs = "/".join(f"{s:g}" for s in SNRS_DB)
    lines = [
        f"Live gates on recorded speech: Arabic Speech Commands (Ghandoura et al., 2021; CC BY "
        f"4.0), people never heard in training, words in pink noise at {snrs} dB SNR; "
        f"{results['hours']:g} h test stream, {results['val_minutes']:g} min validation "
        f"stream; seed {results['seed']}; {results['cores']} cores; {results['seconds']:.0f} s "
        "in all.", "",
        f"| gate | by | threshold | FA/h | FRR | FRR at {snrs} dB | latency median / p95 (ms) "
        "| RTF per core | peak RSS 10 min / end (MB) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["gates"]:
        for key, label in (("own", "own"), ("val", f"val, <= {TARGET_FA_PER_H:g} FA/h")):
            row = r["rows"][key]
            rss = r["rss_10min_mb"]
            by_snr = " / ".join(f"{v:.2f}" for v in row["frr_by_snr"].values())
            lines.append(
                f"| {r['gate']} | {r['mode']} | {row['threshold']:.2f} ({label}) "
                f"| {row['fa_per_h']:.2f} ({row['false_accepts']}) "
                f"| {row['frr']:.3f} (of {row['allowed_words']}) | {by_snr} "
                f"| {row['latency_median_ms']:.0f} / {row['latency_p95_ms']:.0f} "
                f"| {r['rtf_per_core']:.3f} "
                f"| {'-' if rss is None else f'{rss:.0f}'} / {r['rss_end_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = real.data_parser(__doc__.splitlines()[0], work="audiogate-live",
                              holds="tasks, runs, streams and results")
    parser.add_argument("--gates", default=",".join(GATES),
                        help=f"comma-separated, from {', '.join(GATES)}")
    parser.add_argument("--hours", type=float, default=1.0, help="test stream length (h)")
    parser.add_argument("--val-minutes", type=float, default=20.0,
                        help="validation stream length (min)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true",
                        help="9 speakers, short training and streams: seconds, figures "
                             "meaningless")
    args = parser.parse_args(argv)
    args.gate_list = [g for g in args.gates.split(",") if g]
    if set(args.gate_list) - set(GATES):
        parser.error(f"unknown gate in {args.gates!r}")
    if args.tiny:
        args.hours, args.val_minutes = TINY["hours"], TINY["val_minutes"]
    return args


def main(argv: Sequence[str] | None = None) -> Result:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        listen_worker(*argv[1:5])
        return {}
    args = _args(argv)
    began = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    clips, subsets = real.recordings(args.data), real.speaker_subsets(args.data)
    gates = [r for g in args.gate_list
             for r in bench_gate(g, args=args, clips=clips, subsets=subsets)]
    results = {"gates": gates, "hours": args.hours, "val_minutes": args.val_minutes,
               "seed": args.seed, "cores": len(os.sched_getaffinity(0)),
               "seconds": time.perf_counter() - began, "tiny": args.tiny,
               "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    real.publish(results, work=args.work, text=report(results))
    return results


if __name__ == "__main__":
    main()
