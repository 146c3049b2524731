"""What each run folder under a runs folder holds, as one row: ``audiogate runs``.

A run is read from its files only (``status.json``, ``config.toml``, ``metrics.json``,
``test_metrics.json``), never from its checkpoints, so listing a hundred runs is quick. A
folder whose files are missing or unreadable is listed as ``broken`` with the reason; nothing
in a run folder can make the listing fail.

Without ``status.json`` (runs made before audiogate wrote one) the state is inferred: with
``metrics.json`` and ``test_metrics.json`` the run ended normally, ``finished`` when the epoch
limit or early stopping explains its epochs and ``interrupted`` (by a signal) otherwise; with
``metrics.json`` alone it stopped before its test report (killed, crashed, or still running:
``unfinished``); without ``metrics.json`` it is broken. A run whose ``status.json`` says
``running`` but whose process (``pid`` on ``host``) is gone was ``killed``.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from ..core.runs import RunPaths
from ..core.tables import check_format, render_rows
from ..errors import ConfigError, DataError
from ..files import to_json

BROKEN = "broken"
UNFINISHED = "unfinished"
KILLED = "killed"
"""A run whose ``status.json`` says running while its process, on this host, is gone."""


@dataclass(frozen=True)
class RunSummary:
    """One run folder in a few fields; ``None`` where the run does not say."""

    name: str
    path: str
    date: str | None
    """When the run started (ISO 8601): ``status.json``, else the time ``config.toml`` was
    written."""
    data: str | None
    model: str | None
    recipe: str | None
    epochs: int | None
    max_epochs: int | None
    state: str
    """running | finished | interrupted | failed | unfinished | broken."""
    stop_reason: str | None
    """Why training stopped; for a broken folder what is wrong with it."""
    best_epoch: int | None
    best_val_f1: float | None
    test_f1: float | None
    threshold: float | None
    train_time_s: float | None
    """Sum of the epochs' seconds (training and evaluation)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FIELDS = tuple(f.name for f in fields(RunSummary))
NUMERIC = frozenset({"epochs", "max_epochs", "best_epoch", "best_val_f1", "test_f1",
                     "threshold", "train_time_s"})
DESCENDING = NUMERIC | {"date"}
"""Sort keys whose best or newest values come first."""


def read_json_object(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON object in ``path`` and None, or None and why there is none to use."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{path.name} missing"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path.name} unreadable ({exc})"
    except json.JSONDecodeError as exc:
        return None, f"{path.name} is not valid JSON (line {exc.lineno})"
    except ValueError:  # non-UTF-8 text, numbers too large
        return None, f"{path.name} is not valid JSON"
    if not isinstance(value, dict):
        return None, f"{path.name} does not hold a JSON object"
    return value, None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) else None


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _mtime(path: Path) -> str | None:
    try:
        stamp = path.stat().st_mtime
    except OSError:
        return None
    return datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="seconds")


def _model(config: dict[str, Any]) -> str | None:
    name = config.get("model")
    if not isinstance(name, str):
        return None
    return f"{name} x{config['width']}" if name == "bcresnet" and "width" in config else name


def _inferred_end(config: dict[str, Any], epochs: list[dict[str, Any]],
                  best_epoch: int | None) -> tuple[str, str | None]:
    """How a run without ``status.json`` that wrote its test report ended: the epoch limit,
    early stopping, or else (the only other way) a signal."""
    max_epochs, patience = _integer(config.get("max_epochs")), _integer(config.get("patience"))
    if max_epochs and len(epochs) >= max_epochs:
        return "finished", f"reached max_epochs={max_epochs}"
    if patience and best_epoch is not None and epochs and \
            _integer(epochs[-1].get("epoch")) == best_epoch + patience:
        return "finished", (f"early stop: no gain in validation "
                            f"{config.get('select_on', 'f1')} for {patience} epochs")
    return "interrupted", None


def summarize_run(folder: str | os.PathLike[str], *,
                  live: dict[str, Any] | None = None) -> RunSummary:
    """The :class:`RunSummary` of one run folder. ``live``: fields that replace those of
    ``status.json`` (a run that is ending and has not written its final state yet)."""
    run = RunPaths(Path(folder))
    config = _read_toml(run.config)
    status, _ = read_json_object(run.status)
    if live:
        status = {**(status or {}), **live}
    metrics, metrics_problem = read_json_object(run.metrics)
    test, _ = read_json_object(run.test_report)
    epochs = metrics.get("epochs") if metrics else None
    if metrics is not None and not (isinstance(epochs, list)
                                    and all(isinstance(e, dict) for e in epochs)):
        metrics, epochs, metrics_problem = None, None, "metrics.json has no list of epochs"
    epochs = epochs or []
    best_epoch = _integer(metrics.get("best_epoch")) if metrics else None
    state, stop = _state(status, metrics_problem, test is not None)
    if status is None and state == "finished":
        state, stop = _inferred_end(config, epochs, best_epoch)
    gate = test.get("gate") if test else None
    seconds = [_number(e.get("seconds")) for e in epochs]
    return RunSummary(
        name=run.root.name, path=str(run.root),
        date=(status or {}).get("started") or _mtime(run.config),
        data=config.get("data") if isinstance(config.get("data"), str) else None,
        model=_model(config),
        recipe=config.get("recipe") if isinstance(config.get("recipe"), str) else None,
        epochs=len(epochs) if metrics else _integer((status or {}).get("epochs_done")),
        max_epochs=_integer(config.get("max_epochs")), state=state, stop_reason=stop,
        best_epoch=best_epoch,
        best_val_f1=_number(metrics.get("best_val_f1")) if metrics else None,
        test_f1=_number(test.get("macro_f1")) if test else None,
        threshold=_number(gate.get("threshold")) if isinstance(gate, dict) else None,
        train_time_s=(sum(s for s in seconds if s is not None) if epochs
                      else _fit_seconds(metrics)))


def _fit_seconds(metrics: dict[str, Any] | None) -> float | None:
    """How long a fit without epochs took (``metrics.json``'s ``fit``), if it says."""
    fit = metrics.get("fit") if metrics else None
    return _number(fit.get("seconds")) if isinstance(fit, dict) else None


def _state(status: dict[str, Any] | None, metrics_problem: str | None,
           tested: bool) -> tuple[str, str | None]:
    """``(state, stop reason or problem)`` from ``status.json`` and which files exist.

    A corrupt ``metrics.json`` makes any run broken; a missing one only a run that says it
    finished (or says nothing): one that is running, failed or was interrupted may have ended
    before its first epoch.
    """
    missing = metrics_problem is not None and metrics_problem.endswith("missing")
    if metrics_problem and not (missing and status and status.get("state") != "finished"):
        return BROKEN, metrics_problem
    if status is not None:
        state = str(status.get("state") or UNFINISHED)
        reason = status.get("error") if state == "failed" else status.get("stop_reason")
        if state == "running" and _gone(status):
            return KILLED, (f"its training process (pid {status['pid']}) is gone: killed "
                            "(SIGKILL, out of memory, power cut); resume it with --resume")
        return state, str(reason) if reason else None
    return ("finished", None) if tested else (UNFINISHED, "no test report: stopped before "
                                                          "the end, or still running")


def _gone(status: dict[str, Any]) -> bool:
    """Whether a "running" run's process, on this host, no longer exists."""
    pid = _integer(status.get("pid"))
    if pid is None or status.get("host") != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def list_runs(runs_dir: str | os.PathLike[str]) -> list[RunSummary]:
    """Every run folder directly under ``runs_dir`` (hidden folders such as ``.cache`` are
    not runs), in name order."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise DataError(f"runs folder not found: {root}")
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise DataError(f"cannot list runs folder {root}: {exc.strerror or exc}") from None
    return [summarize_run(p) for p in folders]


def sort_runs(runs: Sequence[RunSummary], *, key: str = "best_val_f1") -> list[RunSummary]:
    """``runs`` ordered by field ``key``: numbers and dates best / newest first, text in
    alphabetical order; runs without a value last (then by name)."""
    if key not in FIELDS:
        raise ConfigError(f"cannot sort runs by {key!r}; fields are: {', '.join(FIELDS)}")
    have = [r for r in runs if getattr(r, key) is not None]
    lack = sorted((r for r in runs if getattr(r, key) is None), key=lambda r: r.name)
    have.sort(key=lambda r: r.name)
    have.sort(key=lambda r: getattr(r, key), reverse=key in DESCENDING)
    return have + lack


def duration_text(seconds: float | None) -> str:
    """``'12.3s'``, ``'4m05s'`` or ``'2h03m'``; ``'-'`` for None."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m{int(seconds % 60):02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


TABLE_HEADER = ("name", "date", "data", "model", "epochs", "state", "stop_reason",
                "best_val_f1", "test_f1", "threshold", "time")


def _table_row(r: RunSummary) -> list[str]:
    def f4(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    epochs = "-" if r.epochs is None else str(r.epochs)
    if r.max_epochs and r.epochs is not None:
        epochs += f"/{r.max_epochs}"
    model = r.model or "-"
    if r.recipe and r.recipe != "default":
        model += f" ({r.recipe})"
    return [r.name, r.date[:16].replace("T", " ") if r.date else "-",
            Path(r.data).name if r.data else "-", model, epochs, r.state,
            r.stop_reason or "-", f4(r.best_val_f1), f4(r.test_f1), f4(r.threshold),
            duration_text(r.train_time_s)]


def format_runs(runs: Sequence[RunSummary], *, fmt: str) -> str:
    """An aligned table (short values, the data folder's name), CSV or JSON (every field,
    full paths, seconds)."""
    check_format(fmt)
    if fmt == "json":
        return to_json([r.as_dict() for r in runs]) + "\n"
    if fmt == "csv":
        return render_rows(FIELDS, [[("" if v is None else v) for v in asdict(r).values()]
                                    for r in runs], fmt="csv")
    return render_rows(TABLE_HEADER, [_table_row(r) for r in runs], fmt="table")
