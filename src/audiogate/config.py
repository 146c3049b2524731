"""The single source of configuration: one frozen dataclass, loadable from TOML and the CLI.

The first nine fields are the specification's ``Args``; the rest are what a real tool needs
(front end, augmentation, stopping, run folder). :class:`FeatureConfig` and
:class:`AugmentConfig` are read-only views that travel with checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

BALANCE_CHOICES = ("downsample", "weighted", "none")
PRECISION_CHOICES = ("32", "bf16-mixed", "16-mixed")
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
TENSORBOARD_CHOICES = ("auto", "on", "off")
VOICE_MODELS = ("ge2e",)
"""Models that are no trained network but a pretrained speaker encoder and enrolled voices
(:mod:`audiogate.voice`): ``train`` enrols instead of running epochs."""
VOICE_HEADS = ("none", "logistic")
PAD_MODES = ("floor", "silence")
"""How the front end fills the window past a short clip's end (``Config.pad``)."""
AUTO_WINDOW = 0
"""``fixed_length = "auto"`` is held as this value until ``train`` resolves it."""


SPEC_RECIPE: dict[str, Any] = {
    "sr": 16000, "n_mels": 64, "fixed_length": 200, "batch_size": 32, "lr": 1e-3,
    "weight_decay": 1e-4, "test_size": 0.15, "val_size": 0.15, "balance": "downsample",
    "augment": True, "model": "simple", "dropout": 0.3, "label_smoothing": 0.0,
    "mixup_alpha": 0.0, "specaug_freq_masks": 0, "specaug_time_masks": 0,
    "lr_schedule": "none", "warmup_epochs": 0.0, "random_crop": False, "pitch_p": 0.5,
    "noise_p": 0.5, "stretch_p": 0.5, "max_epochs": 30, "patience": 8,
}
"""The specification's notebook: its ``Args``, its SimpleConvNet, its balancing by
down-sampling and its three augmentations, nothing added. The notebook trains until Ctrl+C;
the recipe stops at 30 epochs or after 8 without a validation gain (``max_epochs = 0``
restores the notebook's loop)."""

RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "spec": SPEC_RECIPE,
    "strong": {"fixed_length": 100, "max_epochs": 20},
    "voice": {"model": "ge2e", "balance": "none", "voice_head": "none",
              "operating_point": "far=0.02"},
}
"""Named bundles of field values. Precedence: field defaults < recipe < TOML file < flags."""
MAX_SEED = 2**63 - 1
"""Largest seed: TOML integers and ``torch.manual_seed`` both take 64-bit signed values."""


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, kw_only=True)
class FeatureConfig:
    """Everything that defines the log-mel front end; a checkpoint is only valid for its own."""

    sr: int = 16000
    n_mels: int = 64
    fixed_length: int = 200
    n_fft: int = 1024
    win_length: int = 400
    hop_length: int = 160
    fmin: float = 0.0
    fmax: float = 0.0
    top_db: float = 80.0
    pad: str = "floor"

    @property
    def n_samples(self) -> int:
        """Waveform length (samples) that gives exactly ``fixed_length`` centred STFT frames."""
        return (self.fixed_length - 1) * self.hop_length

    @property
    def mel_fmax(self) -> float:
        """Upper mel edge in Hz (``fmax`` of 0 means Nyquist)."""
        return self.fmax if self.fmax > 0 else self.sr / 2


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """Training-only augmentation; each transform fires with its own probability."""

    noise_p: float = 0.5
    noise_snr_db: tuple[float, float] = (10.0, 40.0)
    pitch_p: float = 0.5
    pitch_semitones: float = 2.0
    stretch_p: float = 0.5
    stretch_rate: tuple[float, float] = (0.8, 1.25)


@dataclass(frozen=True, kw_only=True)
class Config:
    """All settings of a training run. Defaults are the specification's ``Args``."""

    # --- the specification's Args ---
    data: str = _f("./dataset", "data set root: one sub-folder per class")
    sr: int = _f(16000, "sample rate (Hz) every clip is resampled to")
    n_mels: int = _f(64, "number of mel bands")
    fixed_length: int = _f(200, "spectrogram frames per clip (pad or truncate); \"auto\": "
                                "enough for 90%% of the training clips, chosen by train")
    batch_size: int = _f(32, "clips per training batch (with several processes: in all of "
                             "them together)")
    lr: float = _f(1e-3, "Adam learning rate")
    weight_decay: float = _f(1e-4, "Adam weight decay (L2)")
    test_size: float = _f(0.15, "fraction of clips held out for the final test")
    val_size: float = _f(0.15, "fraction of clips used for validation / model selection")
    recipe: str = _f("default", "starting point for the other fields: default | spec (the "
                                "specification's notebook exactly) | strong (the benchmark's "
                                "best) | voice (a speaker gate: pretrained speaker embeddings "
                                "and enrolled voices); explicit fields win")
    # --- front end ---
    n_fft: int = _f(1024, "FFT size (samples)")
    win_length: int = _f(400, "STFT window (samples); 400 = 25 ms at 16 kHz")
    hop_length: int = _f(160, "STFT hop (samples); 160 = 10 ms at 16 kHz")
    fmin: float = _f(0.0, "lowest mel frequency (Hz)")
    fmax: float = _f(0.0, "highest mel frequency (Hz); 0 = sr / 2")
    top_db: float = _f(80.0, "dynamic range kept below each clip's maximum (dB)")
    pad: str = _f("floor", "frames of the window past a short clip's end: floor (the clip's "
                           "lowest level, as padding its spectrogram with its minimum) | "
                           "silence (zero samples: -top_db, which then dominates the z-score)")
    # --- data ---
    balance: str = _f("weighted", "class balance of the training split: weighted (every clip, "
                                  "loss weighted by inverse class frequency) | downsample (the "
                                  "spec's) | none; validation and test keep the data's mix")
    group_by: str = _f("none", "keep groups on one side of the split: none | folder (first "
                               "sub-folder of a class folder, e.g. a speaker) | regex:PATTERN "
                               "(first capture group in the file name)")
    seed: int = _f(0, "seed for balancing, split, shuffling, augmentation and init")
    # --- augmentation (training only) ---
    augment: bool = _f(True, "augment training clips")
    noise_p: float = _f(0.5, "probability of additive noise")
    noise_snr_min: float = _f(10.0, "lowest noise SNR (dB)")
    noise_snr_max: float = _f(40.0, "highest noise SNR (dB)")
    pitch_p: float = _f(0.0, "probability of a pitch shift (it moves formants: off by "
                             "default, it blurs who is speaking)")
    pitch_semitones: float = _f(2.0, "largest pitch shift, up or down (semitones)")
    stretch_p: float = _f(0.5, "probability of a time stretch")
    stretch_min: float = _f(0.8, "lowest time-stretch rate (<1 slows down)")
    stretch_max: float = _f(1.25, "highest time-stretch rate (>1 speeds up)")
    # --- model and training ---
    model: str = _f("tcresnet", "network, by registered name: simple (the specification's "
                              "SimpleConvNet) | tcresnet (TC-ResNet, Choi et al. 2019) | "
                              "bcresnet (BC-ResNet, Kim et al. 2021) | ge2e (the voice gate: "
                              "a pretrained speaker encoder and enrolled voices, no training)")
    width: int = _f(2, "channel width multiplier of tcresnet and bcresnet")
    depth: int = _f(1, "residual blocks per stage of tcresnet (1: TC-ResNet8, 2: TC-ResNet14)")
    dropout: float = _f(0.3, "dropout before the classifier")
    label_smoothing: float = _f(0.0, "cross-entropy label smoothing (0 = off)")
    mixup_alpha: float = _f(0.0, "mixup of pairs of training clips, Beta(alpha, alpha) "
                                 "weights (0 = off)")
    specaug_freq_masks: int = _f(0, "SpecAugment: masked bands of mel channels per clip")
    specaug_freq_width: int = _f(8, "SpecAugment: widest masked band (mel channels)")
    specaug_time_masks: int = _f(0, "SpecAugment: masked stretches of frames per clip")
    specaug_time_width: int = _f(20, "SpecAugment: longest masked stretch (frames)")
    lr_schedule: str = _f("cosine", "learning-rate schedule over max_epochs: none | cosine | "
                                    "onecycle (with max_epochs = 0: the peak rate after the "
                                    "warm-up)")
    warmup_epochs: float = _f(1.0, "linear learning-rate warm-up (epochs)")
    max_epochs: int = _f(10, "stop after this many epochs; 0 = run until Ctrl+C")
    patience: int = _f(8, "early stop after this many epochs without val-F1 gain; 0 = off")
    workers: int = _f(0, "processes for decoding audio; 0 = all cores")
    cache: bool = _f(True, "keep decoded audio and clean features in an on-disk cache, so "
                           "later runs skip decoding; off = a temporary cache for this run")
    cache_dir: str = _f("", "cache folder; empty = <runs_dir>/.cache")
    prefetch: bool = _f(True, "prepare the next training batch in a background thread while "
                              "the model trains on this one")
    # --- hardware ---
    device: str = _f("auto", "where features, augmentation and the model run: auto (CUDA if "
                             "present, else MPS, else CPU) | cpu | cuda | cuda:N | mps")
    precision: str = _f("32", "32 | bf16-mixed | 16-mixed: float32, or torch.autocast to "
                              "bfloat16 / float16 (16-mixed adds a gradient scaler; CUDA only)")
    # --- outputs ---
    runs_dir: str = _f("runs", "folder that holds one sub-folder per run")
    name: str = _f("", "run name; empty = a timestamp")
    keep_epoch_checkpoints: bool = _f(True, "keep models/model_epoch_N.pt for every epoch")
    tensorboard: str = _f("auto", "TensorBoard event files under <run>/tensorboard: auto (when "
                                  "the tensorboard package is installed) | on | off")
    report_errors: int = _f(12, "wrong test clips (the most confident errors) played and drawn "
                                "in report.html; 0 = none")
    # --- the gate's decision ---
    operating_point: str = _f("f1", "how a two-class gate's threshold on P(allowed) is chosen "
                                    "on validation: f1 | eer | far=X | frr=X")
    clip_pooling: str = _f("mean", "a clip longer than the window is judged over all its "
                                   "windows: mean | max of their probabilities")
    max_clip_s: float = _f(10.0, "seconds of each clip used: training crops come from them, "
                                 "predictions pool windows over them")
    random_crop: bool = _f(True, "train on a random window of each clip longer than the "
                                 "window, a new one every epoch (off: always its start)")
    # --- the voice gate (model = "ge2e") ---
    voice_top_k: int = _f(5, "voice gate: a clip's similarity to the allowed voices is the mean "
                             "of its top-k cosine similarities to the enrolled clips")
    voice_head: str = _f("none", "voice gate: none (the score is the top-k similarity) | "
                                 "logistic (logistic regression on it and on the similarity to "
                                 "the training not_allowed clips, fitted on training clips)")
    voice_vad: bool = _f(True, "voice gate: cut every clip to its speech (Silero VAD) before "
                               "embedding it; a clip with no speech is rejected")
    impostors: str = _f("auto", "voice gate: impostor voices added to validation to set the "
                                "threshold: auto (the built-in generated voices when there are "
                                "no not_allowed clips, else none) | builtin | none | a folder "
                                "of recordings of other people")

    def __post_init__(self) -> None:
        _validate(self)

    # ----- views -----
    def cache_path(self) -> Path:
        """Folder of the on-disk feature cache (``cache_dir``, else ``<runs_dir>/.cache``)."""
        return Path(self.cache_dir) if self.cache_dir else Path(self.runs_dir) / ".cache"

    @property
    def auto_window(self) -> bool:
        """Whether ``fixed_length`` is still ``"auto"`` (resolved by ``train``)."""
        return self.fixed_length == AUTO_WINDOW

    def features(self) -> FeatureConfig:
        """The front-end settings, as stored in checkpoints."""
        if self.auto_window:
            raise ConfigError("fixed_length is 'auto': train chooses it from the training "
                              "split (audiogate.data.prepare.resolve_window); set a number "
                              "to use the front end directly")
        return FeatureConfig(
            sr=self.sr, n_mels=self.n_mels, fixed_length=self.fixed_length, n_fft=self.n_fft,
            win_length=self.win_length, hop_length=self.hop_length, fmin=self.fmin,
            fmax=self.fmax, top_db=self.top_db, pad=self.pad,
        )

    def augmentation(self) -> AugmentConfig:
        """The augmentation settings (all probabilities 0 when ``augment`` is off)."""
        on = 1.0 if self.augment else 0.0
        return AugmentConfig(
            noise_p=self.noise_p * on, noise_snr_db=(self.noise_snr_min, self.noise_snr_max),
            pitch_p=self.pitch_p * on, pitch_semitones=self.pitch_semitones,
            stretch_p=self.stretch_p * on, stretch_rate=(self.stretch_min, self.stretch_max),
        )

    # ----- (de)serialisation -----
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "config") -> Config:
        """Build from a mapping, rejecting unknown keys and wrong types with the field's name."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {', '.join(unknown)}; "
                              f"known fields are: {', '.join(known)}")
        recipe = values.get("recipe", "default")
        if recipe not in RECIPES:
            raise ConfigError(f"{source}: unknown recipe {recipe!r}; recipes are: "
                              f"{', '.join(RECIPES)}")
        merged = {**RECIPES[recipe], **values}
        return cls(**{k: _coerce(k, v, _FIELD_TYPES[k], source) for k, v in merged.items()})

    @classmethod
    def from_recipe(cls, recipe: str, **overrides: Any) -> Config:
        """The config of a named recipe (:data:`RECIPES`), with ``overrides`` on top."""
        return cls.from_dict({**overrides, "recipe": recipe}, source="recipe")

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> Config:
        """Read a flat TOML file of fields; ``overrides`` (e.g. from the CLI) win."""
        try:
            with open(path, "rb") as fh:
                values = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        return cls.from_dict({**values, **overrides}, source=str(path))

    def to_toml(self) -> str:
        """Render as a flat TOML document that :meth:`from_toml` reads back unchanged."""
        lines = ["# audiogate run configuration"]
        for key, value in self.to_dict().items():
            if key == "fixed_length" and value == AUTO_WINDOW:
                text = '"auto"'
            elif isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str):
                text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
            else:
                text = repr(value)
            lines.append(f"{key} = {text}")
        return "\n".join(lines) + "\n"


def _coerce(name: str, value: Any, kind: type, source: str) -> Any:
    if name == "fixed_length" and value == "auto":
        return AUTO_WINDOW
    if name == "tensorboard" and isinstance(value, bool):  # TOML `tensorboard = true`
        return "on" if value else "off"
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: field '{name}' must be {kind.__name__}, "
                          f"got {value!r}")
    return value


def _require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config field '{name}' {message}")


def _validate(c: Config) -> None:
    for name in ("sr", "n_mels", "batch_size", "n_fft", "win_length", "hop_length"):
        _require(getattr(c, name) > 0, name, f"must be > 0, got {getattr(c, name)}")
    _require(c.sr >= 4000, "sr", f"must be at least 4000 Hz, got {c.sr}")
    _require(c.auto_window or c.fixed_length >= 4, "fixed_length",
             f"must be 'auto' or >= 4 (two 2x2 poolings), got {c.fixed_length}")
    _require(c.win_length <= c.n_fft, "win_length", f"must be <= n_fft ({c.n_fft})")
    _require(c.hop_length <= c.win_length, "hop_length",
             f"must be <= win_length ({c.win_length}), or samples fall between frames")
    _require(c.pad in PAD_MODES, "pad", f"must be one of {', '.join(PAD_MODES)}, got {c.pad!r}")
    for name in ("lr", "top_db"):
        _require(getattr(c, name) > 0 and math.isfinite(getattr(c, name)), name, "must be > 0")
    _require(c.weight_decay >= 0, "weight_decay", "must be >= 0")
    for name in ("test_size", "val_size"):
        _require(0 < getattr(c, name) < 1, name, f"must be in (0, 1), got {getattr(c, name)}")
    _require(c.test_size + c.val_size < 1, "test_size",
             f"+ val_size must be < 1, got {c.test_size} + {c.val_size}")
    _require(0 <= c.fmin < c.sr / 2, "fmin", f"must be in [0, {c.sr / 2})")
    _require(c.fmax == 0 or c.fmin < c.fmax <= c.sr / 2, "fmax",
             f"must be 0 or in (fmin, {c.sr / 2}]")
    _require(c.recipe in RECIPES, "recipe", f"must be one of {', '.join(RECIPES)}")
    _require(c.balance in BALANCE_CHOICES, "balance", f"must be one of {BALANCE_CHOICES}")
    _require(DEVICE_PATTERN.fullmatch(c.device) is not None, "device",
             f"must be auto, cpu, cuda, cuda:N or mps, got {c.device!r}")
    _require(c.precision in PRECISION_CHOICES, "precision",
             f"must be one of {PRECISION_CHOICES}, got {c.precision!r}")
    _check_group_by(c)
    _check_decision(c)
    for name in ("noise_p", "pitch_p", "stretch_p", "dropout"):
        _require(0 <= getattr(c, name) <= 1, name, "must be in [0, 1]")
    _require(c.dropout < 1, "dropout", "must be < 1")
    _require(c.noise_snr_min <= c.noise_snr_max, "noise_snr_min", "must be <= noise_snr_max")
    _require(0 <= c.pitch_semitones <= 12, "pitch_semitones", "must be in [0, 12]")
    _require(0.25 <= c.stretch_min <= c.stretch_max <= 4, "stretch_min",
             "and stretch_max must satisfy 0.25 <= stretch_min <= stretch_max <= 4")
    _require(1 <= c.width <= 16, "width", f"must be in [1, 16], got {c.width}")
    _require(1 <= c.depth <= 8, "depth", f"must be in [1, 8], got {c.depth}")
    _require(0 <= c.label_smoothing < 1, "label_smoothing", "must be in [0, 1)")
    _require(c.mixup_alpha >= 0 and math.isfinite(c.mixup_alpha), "mixup_alpha", "must be >= 0")
    for name in ("specaug_freq_masks", "specaug_freq_width", "specaug_time_masks",
                 "specaug_time_width"):
        _require(getattr(c, name) >= 0, name, "must be >= 0")
    _require(c.lr_schedule in ("none", "cosine", "onecycle"), "lr_schedule",
             "must be none, cosine or onecycle")
    _require(c.warmup_epochs >= 0 and math.isfinite(c.warmup_epochs), "warmup_epochs",
             "must be >= 0")
    _require(c.tensorboard in TENSORBOARD_CHOICES, "tensorboard",
             f"must be one of {', '.join(TENSORBOARD_CHOICES)}, got {c.tensorboard!r}")
    for name in ("max_epochs", "patience", "workers", "report_errors"):
        _require(getattr(c, name) >= 0, name, "must be >= 0")
    _require(c.seed >= 0, "seed", f"must be >= 0, got {c.seed}")
    _require(c.seed <= MAX_SEED, "seed", f"must be <= {MAX_SEED} (a 63-bit integer)")
    _require("/" not in c.name and c.name not in (".", ".."), "name", "must be a plain name")
    _check_model(c)
    _check_mel_bands(c)


def _check_decision(c: Config) -> None:
    from .reporting.metrics import parse_operating_point  # local: keeps config import light

    try:
        parse_operating_point(c.operating_point)
    except ConfigError as exc:
        raise ConfigError(f"config field 'operating_point': {exc}") from None
    _require(c.clip_pooling in ("mean", "max"), "clip_pooling", "must be 'mean' or 'max'")
    _require(math.isfinite(c.max_clip_s) and c.max_clip_s > 0, "max_clip_s", "must be > 0")


def _check_group_by(c: Config) -> None:
    from .data.discover import check_group_by  # local: keeps config import light
    from .errors import DataError

    try:
        check_group_by(c.group_by)
    except DataError as exc:
        raise ConfigError(f"config field 'group_by': {exc}") from None


def _check_model(c: Config) -> None:
    from .models import model_names  # local: keeps config import light

    names = (*model_names(), *VOICE_MODELS)
    _require(c.model in names, "model", f"must be one of {', '.join(names)}, got {c.model!r}")
    _require(1 <= c.voice_top_k <= 1000, "voice_top_k",
             f"must be in [1, 1000], got {c.voice_top_k}")
    _require(c.voice_head in VOICE_HEADS, "voice_head",
             f"must be one of {', '.join(VOICE_HEADS)}, got {c.voice_head!r}")
    _require(bool(c.impostors.strip()), "impostors",
             "must be auto, builtin, none or a folder, got an empty value")


def _check_mel_bands(c: Config) -> None:
    """Every mel band must cover at least one FFT bin, else it is a constant dead input."""
    from .features.frontend import mel_filterbank  # local: keeps config import light

    with warnings.catch_warnings():  # librosa warns; we raise a clearer error below
        warnings.simplefilter("ignore", UserWarning)
        bank = mel_filterbank(dataclasses.replace(c, fixed_length=4).features()
                              if c.auto_window else c.features())
    empty = int((bank.max(axis=1) <= 0).sum())
    _require(empty == 0, "n_mels",
             f"= {c.n_mels} is too large for n_fft = {c.n_fft} at sr = {c.sr}: {empty} mel "
             "band(s) would be empty; lower n_mels or raise n_fft")


_FIELD_TYPES: dict[str, type] = {
    f.name: {"str": str, "int": int, "float": float, "bool": bool}[str(f.type)]
    for f in dataclasses.fields(Config)
}

RESUME_FIELDS = ("max_epochs", "patience", "workers", "keep_epoch_checkpoints", "cache",
                 "cache_dir", "tensorboard", "report_errors", "device", "precision", "prefetch")
"""Fields a resumed run may change. They change neither what its checkpoints mean nor its
data, split or optimisation, so a resumed run still equals an uninterrupted one; any other
field keeps the run's own value."""
