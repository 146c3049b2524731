"""Config: spec defaults, TOML round trip, CLI overrides, field-naming validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from audiogate.cli import build_parser, config_from_args
from audiogate.config import Config
from audiogate.errors import ConfigError


def test_defaults_are_the_specs_args() -> None:
    c = Config()
    assert (c.data, c.sr, c.n_mels, c.fixed_length, c.batch_size) == (
        "./dataset", 16000, 64, 200, 32)
    assert (c.lr, c.weight_decay, c.test_size, c.val_size) == (1e-3, 1e-4, 0.15, 0.15)
    assert c.dropout == 0.3


def test_frozen() -> None:
    with pytest.raises(AttributeError):
        Config().sr = 8000  # type: ignore[misc]


def test_toml_round_trip(tmp_path: Path) -> None:
    c = Config(sr=22050, n_mels=40, augment=False, name='q"uote', lr=3e-4)
    path = tmp_path / "c.toml"
    path.write_text(c.to_toml())
    assert Config.from_toml(path) == c


def test_precedence_defaults_toml_cli(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("batch_size = 16\nlr = 0.01\n")
    args = build_parser().parse_args(["train", "--config", str(path), "--lr", "0.5",
                                      "--no-augment", "--epochs", "3"])
    c = config_from_args(args)
    assert (c.batch_size, c.lr, c.augment, c.max_epochs) == (16, 0.5, False, 3)
    assert c.n_mels == 64


def test_features_view_matches_fields() -> None:
    f = Config(fixed_length=100, hop_length=160).features()
    assert f.n_samples == 99 * 160
    assert 1 + f.n_samples // f.hop_length == 100   # centred STFT frames of the window


@pytest.mark.parametrize(("values", "field"), [
    ({"batch_size": -1}, "batch_size"),
    ({"n_mels": 0}, "n_mels"),
    ({"test_size": 0.5, "val_size": 0.5}, "test_size"),
    ({"val_size": 1.5}, "val_size"),
    ({"win_length": 2048}, "win_length"),
    ({"hop_length": 800}, "hop_length"),
    ({"balance": "oversample"}, "balance"),
    ({"noise_p": 2.0}, "noise_p"),
    ({"stretch_min": 2.0, "stretch_max": 1.0}, "stretch_min"),
    ({"fmax": 9000.0}, "fmax"),
    ({"seed": -1}, "seed"),  # numpy's generators take no negative seed (issue 12, item 1)
    ({"seed": 2**64}, "seed"),  # torch.manual_seed overflows
])
def test_invalid_values_name_the_field(values: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=f"'{field}'"):
        Config.from_dict(values)


def test_unknown_and_mistyped_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("batchsize = 8\n")
    with pytest.raises(ConfigError, match="batchsize"):
        Config.from_toml(path)
    path.write_text('sr = "16k"\n')
    with pytest.raises(ConfigError, match="'sr' must be int"):
        Config.from_toml(path)
    path.write_text("sr = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.from_toml(path)


def test_fixed_length_auto_round_trips(tmp_path: Path) -> None:
    from audiogate.cli import build_parser, config_from_args
    from audiogate.errors import ConfigError

    config = Config.from_dict({"fixed_length": "auto"})
    assert config.auto_window and 'fixed_length = "auto"' in config.to_toml()
    (tmp_path / "c.toml").write_text(config.to_toml())
    assert Config.from_toml(tmp_path / "c.toml") == config
    args = build_parser().parse_args(["train", "--fixed-length", "auto"])
    assert config_from_args(args).auto_window
    with pytest.raises(ConfigError, match="'auto'"):
        config.features()
    with pytest.raises(ConfigError, match="fixed_length"):
        Config.from_dict({"fixed_length": "long"})


def test_empty_mel_bands_are_refused_where_features_are_built() -> None:
    """Config validation builds no filterbank; the front end refuses bands with no FFT bin."""
    from audiogate.features.frontend import LogMel

    config = Config(n_mels=128, n_fft=256, win_length=256)
    with pytest.raises(ConfigError, match=r"'n_mels'.*empty"):
        LogMel(config.features())
