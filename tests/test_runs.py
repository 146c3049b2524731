"""Run folders: created with the config, never overwriting trained epochs."""

from __future__ import annotations

from pathlib import Path

import pytest

from audiogate.config import RESUME_FIELDS, Config
from audiogate.core.runs import new_run
from audiogate.errors import ConfigError
from audiogate.gates.network.fit import resume_config


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


# ------------------------------------------------------------- what --resume may change
def test_resume_applies_only_the_fields_that_keep_the_run_the_same(tmp_path: Path) -> None:
    stored = Config(data=str(tmp_path.resolve()), n_mels=40, lr=0.01, max_epochs=3)
    assert resume_config(stored, {}) == stored
    changed = resume_config(stored, {"max_epochs": 9, "patience": 0, "workers": 1,
                                     "keep_epoch_checkpoints": False, "cache": False,
                                     "cache_dir": "elsewhere", "n_mels": None, "lr": None})
    assert (changed.max_epochs, changed.patience, changed.workers, changed.cache_dir) == (
        9, 0, 1, "elsewhere")
    assert changed.n_mels == 40 and changed.lr == 0.01
    # the run's own values may be repeated (a script that always passes them)
    assert resume_config(stored, {"n_mels": 40, "lr": 0.01, "data": str(tmp_path)}) == stored
    assert set(RESUME_FIELDS) == {"max_epochs", "patience", "workers",
                                  "keep_epoch_checkpoints", "cache", "cache_dir", "tensorboard",
                                  "report_errors", "device", "precision", "prefetch",
                                  "sync_batchnorm"}


@pytest.mark.parametrize(("changes", "flags"), [
    ({"n_mels": 64}, ["--n-mels 64 (the run has 40)"]),
    ({"lr": 0.5, "n_mels": 64}, ["--lr 0.5", "--n-mels 64"]),
    ({"seed": 3}, ["--seed 3"]),
    ({"batch_size": 8}, ["--batch-size"]),
    ({"weight_decay": 0.0}, ["--weight-decay"]),
    ({"augment": False}, ["--augment"]),
    ({"noise_p": 0.1}, ["--noise-p"]),
    ({"model": "simple", "dropout": 0.5}, ["--dropout"]),
    ({"test_size": 0.2}, ["--test-size"]),
    ({"balance": "none"}, ["--balance"]),
    ({"data": "/elsewhere"}, ["--data"]),
    ({"name": "other"}, ["--name"]),
])
def test_resume_refuses_fields_that_change_the_run(changes: dict[str, object],
                                                    flags: list[str]) -> None:
    """`train --resume RUN --n-mels 64 --lr 0.5` ignored both flags (issue 12, item 6)."""
    stored = Config(n_mels=40, lr=0.01)
    with pytest.raises(ConfigError, match="when resuming") as err:
        resume_config(stored, changes)
    for flag in flags:
        assert flag in str(err.value)
    assert "--max-epochs" in str(err.value)  # says what may change


def test_resume_validates_applied_values() -> None:
    with pytest.raises(ConfigError, match="'workers'"):
        resume_config(Config(), {"workers": -1})
    with pytest.raises(ConfigError, match="unknown"):
        resume_config(Config(), {"n_mel": 3})
