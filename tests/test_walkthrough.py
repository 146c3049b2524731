"""The notebook-style walkthrough runs from top to bottom."""

from __future__ import annotations

import os
import runpy
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "walkthrough.py"


@pytest.mark.slow
def test_walkthrough_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIOGATE_WALKTHROUGH_SMALL", "1")
    monkeypatch.setenv("AUDIOGATE_WALKTHROUGH_DIR", str(tmp_path))
    runpy.run_path(str(NOTEBOOK), run_name="__main__")
    assert (tmp_path / "eda" / "durations.png").is_file()
    assert (tmp_path / "runs" / "walkthrough" / "outputs" / "curves.png").is_file()
    assert (tmp_path / "example_logmel.png").is_file()
    assert os.path.getsize(tmp_path / "runs" / "walkthrough" / "models" / "best.pt") > 0
