"""Command line: ``audiogate <command>``. A thin layer over the library API."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from .config import FIELD_TYPES, RESUME_FIELDS, TRAINING, Config, choices, reference
from .console import ABORTED, EXIT_ABORTED, cli_interrupts, native_stderr_silenced
from .errors import AudiogateError, ConfigError

log = logging.getLogger("audiogate")

EXIT_USAGE = 2
EXIT_NOTHING_USABLE = 1


def _frames(text: str) -> int | str:
    """``--fixed-length``: a number of frames, or ``auto``."""
    return "auto" if text == "auto" else int(text)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per :class:`Config` field, by section; unset flags stay ``None``
    (recipe, TOML and defaults win)."""
    groups: dict[str, Any] = {}
    for doc in reference():
        if doc.section not in groups:
            groups[doc.section] = parser.add_argument_group(f"config: {doc.section} "
                                                            "(override --config)")
        group, kind = groups[doc.section], FIELD_TYPES[doc.name]
        help_text = f"{doc.help.replace('%', '%%')} (default: {doc.default})"
        if kind is bool:
            group.add_argument(doc.flag, dest=doc.name, action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        elif choices(kind) is not None:
            group.add_argument(doc.flag, dest=doc.name, choices=choices(kind), default=None,
                               help=help_text)
        else:
            parse = _frames if doc.name == "fixed_length" else kind
            group.add_argument(doc.flag, dest=doc.name, type=parse, default=None,
                               metavar=kind.__name__.upper(), help=help_text)
    groups[TRAINING].add_argument("--epochs", dest="max_epochs", type=int, default=None,
                       help="alias of --max-epochs")


def config_from_args(args: argparse.Namespace) -> Config:
    """Defaults < ``--config`` TOML < command-line flags."""
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
                 if getattr(args, f.name, None) is not None}
    if getattr(args, "config", None):
        return Config.from_toml(args.config, **overrides)
    return Config.from_dict(overrides, source="command line")


# ----------------------------------------------------------------- commands
def cmd_eda(args: argparse.Namespace) -> int:
    from .data.discover import skipped_written_on_refusal
    from .data.prepare import resolve_window
    from .reporting.eda import analyse, write_eda

    with skipped_written_on_refusal(Path(args.out) / "skipped.csv"):
        config = resolve_window(config_from_args(args))  # "auto": the window train would use
        report = analyse(config.data, features=config.features())
    paths = write_eda(report, Path(args.out))
    summary = report.summary()
    print(f"classes: {summary['counts']}")
    d = summary["duration_s"]
    print(f"duration (s): min {d['min']:.2f}  median {d['median']:.2f}  p90 {d['p90']:.2f}  "
          f"max {d['max']:.2f}")
    print(f"fixed_length = {report.fixed_length} frames = {report.window_s:.2f} s window; "
          f"{100 * summary['fraction_within_window']:.0f}% of clips fit whole")
    print(f"suggested fixed_length = {report.suggested_fixed_length} frames "
          f"({report.suggested_s:.2f} s, covers 90% of clips)")
    _report_skipped(report.skipped)
    print(f"histogram: {paths['histogram']}\nsummary:   {paths['summary']}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .gates import resume, train
    from .training import distributed

    if args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {args.nproc}")
    if not distributed.launched() and args.nproc > 1:
        if not args.resume and not config_from_args(args).cache:  # fail once, here
            raise ConfigError("--no-cache cannot be used with --nproc: the processes share "
                              "the on-disk feature cache")
        return distributed.launch(args.argv, nproc=args.nproc)
    env = distributed.from_env()
    if distributed.launched() and args.nproc > 1 and args.nproc != env.local_world_size:
        raise ConfigError(f"--nproc {args.nproc}, but torchrun started {env.local_world_size} "
                          "process(es) on this machine; drop --nproc under torchrun")
    if not env.is_main:  # rank 0 alone logs and shows progress; the others only errors
        logging.getLogger("audiogate").setLevel(logging.ERROR)
    quiet = args.quiet or not env.is_main
    if args.resume:
        if args.config:
            raise ConfigError("--config cannot be used with --resume: a resumed run keeps "
                              f"its own config ({Path(args.resume) / 'config.toml'})")
        changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)}
        result = resume(args.resume, progress=not quiet, **changes)
    else:
        result = train(config_from_args(args), progress=not quiet)
    if not env.is_main:
        return 0
    print(f"run folder: {result.run.root}")
    print(f"stopped: {result.stop_reason} after {result.epochs_done} epoch(s)")
    chosen = "fitted" if result.best_epoch is None else f"best epoch {result.best_epoch}"
    print(f"{chosen}: val macro-F1 {result.best_val_f1:.4f} -> {result.run.best}")
    if result.test_report:
        print(f"test macro-F1 of the best model: {result.test_report['macro_f1']:.4f} "
              f"({result.run.test_report})")
        if result.run.report.exists():
            print(f"report: {result.run.report}")
        gate = result.test_report.get("gate")
        if gate:
            print(f"gate accepts {gate['positive']}; operating point: P({gate['positive']}) "
                  f">= {gate['threshold']:.4f}; on the test split FAR {gate['far']:.4f}, FRR "
                  f"{gate['frr']:.4f}, EER {gate['eer']:.4f}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from .data.discover import skipped_written_on_refusal
    from .data.prepare import (
        clear_refused_skipped,
        prepare_data,
        refused_skipped_path,
        resolve_window,
    )

    config = config_from_args(args)
    with skipped_written_on_refusal(refused_skipped_path(config)):
        config = resolve_window(config)  # "auto": the window train would use
        if not config.cache:
            raise ConfigError("audiogate cache fills the on-disk cache; drop --no-cache")
        data = prepare_data(config, progress=not args.quiet)
    clear_refused_skipped(config)
    print(f"cache: {data.cache.folder}")
    print(f"clips usable per class: {data.usable}; split train {len(data.train)} / val "
          f"{len(data.val)} / test {len(data.test)}")
    _report_skipped(data.skipped)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .gates import evaluate
    from .reporting.tables import format_report

    result = evaluate(args.checkpoint, data=args.data, subset=args.split, out=args.out,
                      threshold=args.threshold, workers=args.workers,
                      report_errors=args.report_errors, progress=not args.quiet)
    print(format_report(result.report))
    _report_skipped(result.skipped)
    print(f"\nreport: {result.report_path}\nconfusion matrix: {result.confusion_path}")
    if result.page_path:
        print(f"page: {result.page_path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .gates import write_report

    print(f"wrote {write_report(args.folder, errors=args.report_errors)}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from .reporting.run_table import format_runs, list_runs, sort_runs

    runs = sort_runs(list_runs(args.runs_dir), key=args.sort)
    if not runs and args.format == "table":
        print(f"no runs in {args.runs_dir}")
        return 0
    sys.stdout.write(format_runs(runs, fmt=args.format))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .core.gate import Prediction
    from .data.discover import expand_inputs
    from .reporting.tables import format_predictions

    gate = _load_gate(args)
    files, missing = expand_inputs(args.paths)
    results = gate.predict_many(files, progress=not args.quiet)
    positive = gate.decision.positive_class
    results += [Prediction(source=s.path, label=None, index=None, error=s.reason,
                           positive=positive) for s in missing]
    sys.stdout.write(format_predictions(results, gate.classes, fmt=args.format,
                                        positive=positive))
    if not any(r.ok for r in results):
        log.error("no input could be judged")
        return EXIT_NOTHING_USABLE
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    sizes = {k: v for k, v in (("n_per_class", args.n_per_class), ("epochs", args.epochs))
             if v is not None}
    run_demo(out=Path(args.out), **sizes, progress=not args.quiet)
    return 0


def _load_gate(args: argparse.Namespace) -> Any:
    """The gate ``--checkpoint`` and ``--backend`` ask for (see :func:`audiogate.load`)."""
    from .gates import load

    backend = "onnx" if Path(args.checkpoint).suffix.lower() == ".onnx" else args.backend
    return load(args.checkpoint, backend=backend, onnx=args.onnx, threshold=args.threshold,
                workers=getattr(args, "workers", 1))


def cmd_export(args: argparse.Namespace) -> int:
    from .gates import load

    gate = load(args.checkpoint, workers=1)
    print(gate.export(args.onnx, source=Path(args.checkpoint), tolerance=args.tolerance)
          .summary())
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    from .data.discover import expand_inputs
    from .deploy.scan import scan_file
    from .deploy.segments import format_scan
    from .errors import AudioError

    gate = _load_gate(args)
    files, missing = expand_inputs(args.paths)
    results, failed = [], [f"{s.path}: {s.reason}" for s in missing]
    for path in files:
        try:
            results.append(scan_file(gate, path=path, hop_s=args.hop, smooth_s=args.smooth,
                                     vad=args.vad))
        except AudioError as exc:
            failed.append(str(exc))
    sys.stdout.write(format_scan(results, fmt=args.format, windows=args.windows))
    for problem in failed:
        log.error("skipped %s", problem)
    if not results:
        log.error("no recording could be scanned")
        return EXIT_NOTHING_USABLE
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from .deploy.guard import TOKEN_ENV, check_listen, check_token
    from .deploy.judge import ServeSettings
    from .deploy.serve import report_of, run_server

    token = check_token(args.token if args.token is not None else os.environ.get(TOKEN_ENV))
    check_listen(host=args.host, port=args.port, token=token, insecure=args.insecure)
    settings = ServeSettings(max_upload_mb=args.max_upload_mb, max_seconds=args.max_seconds,
                             hop_s=args.hop, token=token, idle_timeout_s=args.idle_timeout,
                             enroll_out=args.enroll_out,
                             local_only=False if args.insecure else None)
    run_server(_load_gate(args), host=args.host, port=args.port, settings=settings,
               report=report_of(args.checkpoint))
    return 0


def _add_threshold_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", type=float, default=None, metavar="P",
                   help="a two-class gate accepts its positive class when P(positive) >= P "
                        "(default: the operating point chosen on validation, stored in the "
                        "checkpoint)")


def _add_report_errors_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report-errors", type=int, default=None, metavar="N",
                   help="wrong clips played and drawn in report.html (default: the model's "
                        "report_errors setting)")


def _add_backend_flags(p: argparse.ArgumentParser) -> None:
    _add_threshold_flag(p)
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="run the checkpoint with PyTorch, or its ONNX export with onnxruntime")
    p.add_argument("--onnx", metavar="PATH",
                   help="ONNX file for --backend onnx (default: CHECKPOINT with .onnx)")


def _add_deploy_parsers(sub: Any) -> None:
    """The ``export``, ``scan`` and ``serve`` subcommands."""
    p = sub.add_parser("export", help="export a checkpoint (front end included) to ONNX")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--onnx", required=True, metavar="PATH", help="output file, e.g. model.onnx")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest logit difference onnxruntime vs PyTorch accepted, relative to "
                        "the logit where it exceeds 1 (default: 1e-4)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("scan", help="segments of long recordings judged window by window")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("paths", nargs="+", help="audio files and/or folders")
    p.add_argument("--hop", type=float, default=0.5, help="seconds between window starts")
    p.add_argument("--smooth", type=float, default=0.0, metavar="SECONDS",
                   help="average window scores over this span before merging (0 = off)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", dest="format", action="store_const", const="json")
    fmt.add_argument("--csv", dest="format", action="store_const", const="csv")
    p.set_defaults(format="table")
    p.add_argument("--windows", action="store_true", help="also list every window (JSON)")
    p.add_argument("--vad", action=argparse.BooleanOptionalAction, default=None,
                   help="judge each speech segment (Silero VAD) and skip silence, instead of "
                        "every window (default: on for a voice gate, off otherwise)")
    _add_backend_flags(p)
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("serve", help="HTTP service and web page for a checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; other than loopback needs a token or --insecure")
    p.add_argument("--port", type=int, default=8000, help="TCP port, 1-65535")
    p.add_argument("--token", help="access token every request but /health and the web page "
                                   "must send as 'Authorization: Bearer TOKEN' (default: env "
                                   "AUDIOGATE_TOKEN, which keeps it out of the process list)")
    p.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback --host without a token; without a token "
                        "on loopback, answer requests addressed to any host name (behind a "
                        "proxy), not only to localhost")
    p.add_argument("--idle-timeout", type=int, default=15, metavar="SECONDS",
                   help="close connections that send no complete request head, or stall "
                        "a request body, for this long (default: 15)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="request body limit (MiB)")
    p.add_argument("--max-seconds", type=float, default=600.0,
                   help="longest recording accepted (s)")
    p.add_argument("--hop", type=float, default=0.5, help="hop of the segment scan (s)")
    p.add_argument("--enroll-out", metavar="PATH",
                   help="voice gate: accept POST /enroll and DELETE /enroll/NAME, writing the "
                        "gate with its voices to PATH after each change (default: off)")
    _add_backend_flags(p)
    p.set_defaults(func=cmd_serve)


def cmd_listen(args: argparse.Namespace) -> int:
    """``audiogate listen``: decide live on a microphone, a file or stdin (see
    :mod:`audiogate.deploy.listen`); events on stdout, commands and a webhook per event."""
    from .deploy.actions import CommandAction, Printer, Webhook
    from .deploy.listen import Listener, ListenSettings
    from .deploy.listen_loop import run_listener
    from .deploy.sources import list_devices, open_source

    if args.list_devices:
        for d in list_devices():
            print(f"{d['index']:3d}{' *' if d['default'] else '  '} {d['name']} "
                  f"({d['channels']} in, {d['rate']:g} Hz)")
        return 0
    if not args.checkpoint:
        raise ConfigError("listen needs --checkpoint GATE (or --list-devices)")
    k, _, n = args.k_of_n.partition("/")
    if not (k.isdigit() and n.isdigit()):
        raise ConfigError(f"--k-of-n must look like 2/3, got {args.k_of_n!r}")
    settings = ListenSettings(vad=args.vad, hop_s=args.hop, k=int(k), n=int(n),
                              refractory_s=args.refractory, activity_db=args.activity_db)
    import torch

    torch.set_num_threads(1)  # one window at a time: one thread is fastest, and leaves cores
    gate = _load_gate(args)
    source = open_source(args.input, gate_rate=gate.features.sr, realtime=args.realtime,
                         fmt=args.format, rate=args.rate, channels=args.channels,
                         device=args.device, reconnect=args.reconnect)
    listener = Listener(gate, rate=source.rate, settings=settings)
    actions: list[Any] = [Printer(as_json=args.json)]
    actions += [CommandAction(cmd, on=on) for cmd, on in
                ((args.on_allowed, "allowed"), (args.on_rejected, "rejected")) if cmd]
    actions += [Webhook(args.webhook)] if args.webhook else []
    return run_listener(listener, source, actions, on_start=lambda: log.info(
        "listening to %s by %s (threshold %.3f; Ctrl+C to stop)", source.name, listener.mode,
        listener.threshold))


def _add_listen_parser(sub: Any) -> None:
    p = sub.add_parser("listen", help="decide live on a microphone, a file or stdin: one "
                                      "event per utterance, commands and a webhook per event")
    p.add_argument("--checkpoint", help="the gate (.pt or .onnx)")
    p.add_argument("--input", default="mic", metavar="mic|FILE|-",
                   help="the microphone (default), an audio file (played at real time), or "
                        "raw PCM on stdin (-)")
    p.add_argument("--device", help="microphone: an index or part of a name (--list-devices)")
    p.add_argument("--list-devices", action="store_true", help="list the input devices")
    p.add_argument("--reconnect", action="store_true",
                   help="microphone: wait for a device that is missing or unplugged")
    p.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=True,
                   help="file: play it at real time (default), or as fast as possible")
    p.add_argument("--format", choices=("s16le", "f32le"), default="s16le",
                   help="stdin: raw sample format (default s16le)")
    p.add_argument("--rate", type=int, help="stdin: sample rate (Hz, required); microphone: "
                                            "the rate to open it at (default: its own)")
    p.add_argument("--channels", type=int, help="stdin or microphone: channels, mixed to "
                                                "mono (default 1)")
    p.add_argument("--vad", action=argparse.BooleanOptionalAction, default=None,
                   help="judge each speech segment (Silero VAD) instead of windows (default: "
                        "on for a voice gate, off otherwise)")
    p.add_argument("--hop", type=float, default=0.1, help="seconds between judged windows "
                                                          "(default 0.1)")
    p.add_argument("--k-of-n", default="2/3", metavar="K/N",
                   help="smoothing: K of the last N windows must reach the threshold "
                        "(default 2/3)")
    p.add_argument("--refractory", type=float, default=1.0, metavar="SECONDS",
                   help="after an allowed event, report nothing new for this long (default 1)")
    p.add_argument("--activity-db", type=float, default=-55.0, metavar="DB",
                   help="windows: the quietest level that counts as sound (default -55)")
    p.add_argument("--json", action="store_true", help="events as JSON lines")
    p.add_argument("--on-allowed", metavar="CMD",
                   help="run CMD (no shell) per allowed event, its fields in AUDIOGATE_* "
                        "environment variables")
    p.add_argument("--on-rejected", metavar="CMD", help="run CMD per rejected event")
    p.add_argument("--webhook", metavar="URL", help="POST each event as JSON to URL")
    _add_backend_flags(p)
    p.set_defaults(func=cmd_listen)


def cmd_enroll(args: argparse.Namespace) -> int:
    """``audiogate enroll``: add or remove an allowed voice of a voice gate checkpoint; no
    training, the threshold is kept, the new checkpoint is written atomically."""
    from .data.discover import expand_inputs
    from .gates import load

    began = time.perf_counter()
    if bool(args.allowed) == bool(args.remove):
        raise ConfigError("give either --allowed PATH... (enrol a voice) or --remove NAME")
    gate = load(args.checkpoint, workers=args.workers)
    if not gate.enrolls:
        raise ConfigError(f"{args.checkpoint} is not a voice gate checkpoint (train one with "
                          "--recipe voice); only voice gates enrol voices")
    if args.remove:
        gate.remove(args.remove)
        done = f"removed {args.remove!r}"
    else:
        name = args.name or _default_name(args.allowed)
        files, missing = expand_inputs(args.allowed)
        if not files:
            raise ConfigError(f"no audio files in {' '.join(args.allowed)}")
        result = gate.enroll(name, files, replace_existing=args.replace)
        skipped = [*((m.path, m.reason) for m in missing), *result.skipped]
        done = f"enrolled {name!r} from {result.n_clips} clip(s)"
        if skipped:
            done += f" ({len(skipped)} left out)"
            for source, reason in skipped[:20]:
                print(f"  left out {source}: {reason}")
        _print_checks(result.quality)
    gate.save(args.out)
    voices = ", ".join(f"{k} ({n})" for k, n in gate.voices.items())
    print(f"{done} -> {args.out} in {time.perf_counter() - began:.1f} s")
    print(f"voices (clips): {voices}; threshold {gate.threshold}")
    return 0


def _print_checks(quality: dict[str, Any] | None) -> None:
    """The enrolment checks of a voice (:meth:`~audiogate.speech.quality.VoiceCheck.as_dict`),
    before the gate is saved."""
    if not quality:
        return
    frr = quality["expected_frr"]
    print(f"checks: {quality['clips']} clip(s), {quality['speech_s']:.1f} s of speech; "
          "expected false-reject rate " + ("n/a (one clip)" if frr is None else
                                           f"{frr:.2f} (each enrolled clip scored without "
                                           "itself, at the gate's threshold: new recordings "
                                           "are rejected more often)"))
    for problem in quality["problems"]:
        print(f"  warning: {problem}")


def _default_name(paths: list[str]) -> str:
    first = Path(paths[0])
    if len(paths) == 1 and first.is_dir():
        return first.resolve().name
    raise ConfigError("--name is required unless --allowed is one folder (named after the "
                      "voice)")


def _add_enroll_parser(sub: Any) -> None:
    p = sub.add_parser("enroll", help="add or remove an allowed voice of a voice gate "
                                      "checkpoint (no training)")
    p.add_argument("--checkpoint", required=True, help="a voice gate checkpoint (.pt)")
    p.add_argument("--out", required=True, metavar="NEW_CKPT",
                   help="where the new checkpoint is written (may be --checkpoint itself)")
    p.add_argument("--allowed", nargs="+", metavar="PATH",
                   help="recordings of the voice to enrol: audio files and/or folders")
    p.add_argument("--name", help="the voice's name (default: the --allowed folder's name)")
    p.add_argument("--replace", action="store_true",
                   help="replace the clips of a voice of that name already enrolled")
    p.add_argument("--remove", metavar="NAME", help="remove this voice instead")
    p.add_argument("--workers", type=int, default=1, help="decoding processes; 0 = all cores")
    p.set_defaults(func=cmd_enroll)


def _report_skipped(skipped: Sequence[Any]) -> None:
    if skipped:
        print(f"skipped {len(skipped)} file(s):")
        for s in skipped[:20]:
            print(f"  {s.path}: {s.reason}")
        if len(skipped) > 20:
            print(f"  ... and {len(skipped) - 20} more (see skipped.csv)")


# ------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audiogate", description="Train, evaluate and run audio clip classifiers.")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("eda", help="class counts and duration histogram of a data folder")
    p.add_argument("--config", help="TOML file of config fields")
    p.add_argument("--out", default="eda", help="folder for durations.png, eda.json and "
                                                "skipped.csv (written even when the data is "
                                                "refused)")
    add_config_flags(p)
    p.set_defaults(func=cmd_eda)

    p = sub.add_parser("train", help="train a model (one run folder per run)")
    p.add_argument("--config", help="TOML file of config fields")
    p.add_argument("--resume", metavar="RUN_DIR", help=(
        "continue a stopped run from RUN_DIR/models/last.pt, with any --nproc. Applied with "
        "it: " + ", ".join(f"--{k.replace('_', '-')}" for k in RESUME_FIELDS)
        + ". Refused: --config, and any other field that differs from the run's (features, "
          "model, data, split, seed, lr, weight decay, batch size, augmentation, run folder): "
          "the resumed run must equal an uninterrupted one"))
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train in N data-parallel processes on this machine (torchrun "
                        "--standalone --nproc-per-node N); --batch-size stays the global batch")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("cache", help="decode a data folder into the feature cache ahead of "
                                     "training (what a distributed run reads)")
    p.add_argument("--config", help="TOML file of config fields")
    add_config_flags(p)
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("evaluate", help="metrics of a checkpoint on held-out data")
    p.add_argument("--checkpoint", required=True, help="a .pt file, e.g. runs/x/models/best.pt")
    p.add_argument("--data", help="a class-per-folder data set (default: the run's split)")
    p.add_argument("--split", default="test", choices=("test", "val", "train"),
                   help="which subset of the run's split.csv to use without --data")
    p.add_argument("--out", help="folder for report.json and confusion.png "
                                 "(default: <run>/evaluation or ./evaluation)")
    p.add_argument("--workers", type=int, default=0, help="decoding processes; 0 = all cores")
    _add_report_errors_flag(p)
    _add_threshold_flag(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="(re)write report.html: a run on one self-contained page")
    p.add_argument("folder", metavar="RUN_DIR",
                   help="a run folder (or an evaluate --out folder)")
    _add_report_errors_flag(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("runs", help="table of the runs in a runs folder")
    p.add_argument("runs_dir", nargs="?", default="runs", metavar="RUNS_DIR",
                   help="folder of run folders (default: runs)")
    p.add_argument("--sort", default="best_val_f1", metavar="FIELD",
                   help="order by this field: numbers and dates best/newest first, text "
                        "A-Z (default: best_val_f1); fields: name, date, data, model, "
                        "recipe, epochs, state, stop_reason, best_val_f1, test_f1, "
                        "threshold, train_time_s")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", dest="format", action="store_const", const="json",
                     help="every field of every run, full paths, seconds (a JSON list)")
    fmt.add_argument("--csv", dest="format", action="store_const", const="csv",
                     help="every field of every run as CSV")
    p.set_defaults(format="table", func=cmd_runs)

    p = sub.add_parser("predict", help="label new audio files or folders")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("paths", nargs="+", help="audio files and/or folders")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", dest="format", action="store_const", const="json")
    fmt.add_argument("--csv", dest="format", action="store_const", const="csv")
    p.set_defaults(format="table")
    p.add_argument("--workers", type=int, default=0, help="decoding processes; 0 = all cores")
    _add_backend_flags(p)
    p.set_defaults(func=cmd_predict)

    _add_deploy_parsers(sub)
    _add_listen_parser(sub)
    _add_enroll_parser(sub)

    p = sub.add_parser("demo", help="generate a demo data set and run eda, train, evaluate, "
                                    "predict on it")
    p.add_argument("--out", default="demo", help="folder for the demo data and run")
    p.add_argument("--n-per-class", type=int, help="clips generated per class (default 200)")
    p.add_argument("--epochs", type=int, help="training epochs (default 10)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    with cli_interrupts(), native_stderr_silenced() if args.quiet else nullcontext():
        logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                            format="%(levelname)s %(name)s: %(message)s")
        try:
            return int(args.func(args))
        except AudiogateError as exc:
            print(f"audiogate: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:  # the file system refused (unwritable --out, disk full, ...)
            print(f"audiogate: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print(ABORTED, file=sys.stderr)
            return EXIT_ABORTED
