"""What the CLI and the Python API call, for any kind of gate: ``train``, ``resume``,
``evaluate`` and ``write_report``. Each asks the registry for the kind and hands it the work.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config
from ..core.checkpoint import read_gate
from ..core.runs import RunPaths, TrainResult
from ..data.discover import Skipped, discover, skipped_written_on_refusal, write_skipped
from ..data.prepare import clear_refused_skipped, refused_skipped_path
from ..data.split import read_split
from ..errors import AudiogateError, CheckpointError, ConfigError, DataError
from ..files import write_json
from ..reporting.evaluate import build_report, run_data_root, write_figures
from ..reporting.predictions import score_clips, write_predictions
from ..reporting.report import write_report as write_page
from .registry import kind_for, kind_named, load

log = logging.getLogger(__name__)


def train(config: Config, *, progress: bool = True,
          callbacks: Sequence[Any] = ()) -> TrainResult:
    """Make a new run as ``config`` describes, by the gate kind its ``model`` selects
    (:func:`~audiogate.gates.registry.kind_for`); ``callbacks`` listen to a training loop
    (a kind without one refuses them). Fields the kind does not read but the user set are
    named in one warning. Data that cannot make a run leaves no run folder; its files left
    out are written to :func:`~audiogate.data.prepare.refused_skipped_path`."""
    kind = kind_for(config)
    ignored = config.changed(kind.ignores)
    if ignored:
        log.warning("a %s gate does not read %s; they are ignored", kind.name,
                    ", ".join(ignored))
    if kind.positive and config.positive_class not in ("", kind.positive):
        raise ConfigError(f"config field 'positive_class' is {config.positive_class!r}, but a "
                          f"{kind.name} gate always accepts {kind.positive!r}; leave it empty")
    with skipped_written_on_refusal(refused_skipped_path(config)):
        result = kind.fit(config, progress=progress, callbacks=callbacks)
    clear_refused_skipped(config)
    return result


def resume(run_dir: str | os.PathLike[str], *, progress: bool = True,
           callbacks: Sequence[Any] = (), **changes: Any) -> TrainResult:
    """Continue the stopped run ``run_dir`` (see the kind's ``resume``; for a network:
    :func:`~audiogate.gates.network.fit.resume_network`). The kind is the run's own: from its
    ``config.toml``, else from its ``models/last.pt``."""
    run = RunPaths(Path(run_dir))
    try:
        kind = kind_for(Config.from_toml(run.config))
    except AudiogateError:
        kind = kind_named(read_gate(run.last).kind, where=run.last)
    return kind.resume(run.root, progress=progress, callbacks=callbacks, **changes)


@dataclass
class EvalResult:
    report: dict[str, Any]
    skipped: list[Skipped]
    report_path: Path
    confusion_path: Path
    page_path: Path | None = None
    """``report.html`` (None if it could not be written; the error is logged)."""


def _run_of(checkpoint: Path) -> RunPaths | None:
    """The run folder a checkpoint lives in (``<run>/models/x.pt``), if it is one."""
    run = RunPaths(checkpoint.resolve().parent.parent)
    return run if run.split.exists() else None


def evaluate(checkpoint: str | os.PathLike[str], *, data: str | None = None,
             subset: str = "test", out: str | os.PathLike[str] | None = None,
             threshold: float | None = None, workers: int = 0,
             report_errors: int | None = None, progress: bool = True) -> EvalResult:
    """Metrics of ``checkpoint`` (any kind of gate) on the class folders under ``data``, or
    else on the ``subset`` of the checkpoint's run split. ``threshold`` replaces the gate's own.

    Writes ``report.json``, ``predictions.csv``, ``skipped.csv``, ``confusion.png``, for a
    gate ``roc.png`` and ``det.png``, and ``report.html`` (with the ``report_errors`` worst
    errors; default: the checkpoint's ``report_errors``) into ``out``.
    """
    ckpt_path = Path(checkpoint)
    gate = load(ckpt_path, threshold=threshold, workers=workers)
    run = _run_of(ckpt_path)
    skipped: list[Skipped] = []
    root: str | None = None
    if data is not None:
        found = discover(data)
        if tuple(found.classes) != gate.classes:
            raise CheckpointError(f"checkpoint classes {list(gate.classes)} do not match the "
                                  f"classes of {data} {list(found.classes)}")
        clips, skipped, source, root = found.clips, list(found.skipped), data, data
    elif run is not None:
        clips, source = getattr(read_split(run.split), subset), f"{run.split} [{subset}]"
        root = run_data_root(run)
    else:
        raise DataError(f"{ckpt_path} is not inside a run folder with split.csv; "
                        "pass --data DIR")
    if not clips:
        raise DataError(f"no clips to evaluate in {source}")
    scored = score_clips(gate, clips, progress=progress)
    skipped += scored.skipped
    if not scored.clips:
        raise DataError(f"none of the {len(clips)} clips in {source} could be read")
    report = build_report(scored, gate, root=root)
    report.update(source=source, checkpoint=str(ckpt_path), epoch=gate.epoch,
                  skipped=len(skipped))
    out_dir = Path(out) if out else (run.root / "evaluation" if run else Path("evaluation"))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "report.json", report)
    write_skipped(skipped, out_dir / "skipped.csv")
    write_predictions(scored, gate.classes, out_dir / "predictions.csv")
    write_figures(scored, gate, report, confusion=out_dir / "confusion.png",
                  roc=out_dir / "roc.png", det=out_dir / "det.png", title=Path(source).name)
    return EvalResult(report, skipped, out_dir / "report.json", out_dir / "confusion.png",
                      page_path=_write_page(out_dir, errors=report_errors))


def _write_page(out_dir: Path, *, errors: int | None) -> Path | None:
    """``report.html``; a failure is logged, the evaluation's files are written already."""
    try:
        return write_report(out_dir, errors=errors)
    except Exception:
        log.exception("could not write %s (the evaluation itself is complete; retry with: "
                      "audiogate report %s)", out_dir / "report.html", out_dir)
        return None


def write_report(folder: str | os.PathLike[str], *, errors: int | None = None) -> Path:
    """(Re)write ``folder/report.html`` for a run folder or an ``evaluate`` output folder
    (:func:`audiogate.reporting.report.write_report`, loading ``best.pt`` of any kind when a
    run made before ``test_predictions.csv`` existed needs its test verdicts)."""
    return write_page(folder, errors=errors, load_gate=load)
