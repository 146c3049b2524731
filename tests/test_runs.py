"""Run folders: created with the config, never overwriting trained epochs."""

from __future__ import annotations

from pathlib import Path

import pytest

from audiogate.config import Config
from audiogate.errors import ConfigError
from audiogate.training.runs import new_run


def test_named_run_is_reused_until_it_has_an_epoch(tmp_path: Path) -> None:
    config = Config(runs_dir=str(tmp_path), name="x", lr=0.01)
    run = new_run(config)
    assert Config.from_toml(run.config) == config
    assert new_run(config).root == run.root  # a failed start leaves nothing worth keeping
    run.last.write_bytes(b"trained")
    with pytest.raises(ConfigError, match="--resume"):
        new_run(config)
    assert run.last.read_bytes() == b"trained"


def test_unnamed_runs_get_distinct_folders(tmp_path: Path) -> None:
    config = Config(runs_dir=str(tmp_path))
    assert new_run(config).root != new_run(config).root
