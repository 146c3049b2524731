"""The single source of configuration: one frozen dataclass, loadable from TOML and the CLI.

:class:`Config` holds every setting of a run. Its first nine fields are the specification's
``Args`` (data, sr, n_mels, fixed_length, batch_size, lr, weight_decay, test_size, val_size)
with the specification's values as defaults; the other defaults are audiogate's default
recipe (a TC-ResNet, class-weighted loss, a cosine schedule over at most 10 epochs). A
*recipe* (:data:`RECIPES`) is a named bundle of field values; precedence is field defaults <
recipe < TOML file < explicit arguments, and it is resolved by the constructor itself:
``Config(recipe="spec")`` is the specification's notebook, ``Config(recipe="spec", lr=0.01)``
the same with another learning rate.

Validation is pure: types come from the annotations (``Literal`` fields list their choices),
ranges are checked here, and nothing above this module is imported. What needs the rest of
audiogate is checked where it is used: the network name by the gate registry, the mel bands
by the front end. :class:`FeatureConfig` and :class:`AugmentConfig` are views derived from a
:class:`Config` (:meth:`Config.features`, :meth:`Config.augmentation`); they have no defaults
of their own.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError

Recipe = Literal["default", "spec", "strong", "voice"]
Balance = Literal["weighted", "resample", "downsample", "none"]
SelectOn = Literal["f1", "f1_tuned", "auc", "loss"]
Pad = Literal["floor", "silence"]
"""How the front end fills the window past a short clip's end (``Config.pad``)."""
Schedule = Literal["none", "cosine", "onecycle"]
Precision = Literal["32", "bf16-mixed", "16-mixed"]
Switch = Literal["auto", "on", "off"]
Pooling = Literal["mean", "max"]
"""How the window probabilities of a clip longer than the model window become one."""
VoiceHead = Literal["none", "logistic"]
VoiceScore = Literal["topk", "centroid", "snorm"]
VoiceCalibration = Literal["validation", "cohort"]

DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
AUTO_WINDOW = 0
"""``fixed_length = "auto"`` is held as this value until ``train`` resolves it."""
MAX_SEED = 2**63 - 1
"""Largest seed: TOML integers and ``torch.manual_seed`` both take 64-bit signed values."""
MIN_SR, MAX_SR = 4000, 192_000
"""Sample rates a run may resample to: telephone speech's 4 kHz band up to the 192 kHz the
fastest audio interfaces record. Every clip is resampled to ``sr``, so the memory of each
second of audio grows with it."""
MAX_N_MELS = 512
"""Most mel bands: speech front ends use 40 to 128; each band is a row of every
spectrogram."""
MAX_N_FFT = 8192
"""Largest FFT: 170 ms at 48 kHz. The exported front end holds an ``(n_fft + 2) x
win_length`` DFT basis: 268 MB at 8192."""
MAX_FRAMES = 6000
"""Longest model window in frames: 60 s at the default 10 ms hop."""
MAX_WINDOW_S = 60.0
"""Longest model window in seconds: a gate judges short utterances and sounds; a longer
clip is judged over several windows (up to ``max_clip_s``)."""
MAX_BATCH = 4096
"""Most clips per batch: every clip of a batch is in memory at once, with the network's
activations for it."""
MAX_CLIP_S = 600.0
"""Longest part of a clip used (10 minutes): a clip is decoded and held in memory whole up to
it, and stored in the cache; longer recordings are for ``scan``, which reads them in
blocks."""
MAX_WORKERS = 256
"""Most decoding processes: each has its own memory, and more than the machine's cores (``0``
takes them all) add memory, not speed."""
MAX_REPORT_ERRORS = 500
"""Most errors shown in ``report.html``: each is embedded as audio and a spectrogram (about
0.2 MB for 4 s at 16 kHz), so 500 make a page of about 100 MB."""
MAX_SPECAUG_MASKS = 64
"""Most SpecAugment masks per clip and axis (papers use 2 to 20): each is one more pass over
the batch's features."""
MAX_TOP_K = 1000
"""Largest ``voice_top_k``: more clips than a voice has enrolled in practice; a k beyond them
averages them all."""
GROUP_BY_HELP = ("none | folder (the first sub-folder under a class folder, e.g. a speaker) "
                 "| regex:PATTERN (the first capture group of PATTERN in the file name)")

SPEC_RECIPE: dict[str, Any] = {
    "sr": 16000, "n_mels": 64, "fixed_length": 200, "batch_size": 32, "lr": 1e-3,
    "weight_decay": 1e-4, "test_size": 0.15, "val_size": 0.15, "balance": "downsample",
    "augment": True, "model": "simple", "dropout": 0.3, "label_smoothing": 0.0,
    "mixup_alpha": 0.0, "specaug_freq_masks": 0, "specaug_time_masks": 0,
    "lr_schedule": "none", "warmup_epochs": 0.0, "random_crop": False, "pitch_p": 0.5,
    "noise_p": 0.5, "stretch_p": 0.5, "max_epochs": 30, "patience": 8, "select_on": "f1",
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

ARGS, FRONT_END, DATA, AUGMENT, TRAINING, HARDWARE, OUTPUTS, DECISION, VOICE = (
    "the specification's Args, the recipe and the model", "front end", "data",
    "augmentation (training only)", "training", "hardware", "outputs", "the gate's decision",
    "the voice gate")
"""Sections of the fields, in order: the CLI help and the docs group fields by them, and a
gate kind names the fields it ignores by them (:func:`section_fields`)."""


class _Unset:
    """A field not given to the constructor: its recipe's value, else its default."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


def _f(default: Any, help: str, *, section: str) -> Any:
    return field(default=_UNSET, metadata={"help": help, "default": default,
                                           "section": section})


@dataclass(frozen=True, kw_only=True)
class FeatureConfig:
    """Everything that defines the log-mel front end; a checkpoint is only valid for its own.
    Made by :meth:`Config.features` (the fields are :class:`Config`'s of the same names)."""

    sr: int
    n_mels: int
    fixed_length: int
    n_fft: int
    win_length: int
    hop_length: int
    fmin: float
    fmax: float
    top_db: float
    pad: Pad

    @property
    def n_samples(self) -> int:
        """Waveform length (samples) that gives exactly ``fixed_length`` centred STFT frames."""
        return (self.fixed_length - 1) * self.hop_length

    @property
    def mel_fmax(self) -> float:
        """Upper mel edge in Hz (``fmax`` of 0 means Nyquist)."""
        return self.fmax if self.fmax > 0 else self.sr / 2

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FeatureConfig:
        """Read a stored front end (a checkpoint's or an ONNX export's). One written before
        ``pad`` existed padded short clips with silence, and gets ``pad = "silence"``."""
        return cls(**{"pad": "silence", **values})


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """Training-only augmentation; each transform fires with its own probability. Made by
    :meth:`Config.augmentation`."""

    noise_p: float
    noise_snr_db: tuple[float, float]
    pitch_p: float
    pitch_semitones: float
    stretch_p: float
    stretch_rate: tuple[float, float]


@dataclass(frozen=True, kw_only=True)
class Config:
    """All settings of a run (see the module docstring for defaults and recipes).

    Fields not given take their recipe's value, else their default; given fields are checked
    (type, choices, range) and a :class:`~audiogate.errors.ConfigError` names the first bad
    one. ``dataclasses.replace`` keeps every value and re-checks them.
    """

    # --- the specification's Args ---
    data: str = _f("./dataset", "data set root: one sub-folder per class", section=ARGS)
    sr: int = _f(16000, f"sample rate (Hz) every clip is resampled to, {MIN_SR} to {MAX_SR} "
                        "(the fastest audio interfaces' rate: memory per second of audio grows "
                        "with it)", section=ARGS)
    n_mels: int = _f(64, f"number of mel bands, at most {MAX_N_MELS} (speech uses 40 to 128; "
                         "each band is a row of every spectrogram)", section=ARGS)
    fixed_length: int = _f(AUTO_WINDOW, "spectrogram frames per window (pad or truncate; a "
                                        "longer clip is judged over several windows, up to "
                                        "max_clip_s); \"auto\" (the default; the spec's 200 "
                                        "with --recipe spec): enough for 90% of the training "
                                        "clips whole, at most 2 s, chosen by train; at most "
                                        f"{MAX_FRAMES} frames and {MAX_WINDOW_S:g} s",
                           section=ARGS)
    batch_size: int = _f(32, "clips per training batch (with several processes: in all of "
                             f"them together), at most {MAX_BATCH} (a batch is in memory "
                             "at once, with its activations)", section=ARGS)
    lr: float = _f(1e-3, "Adam learning rate", section=ARGS)
    weight_decay: float = _f(1e-4, "Adam weight decay (L2)", section=ARGS)
    test_size: float = _f(0.15, "fraction of clips held out for the final test", section=ARGS)
    val_size: float = _f(0.15, "fraction of clips used for validation / model selection",
                         section=ARGS)
    recipe: Recipe = _f("default", "starting point for the fields not given: default | spec "
                                   "(the specification's notebook exactly) | strong (a 1-s "
                                   "window pooled over each clip, 20 epochs) | voice (a "
                                   "speaker gate: pretrained speaker embeddings and enrolled "
                                   "voices)", section=ARGS)
    model: str = _f("tcresnet", "model, by registered name: simple (the specification's "
                                "SimpleConvNet) | tcresnet (TC-ResNet, Choi et al. 2019) | "
                                "bcresnet (BC-ResNet, Kim et al. 2021) | ge2e (the voice gate: "
                                "a pretrained speaker encoder and enrolled voices, no "
                                "training); the model chooses the gate kind", section=ARGS)
    # --- front end ---
    n_fft: int = _f(1024, f"FFT size (samples), at most {MAX_N_FFT} (170 ms at 48 kHz; the "
                          "exported front end holds an (n_fft + 2) x win_length DFT basis, "
                          "268 MB at 8192)", section=FRONT_END)
    win_length: int = _f(400, "STFT window (samples), at most n_fft; 400 = 25 ms at 16 kHz",
                         section=FRONT_END)
    hop_length: int = _f(160, "STFT hop (samples), at most win_length (or samples fall "
                              "between frames); 160 = 10 ms at 16 kHz", section=FRONT_END)
    fmin: float = _f(0.0, "lowest mel frequency (Hz)", section=FRONT_END)
    fmax: float = _f(0.0, "highest mel frequency (Hz); 0 = sr / 2", section=FRONT_END)
    top_db: float = _f(80.0, "dynamic range kept below each clip's maximum (dB)",
                       section=FRONT_END)
    pad: Pad = _f("floor", "frames of the window past a short clip's end: floor (the clip's "
                           "lowest level, as padding its spectrogram with its minimum) | "
                           "silence (zero samples: -top_db, which then dominates the z-score)",
                  section=FRONT_END)
    # --- data ---
    balance: Balance = _f("weighted", "class balance of the training split: weighted (every "
                                      "clip, loss weighted by inverse class frequency) | "
                                      "resample (a fresh balanced subset every epoch: "
                                      "each class down-sampled anew, so every clip is used "
                                      "over the epochs at a balanced set's cost) | "
                                      "downsample (the spec's: one subset, once) | none; "
                                      "validation and test "
                                      "keep the data's mix", section=DATA)
    group_by: str = _f("none", "keep groups on one side of the split: " + GROUP_BY_HELP,
                       section=DATA)
    split_file: str = _f("", "a CSV with columns subset (train, val or test) and path, one row "
                             "per clip, that fixes the split (a data set's own split, or a "
                             "run's split.csv); clips it does not list are left out, with the "
                             "reason in skipped.csv; empty: audiogate splits", section=DATA)
    seed: int = _f(0, "seed for balancing, split, shuffling, augmentation and init",
                   section=DATA)
    workers: int = _f(0, f"processes for decoding audio; 0 = all cores; at most {MAX_WORKERS} "
                         "(each has its own memory; more than the cores add memory, not "
                         "speed)", section=DATA)
    cache: bool = _f(True, "keep decoded audio and clean features in an on-disk cache, so "
                           "later runs skip decoding; off = a temporary cache for this run",
                     section=DATA)
    cache_dir: str = _f("", "cache folder; empty = <runs_dir>/.cache", section=DATA)
    # --- augmentation (training only) ---
    augment: bool = _f(True, "augment training clips", section=AUGMENT)
    noise_p: float = _f(0.5, "probability of additive noise", section=AUGMENT)
    noise_snr_min: float = _f(10.0, "lowest noise SNR (dB)", section=AUGMENT)
    noise_snr_max: float = _f(40.0, "highest noise SNR (dB)", section=AUGMENT)
    pitch_p: float = _f(0.0, "probability of a pitch shift (it moves formants: off by "
                             "default, it blurs who is speaking)", section=AUGMENT)
    pitch_semitones: float = _f(2.0, "largest pitch shift, up or down (semitones)",
                                section=AUGMENT)
    stretch_p: float = _f(0.5, "probability of a time stretch", section=AUGMENT)
    stretch_min: float = _f(0.8, "lowest time-stretch rate (<1 slows down)", section=AUGMENT)
    stretch_max: float = _f(1.25, "highest time-stretch rate (>1 speeds up)", section=AUGMENT)
    # --- model and training ---
    width: int = _f(2, "channel width multiplier of tcresnet and bcresnet, 1 to 16 (weights "
                       "and activations grow with it)", section=TRAINING)
    depth: int = _f(1, "residual blocks per stage of tcresnet (1: TC-ResNet8, 2: "
                       "TC-ResNet14), 1 to 8 (activations grow with it)", section=TRAINING)
    dropout: float = _f(0.3, "dropout before the classifier", section=TRAINING)
    label_smoothing: float = _f(0.0, "cross-entropy label smoothing (0 = off)",
                                section=TRAINING)
    mixup_alpha: float = _f(0.0, "mixup of pairs of training clips, Beta(alpha, alpha) "
                                 "weights (0 = off)", section=TRAINING)
    specaug_freq_masks: int = _f(0, "SpecAugment: masked bands of mel channels per clip, at "
                                    f"most {MAX_SPECAUG_MASKS} (each is a pass over the batch)",
                                 section=TRAINING)
    specaug_freq_width: int = _f(8, "SpecAugment: widest masked band (mel channels), at most "
                                    f"{MAX_N_MELS} (n_mels' bound)", section=TRAINING)
    specaug_time_masks: int = _f(0, "SpecAugment: masked stretches of frames per clip, at "
                                    f"most {MAX_SPECAUG_MASKS} (each is a pass over the batch)",
                                 section=TRAINING)
    specaug_time_width: int = _f(20, "SpecAugment: longest masked stretch (frames), at most "
                                     f"{MAX_FRAMES} (fixed_length's bound)", section=TRAINING)
    lr_schedule: Schedule = _f("cosine", "learning-rate schedule over max_epochs: none | "
                                         "cosine | onecycle (with max_epochs = 0: the peak "
                                         "rate after the warm-up)", section=TRAINING)
    warmup_epochs: float = _f(1.0, "linear learning-rate warm-up (epochs)", section=TRAINING)
    max_epochs: int = _f(10, "stop after this many epochs; 0 = run until Ctrl+C",
                         section=TRAINING)
    patience: int = _f(8, "early stop after this many epochs without a gain in select_on; "
                          "0 = off", section=TRAINING)
    select_on: SelectOn = _f("f1_tuned", "what chooses the best epoch (and early stopping), "
                                         "on validation: f1 (macro-F1 at argmax, the spec's) "
                                         "| f1_tuned (a gate's macro-F1 at its best threshold "
                                         "on validation, as the operating point will use it; "
                                         "f1 for more classes) | auc (ROC-AUC) | loss",
                             section=TRAINING)
    prefetch: bool = _f(True, "prepare the next training batch in a background thread while "
                              "the model trains on this one", section=TRAINING)
    random_crop: bool = _f(True, "train on a random window of each clip longer than the "
                                 "window, a new one every epoch (off: always its start)",
                           section=TRAINING)
    keep_epoch_checkpoints: bool = _f(True, "keep models/model_epoch_N.pt for every epoch",
                                      section=TRAINING)
    tensorboard: Switch = _f("auto", "TensorBoard event files under <run>/tensorboard: auto "
                                     "(when the tensorboard package is installed) | on | off",
                             section=TRAINING)
    # --- hardware ---
    device: str = _f("auto", "where features, augmentation and the model run: auto (CUDA if "
                             "present, else MPS, else CPU) | cpu | cuda | cuda:N | mps",
                     section=HARDWARE)
    precision: Precision = _f("32", "32 | bf16-mixed | 16-mixed: float32, or torch.autocast "
                                    "to bfloat16 / float16 (16-mixed adds a gradient scaler; "
                                    "CUDA only)", section=HARDWARE)
    sync_batchnorm: bool = _f(True, "with several CUDA processes, batch-norm layers become "
                                    "SyncBatchNorm (statistics over the whole global batch); "
                                    "CPU processes keep per-process statistics",
                              section=HARDWARE)
    # --- outputs ---
    runs_dir: str = _f("runs", "folder that holds one sub-folder per run", section=OUTPUTS)
    name: str = _f("", "run name; empty = a timestamp", section=OUTPUTS)
    report_errors: int = _f(12, "wrong test clips (the most confident errors) played and drawn "
                                f"in report.html; 0 = none; at most {MAX_REPORT_ERRORS} (each "
                                "is embedded, about 0.2 MB: 500 make a 100 MB page)",
                            section=OUTPUTS)
    # --- the gate's decision ---
    positive_class: str = _f("", "the class (folder name) a two-class gate accepts; empty: "
                                 "the folder named allowed, and a two-class data set without "
                                 "one is refused, naming this setting; must stay empty for more "
                                 "than two classes (the most probable wins)", section=DECISION)
    operating_point: str = _f("f1", "how a two-class gate's threshold on P(positive_class) is "
                                    "chosen on validation: f1 | eer | far=X | frr=X",
                              section=DECISION)
    clip_pooling: Pooling = _f("mean", "a clip longer than the window is judged over all its "
                                       "windows: mean | max of their probabilities",
                               section=DECISION)
    max_clip_s: float = _f(10.0, "seconds of each clip used: training crops come from them, "
                                 "predictions pool windows over them; at most "
                                 f"{MAX_CLIP_S:g} (10 minutes: a clip is held in memory "
                                 "and in the cache whole up to it; scan reads longer "
                                 "recordings in blocks)", section=DECISION)
    # --- the voice gate (model = "ge2e") ---
    voice_top_k: int = _f(5, "a clip's similarity to the allowed voices is the mean of its "
                             "top-k cosine similarities to the enrolled clips; 1 to "
                             f"{MAX_TOP_K} (a k beyond a voice's clips averages them all)",
                          section=VOICE)
    voice_head: VoiceHead = _f("none", "none (the score is the top-k similarity) | logistic "
                                       "(logistic regression on it and on the similarity to "
                                       "the training not_allowed clips, fitted on training "
                                       "clips)", section=VOICE)
    voice_score: VoiceScore = _f("snorm", "how a clip is scored against the enrolled voices: "
                                          "topk (the mean of its voice_top_k highest "
                                          "similarities to the enrolled clips) | centroid (its "
                                          "similarity to each voice's mean embedding) | snorm "
                                          "(centroid, normalised against the training "
                                          "not_allowed speakers: adaptive S-norm)",
                                 section=VOICE)
    voice_snorm_top: int = _f(10, "snorm: cohort speakers nearest a voice, and nearest a clip, "
                                  "whose similarities normalise its score; 1 to "
                                  f"{MAX_TOP_K}", section=VOICE)
    voice_calibration: VoiceCalibration = _f(
        "cohort", "the impostor trials the threshold is set on: validation (the validation "
                  "not_allowed clips and impostors) | cohort (those, and every training "
                  "not_allowed clip scored as a person never heard: its speaker left out of "
                  "the cohort)", section=VOICE)
    voice_vad: bool = _f(True, "cut every clip to its speech (Silero VAD) before embedding "
                               "it; a clip with no speech is rejected", section=VOICE)
    impostors: str = _f("auto", "impostor voices added to validation to set the threshold: "
                                "auto (the built-in voices when there are no not_allowed "
                                "clips, else none) | builtin | none | a folder of recordings "
                                "of other people", section=VOICE)

    def __post_init__(self) -> None:
        recipe = self.recipe if self.recipe is not _UNSET else "default"
        if recipe not in RECIPES:
            raise ConfigError(f"unknown recipe {recipe!r}; recipes are: {', '.join(RECIPES)}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is _UNSET:
                value = RECIPES[recipe].get(f.name, f.metadata["default"])
            object.__setattr__(self, f.name, _coerce(f.name, value, FIELD_TYPES[f.name]))
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
        return FeatureConfig(**{f.name: getattr(self, f.name)
                                for f in dataclasses.fields(FeatureConfig)})

    def augmentation(self) -> AugmentConfig:
        """The augmentation settings (all probabilities 0 when ``augment`` is off)."""
        on = 1.0 if self.augment else 0.0
        return AugmentConfig(
            noise_p=self.noise_p * on, noise_snr_db=(self.noise_snr_min, self.noise_snr_max),
            pitch_p=self.pitch_p * on, pitch_semitones=self.pitch_semitones,
            stretch_p=self.stretch_p * on, stretch_rate=(self.stretch_min, self.stretch_max),
        )

    def changed(self, names: Collection[str]) -> list[str]:
        """The fields among ``names`` whose value differs from what the recipe gives them:
        the ones a user set (by file, flag or argument)."""
        base = Config(recipe=self.recipe)
        return [f.name for f in dataclasses.fields(self) if f.name in names
                and getattr(self, f.name) != getattr(base, f.name)]

    # ----- (de)serialisation -----
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "config") -> Config:
        """Build from a mapping (recipe resolved by the constructor), rejecting unknown keys
        and bad values with ``source`` and the field's name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {', '.join(unknown)}; "
                              f"known fields are: {', '.join(sorted(known))}")
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

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
            lines.append(f"{key} = {_toml_value(key, value)}")
        return "\n".join(lines) + "\n"


def _toml_value(key: str, value: Any) -> str:
    if key == "fixed_length" and value == AUTO_WINDOW:
        return '"auto"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


FIELD_TYPES: dict[str, Any] = typing.get_type_hints(Config)
"""Each field's type, read from the annotations (``Literal[...]`` for a choice)."""


def choices(kind: Any) -> tuple[str, ...] | None:
    """The values a ``Literal`` field type allows (None for any other type)."""
    return typing.get_args(kind) if typing.get_origin(kind) is Literal else None


def _coerce(name: str, value: Any, kind: Any) -> Any:
    if name == "fixed_length" and value == "auto":
        return AUTO_WINDOW
    if name == "tensorboard" and isinstance(value, bool):  # TOML `tensorboard = true`
        return "on" if value else "off"
    allowed = choices(kind)
    if allowed is not None:
        if value not in allowed:
            raise ConfigError(f"config field '{name}' must be one of {', '.join(allowed)}, "
                              f"got {value!r}")
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"config field '{name}' must be {kind.__name__}, got {value!r}")
    return value


def _require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config field '{name}' {message}")


def _validate(c: Config) -> None:
    _validate_sizes(c)
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
    _require(DEVICE_PATTERN.fullmatch(c.device) is not None, "device",
             f"must be auto, cpu, cuda, cuda:N or mps, got {c.device!r}")
    for name, check in (("group_by", check_group_by),
                        ("operating_point", parse_operating_point)):
        try:
            check(getattr(c, name))
        except ConfigError as exc:
            raise ConfigError(f"config field '{name}': {exc}") from None
    for name in ("noise_p", "pitch_p", "stretch_p", "dropout"):
        _require(0 <= getattr(c, name) <= 1, name, "must be in [0, 1]")
    _require(c.dropout < 1, "dropout", "must be < 1")
    _require(c.noise_snr_min <= c.noise_snr_max, "noise_snr_min", "must be <= noise_snr_max")
    _require(0 <= c.pitch_semitones <= 12, "pitch_semitones", "must be in [0, 12]")
    _require(0.25 <= c.stretch_min <= c.stretch_max <= 4, "stretch_min",
             "and stretch_max must satisfy 0.25 <= stretch_min <= stretch_max <= 4")
    _require(0 <= c.label_smoothing < 1, "label_smoothing", "must be in [0, 1)")
    _require(c.mixup_alpha >= 0 and math.isfinite(c.mixup_alpha), "mixup_alpha", "must be >= 0")
    for name in ("max_epochs", "patience"):
        _require(getattr(c, name) >= 0, name, "must be >= 0")
    _require(c.warmup_epochs >= 0 and math.isfinite(c.warmup_epochs), "warmup_epochs",
             "must be >= 0")
    _require(c.seed >= 0, "seed", f"must be >= 0, got {c.seed}")
    _require(c.seed <= MAX_SEED, "seed", f"must be <= {MAX_SEED} (a 63-bit integer)")
    _require("/" not in c.name and c.name not in (".", ".."), "name", "must be a plain name")
    _require(bool(c.model.strip()), "model", "must name a registered model, got ''")
    _require(bool(c.impostors.strip()), "impostors",
             "must be auto, builtin, none or a folder, got an empty value")


def _validate_sizes(c: Config) -> None:
    """The fields that size memory (or the work per clip): each has a bound, and its message
    says why (the constants above)."""
    for name in ("sr", "n_mels", "batch_size", "n_fft", "win_length", "hop_length"):
        _require(getattr(c, name) > 0, name, f"must be > 0, got {getattr(c, name)}")
    _require(c.sr >= MIN_SR, "sr", f"must be at least {MIN_SR} Hz, got {c.sr}")
    _require(c.sr <= MAX_SR, "sr", f"must be at most {MAX_SR} Hz (the fastest audio interfaces' "
             f"rate; memory per second of audio grows with it), got {c.sr}")
    _require(c.n_mels <= MAX_N_MELS, "n_mels", f"must be at most {MAX_N_MELS} (speech front "
             f"ends use 40 to 128; each band is a row of every spectrogram), got {c.n_mels}")
    _require(c.n_fft <= MAX_N_FFT, "n_fft", f"must be at most {MAX_N_FFT} (170 ms at 48 kHz; "
             "the exported front end holds an (n_fft + 2) x win_length DFT basis, 268 MB at "
             f"8192), got {c.n_fft}")
    _require(c.win_length <= c.n_fft, "win_length",
             f"must be <= n_fft ({c.n_fft}): the STFT window lies within the FFT frame")
    _require(c.hop_length <= c.win_length, "hop_length",
             f"must be <= win_length ({c.win_length}), or samples fall between frames")
    _validate_window(c)
    _require(c.batch_size <= MAX_BATCH, "batch_size", f"must be at most {MAX_BATCH} (a batch "
             f"is in memory at once, with its activations), got {c.batch_size}")
    _require(math.isfinite(c.max_clip_s) and c.max_clip_s > 0, "max_clip_s", "must be > 0")
    _require(c.max_clip_s <= MAX_CLIP_S, "max_clip_s", f"must be at most {MAX_CLIP_S:g} s (10 "
             "minutes: a clip is held in memory and in the cache whole up to it; use scan for "
             f"longer recordings), got {c.max_clip_s:g}")
    _require(0 <= c.workers <= MAX_WORKERS, "workers", f"must be in [0, {MAX_WORKERS}] (0 = all "
             "cores; each is a process with its own memory, and more than the cores add "
             f"memory, not speed), got {c.workers}")
    _require(0 <= c.report_errors <= MAX_REPORT_ERRORS, "report_errors",
             f"must be in [0, {MAX_REPORT_ERRORS}] (each is embedded in report.html, about "
             f"0.2 MB: 500 make a 100 MB page), got {c.report_errors}")
    _require(1 <= c.width <= 16, "width",
             f"must be in [1, 16] (weights and activations grow with it), got {c.width}")
    _require(1 <= c.depth <= 8, "depth",
             f"must be in [1, 8] (activations grow with it), got {c.depth}")
    for name in ("specaug_freq_masks", "specaug_time_masks"):
        _require(0 <= getattr(c, name) <= MAX_SPECAUG_MASKS, name,
                 f"must be in [0, {MAX_SPECAUG_MASKS}] (papers use 2 to 20; each mask is a "
                 f"pass over the batch), got {getattr(c, name)}")
    for name, most, why in (("specaug_freq_width", MAX_N_MELS, "n_mels"),
                            ("specaug_time_width", MAX_FRAMES, "fixed_length")):
        _require(0 <= getattr(c, name) <= most, name, f"must be in [0, {most}] (no {why} is "
                 f"larger, and a mask wider than the spectrogram covers all of it), got "
                 f"{getattr(c, name)}")
    _require(1 <= c.voice_top_k <= MAX_TOP_K, "voice_top_k",
             f"must be in [1, {MAX_TOP_K}] (a k beyond a voice's enrolled clips averages them "
             f"all), got {c.voice_top_k}")
    _require(1 <= c.voice_snorm_top <= MAX_TOP_K, "voice_snorm_top",
             f"must be in [1, {MAX_TOP_K}] (a number beyond the cohort's speakers takes them "
             f"all), got {c.voice_snorm_top}")


def _validate_window(c: Config) -> None:
    if c.auto_window:
        return
    _require(c.fixed_length >= 4, "fixed_length",
             f"must be 'auto' or >= 4 (two 2x2 poolings), got {c.fixed_length}")
    _require(c.fixed_length <= MAX_FRAMES, "fixed_length",
             f"must be at most {MAX_FRAMES} frames ({MAX_WINDOW_S:g} s at a 10 ms hop: a "
             "longer clip is judged over several windows, up to max_clip_s), got "
             f"{c.fixed_length}")
    seconds = (c.fixed_length - 1) * c.hop_length / c.sr
    _require(seconds <= MAX_WINDOW_S, "fixed_length",
             f"gives a {seconds:g} s window ((fixed_length - 1) x hop_length / sr); it must be "
             f"at most {MAX_WINDOW_S:g} s (a longer clip is judged over several windows, up "
             "to max_clip_s)")


def max_fixed_length(*, sr: int, hop_length: int) -> int:
    """The largest ``fixed_length`` a multiple of 4 (the two 2x2 poolings) that the bounds
    allow at ``sr`` and ``hop_length``: :data:`MAX_FRAMES` frames, :data:`MAX_WINDOW_S`
    seconds."""
    frames = min(MAX_FRAMES, 1 + math.floor(MAX_WINDOW_S * sr / hop_length))
    return 4 * (frames // 4)


def check_group_by(group_by: str) -> None:
    """Raise :class:`ConfigError` unless ``group_by`` is ``none``, ``folder`` or a valid
    ``regex:PATTERN``."""
    if group_by in ("none", "folder"):
        return
    if group_by.startswith("regex:") and len(group_by) > len("regex:"):
        try:
            re.compile(group_by[len("regex:"):])
        except re.error as exc:
            raise ConfigError(f"group_by {group_by!r}: not a valid regular expression ({exc})"
                              ) from None
        return
    raise ConfigError(f"group_by must be {GROUP_BY_HELP}; got {group_by!r}")


def parse_operating_point(rule: str) -> tuple[str, float | None]:
    """``"f1"``, ``"eer"``, ``"far=0.01"`` or ``"frr=0.05"`` -> ``(kind, target)``; raises
    :class:`ConfigError` for anything else."""
    if rule in ("f1", "eer"):
        return rule, None
    found = re.fullmatch(r"(far|frr)=([0-9.eE+-]+)", rule)
    if found:
        try:
            target = float(found.group(2))
        except ValueError:
            target = math.nan
        if 0.0 <= target < 1.0:
            return found.group(1), target
    raise ConfigError(f"operating point must be 'f1', 'eer', 'far=X' or 'frr=X' with X in "
                      f"[0, 1), got {rule!r}")


RESUME_FIELDS = ("max_epochs", "patience", "workers", "keep_epoch_checkpoints", "cache",
                 "cache_dir", "tensorboard", "report_errors", "device", "precision", "prefetch",
                 "sync_batchnorm")
"""Fields a resumed run may change. They change neither what its checkpoints mean nor its
data, split or optimisation, so a resumed run still equals an uninterrupted one; any other
field keeps the run's own value."""


@dataclass(frozen=True)
class FieldDoc:
    """One field as the CLI help and the docs show it."""

    name: str
    flag: str
    type: str
    default: str
    help: str
    section: str


def section_fields(*sections: str) -> tuple[str, ...]:
    """The names of the fields of ``sections``, in field order."""
    return tuple(f.name for f in dataclasses.fields(Config) if f.metadata["section"] in sections)


def type_text(kind: Any) -> str:
    """A field type as people read it: ``int``, ``float``, ``bool``, ``str`` or
    ``one of: a | b``."""
    allowed = choices(kind)
    if allowed is not None:
        return "one of: " + " | ".join(allowed)
    return str(kind.__name__)


def reference() -> list[FieldDoc]:
    """Every field of :class:`Config` in order, with its flag, type, default (as TOML writes
    it), help and section: what ``--help`` and the configuration reference show."""
    return [FieldDoc(name=f.name, flag="--" + f.name.replace("_", "-"),
                     type=("int | \"auto\"" if f.name == "fixed_length"
                           else type_text(FIELD_TYPES[f.name])),
                     default=_toml_value(f.name, f.metadata["default"]),
                     help=f.metadata["help"], section=f.metadata["section"])
            for f in dataclasses.fields(Config)]
