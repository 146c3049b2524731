"""Config: spec defaults, TOML round trip, CLI overrides, field-naming validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audiogate.cli import build_parser, config_from_args
from audiogate.config import AUTO_WINDOW, Config
from audiogate.errors import ConfigError


def test_defaults_are_the_specs_args() -> None:
    c = Config()  # but the window, chosen from the data (fixed_length = "auto")
    assert (c.data, c.sr, c.n_mels, c.fixed_length, c.batch_size) == (
        "./dataset", 16000, 64, AUTO_WINDOW, 32)
    assert c.auto_window and Config(recipe="spec").fixed_length == 200
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

    config = Config(n_mels=128, n_fft=256, win_length=256, fixed_length=200)
    with pytest.raises(ConfigError, match=r"'n_mels'.*empty"):
        LogMel(config.features())


# ----- bounds on the fields that size memory (issue 22, item 11) -----
SIZE_BOUNDS = [  # field, largest accepted, first refused, what the message says why
    ("fixed_length", 6000, 6001, "60 s at a 10 ms hop"),
    ("max_clip_s", 600.0, 600.5, "10 minutes"),
    ("batch_size", 4096, 4097, "in memory at once"),
    ("n_mels", 512, 513, "each band is a row"),
    ("n_fft", 8192, 16384, "DFT basis"),
    ("sr", 192_000, 192_001, "fastest audio interfaces"),
    ("width", 16, 17, "activations grow"),
    ("depth", 8, 9, "activations grow"),
    ("specaug_freq_masks", 64, 65, "a pass over the batch"),
    ("specaug_time_masks", 64, 65, "a pass over the batch"),
    ("specaug_freq_width", 512, 513, "covers all of it"),
    ("specaug_time_width", 6000, 6001, "covers all of it"),
    ("workers", 256, 257, "add memory, not speed"),
    ("report_errors", 500, 501, "100 MB page"),
    ("voice_top_k", 1000, 1001, "averages them all"),
]


@pytest.mark.parametrize(("name", "largest", "refused", "why"), SIZE_BOUNDS)
def test_memory_sizing_fields_are_bounded_with_a_reason(name: str, largest: float,
                                                        refused: float, why: str) -> None:
    """Each field that sizes memory has a bound: the largest value is accepted, the next is a
    ConfigError naming the field and why, and the field's help (CLI and docs) states it."""
    from audiogate.config import reference

    assert getattr(Config(**{name: largest}), name) == largest
    with pytest.raises(ConfigError, match=f"'{name}' must be .*{why}"):
        Config(**{name: refused})
    bound = f"{largest:g}" if isinstance(largest, float) else str(largest)
    assert bound in {d.name: d for d in reference()}[name].help


@pytest.mark.parametrize(("text", "name"), [
    ("fixed_length = 100000000\n", "fixed_length"),
    ("max_clip_s = 1e12\n", "max_clip_s"),
    ("n_mels = 100000000\n", "n_mels"),
    ("win_length = 100000000\n", "win_length"),
    ("hop_length = 100000000\n", "hop_length"),
])
def test_huge_sizes_in_a_config_file_are_refused_before_any_allocation(
        tmp_path: Path, text: str, name: str) -> None:
    """Issue 22, item 11: these gave a 59.6 GiB / 56.8 PiB allocation traceback; now a
    ConfigError naming the file and the field (win_length and hop_length are bounded by
    n_fft, itself bounded)."""
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"c.toml: config field '{name}'"):
        Config.from_toml(path)


def test_the_window_is_bounded_in_seconds_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """6000 frames at a 25 ms hop would be a 150 s window: refused, saying why; the longest
    window the bounds allow caps fixed_length = "auto" beyond its own 2 s."""
    from audiogate.config import max_fixed_length
    from audiogate.data import prepare
    from audiogate.data.prepare import suggest_fixed_length

    with pytest.raises(ConfigError, match=r"'fixed_length' gives a 99.975 s window.*at most "
                                          r"60 s"):
        Config(fixed_length=4000, hop_length=400)
    assert Config(fixed_length=2400, hop_length=400).fixed_length == 2400
    assert max_fixed_length(sr=16000, hop_length=400) == 2400
    assert max_fixed_length(sr=16000, hop_length=160) == 6000
    hour = np.full(10, 3600.0)  # an hour-long clip: auto stops at 2 s (AUTO_MAX_S)
    assert suggest_fixed_length(hour, features=Config(hop_length=400, fixed_length=8)
                                .features()) == 80
    assert suggest_fixed_length(hour, features=Config(fixed_length=8).features()) == 200
    with monkeypatch.context() as m:  # and at the bound, were the cap longer
        m.setattr(prepare, "AUTO_MAX_S", 10_000.0)
        assert suggest_fixed_length(hour, features=Config(hop_length=400, fixed_length=8)
                                    .features()) == 2400
        assert suggest_fixed_length(hour, features=Config(fixed_length=8).features()) == 6000


def test_auto_window_says_what_it_holds_when_capped(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Clips of 3 s: "auto" stops at 2 s, and says that it holds none of them whole (it said
    "hold 90%" whatever the cap left)."""
    import logging

    import soundfile as sf

    from audiogate.data.prepare import resolve_window

    rng = np.random.default_rng(0)
    for cls in ("allowed", "not_allowed"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            sf.write(tmp_path / cls / f"{i}.wav",
                     (0.1 * rng.standard_normal(48000)).astype(np.float32), 16000)
    with caplog.at_level(logging.INFO, logger="audiogate.data.prepare"):
        assert resolve_window(Config(data=str(tmp_path))).fixed_length == 200
    assert "200 frames (1.99 s) hold 0% of the 14 training clips whole (at most 2 s" in \
        caplog.text
