"""What every kind's run does to its folder first: make it (config saved, ``status.json``
running) and record its data (the split and the files left out)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..config import Config
from ..core.runs import RunPaths, StatusFile, new_run, new_run_id
from ..data.discover import Skipped, write_skipped
from ..data.split import Split, write_split

log = logging.getLogger(__name__)

SKIPPED_SHOWN = 20
"""Skipped files listed in the log (all of them are in ``skipped.csv``)."""


def start_run(config: Config) -> tuple[RunPaths, StatusFile]:
    """A new run folder for ``config`` (:func:`~audiogate.core.runs.new_run`) and its status,
    marked running under a new run id."""
    run = new_run(config)
    status = StatusFile(run, run_id=new_run_id())
    status.running()
    log.info("run folder: %s", run.root)
    return run, status


def write_data_files(run: RunPaths, *, split: Split, classes: Sequence[str],
                     skipped: Sequence[Skipped]) -> None:
    """``split.csv`` and ``skipped.csv``; the files left out are named in the log too."""
    write_skipped(list(skipped), run.skipped)
    write_split(split, run.split, classes=tuple(classes))
    if skipped:
        log.warning("skipped %d file(s); reasons in %s", len(skipped), run.skipped)
        for s in skipped[:SKIPPED_SHOWN]:
            log.warning("  skipped %s: %s", s.path, s.reason)
