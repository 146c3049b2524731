"""From a config to training-ready data: discover, decode into the cache, split, balance.

Clips with the same content share a group, so copies never straddle the split; the split is
stratified and group-aware (``group_by``); only the training split is balanced, so
validation and test keep the data's own class mix (the precision the gate will see).

:func:`prepare_data` is the one way training, resuming and the benchmarks get their data, so
they all skip, balance and split the same files the same way.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..config import SPEC_RECIPE, Config, FeatureConfig, max_fixed_length
from ..core.decision import stored_positive
from ..errors import AudioError, DataError
from ..features.frontend import mel_filterbank
from .audio_io import probe
from .cache import CacheSpec, FeatureCache
from .decode import ClipSet, cache_clips
from .discover import Clip, Discovery, Skipped, UnusableData, discover, require_all_classes
from .split import Split, make_split, merge_identical, read_split_file, split_as_given

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """The clips of one run, decoded and cached, split three ways.

    ``train``/``val``/``test`` are :class:`~audiogate.data.decode.ClipSet` views of one
    :class:`~audiogate.data.cache.FeatureCache`; ``split`` lists their clips (what
    ``split.csv`` holds); ``skipped`` lists every file left out, with the reason; ``usable``
    counts the decodable clips per class before balancing; ``positive`` is the class a
    two-class gate accepts (None for more classes).
    """

    classes: tuple[str, ...]
    train: ClipSet
    val: ClipSet
    test: ClipSet
    split: Split
    skipped: list[Skipped] = field(default_factory=list)
    usable: dict[str, int] = field(default_factory=dict)
    positive: str | None = None

    @property
    def cache(self) -> FeatureCache:
        return self.train.cache


def window_samples(config: Config) -> int:
    """Samples one training window reads: the model window, and enough beyond it for the
    slowest-reading (fastest) time stretch when augmenting."""
    feats = config.features()
    if not config.augment:
        return feats.n_samples
    rate = config.stretch_max if config.stretch_p > 0 else 1.0
    return math.ceil(feats.n_samples * rate) + feats.hop_length


def stored_samples(config: Config) -> int:
    """Samples stored per clip: its first ``max_clip_s`` seconds (and at least one training
    window), from which training crops its windows and validation judges the clip over all
    its windows, as ``predict`` does; 0 (features only) with neither crops nor augmentation."""
    if not (config.augment or config.random_crop):
        return 0
    return max(window_samples(config), round(config.max_clip_s * config.sr))


def open_cache(config: Config, *, read_only: bool = False) -> FeatureCache:
    """The feature cache for ``config`` (a temporary one when ``config.cache`` is off)."""
    spec = CacheSpec(features=config.features(), n_keep=stored_samples(config))
    return FeatureCache(config.cache_path(), spec, temporary=not config.cache,
                        read_only=read_only)


COVER_QUANTILE = 0.9
"""The suggested window covers this fraction of clips completely."""
SPEC_FRAMES: int = SPEC_RECIPE["fixed_length"]
"""The specification's window: what ``auto`` gives when no clip can be measured."""
AUTO_MAX_S = 2.0
"""The longest window ``fixed_length = "auto"`` chooses (seconds): the specification's 200
frames at its 10 ms hop. Longer clips are trained on a random window each epoch and judged
over several windows, pooled; a window as long as the clips would make every epoch dearer."""


def suggest_fixed_length(durations: np.ndarray, *, features: FeatureConfig,
                         quantile: float = COVER_QUANTILE) -> int:
    """The fewest frames, a multiple of 4 (the two 2x2 poolings), whose window
    (``(frames - 1) * hop_length`` samples) holds at least ``quantile`` of the clips whole;
    at most :data:`AUTO_MAX_S` seconds (longer clips are judged over several windows) and the
    longest window the config allows (:func:`~audiogate.config.max_fixed_length`)."""
    if durations.size == 0:
        return features.fixed_length
    longest = float(np.quantile(durations, quantile, method="higher"))
    frames = 1 + math.ceil(round(longest * features.sr, 6) / features.hop_length)
    cap = 4 * ((1 + math.floor(AUTO_MAX_S * features.sr / features.hop_length)) // 4)
    return min(max(4, 4 * math.ceil(frames / 4)), max(4, cap),
               max_fixed_length(sr=features.sr, hop_length=features.hop_length))


def resolve_window(config: Config) -> Config:
    """``config`` with ``fixed_length = "auto"`` replaced by the frames that hold
    :data:`COVER_QUANTILE` of the *training* clips whole (:func:`suggest_fixed_length`).

    The training split is the one :func:`prepare_data` will make (same files, same seed);
    durations come from the file headers. Validation and test clips play no part.
    """
    if not config.auto_window:
        return config
    front = replace(config, fixed_length=SPEC_FRAMES).features()  # any window: its hop and rate
    mel_filterbank(front)  # bad bands first,
    found = discover(config.data, group_by=config.group_by,  # before any file is listed
                     positive_class=config.positive_class)
    seconds: dict[str, float] = {}
    for clip in found.clips:
        try:
            seconds[clip.path] = probe(clip.path).duration
        except AudioError:
            continue  # skipped later, with its reason, when the clips are decoded
    usable = [c for c in found.clips if c.path in seconds]
    try:  # no usable clip: the spec's window (train refuses the data later, saying why)
        part, train = "training", (split_for(replace(config, balance="none"), usable)[0].train
                                   if usable else [])
    except DataError:  # too few clips to split: eda measures them all; train refuses them
        part, train = "usable", usable  # later, saying why
    durations = np.asarray([seconds[c.path] for c in train])
    frames = suggest_fixed_length(durations, features=front)
    window_s = (frames - 1) * config.hop_length / config.sr
    held = float(np.mean(durations <= window_s)) if durations.size else 0.0
    log.info("fixed_length = auto: %d frames (%.2f s) hold %d%% of the %d %s clips whole%s",
             frames, window_s, round(100 * held), len(durations), part,
             f" (at most {AUTO_MAX_S:g} s: longer clips are judged over several windows)"
             if held < COVER_QUANTILE else "")
    return replace(config, fixed_length=frames)


def refused_skipped_path(config: Config) -> Path:
    """Where ``skipped.csv`` goes when ``config``'s data cannot make a run
    (:class:`~audiogate.data.discover.UnusableData`). The run folder is made only once the
    data is ready, so that a refused data set leaves no run behind; the list goes beside where
    it would have been: ``<runs_dir>/<name>.skipped.csv``, or ``<runs_dir>/skipped.csv`` for a
    run without a name (its folder would have been named by the time it started). A plain
    file: ``audiogate runs`` lists folders only, and the name stays free."""
    return Path(config.runs_dir) / (f"{config.name}.skipped.csv" if config.name
                                    else "skipped.csv")


def clear_refused_skipped(config: Config) -> None:
    """Remove the list a refused run of this name left (:func:`refused_skipped_path`), once a
    run of that name has been made: it described data that could not make the run, and the
    run folder now holds its own ``skipped.csv``. Unnamed runs share one such file, which
    may describe other data, so it stays."""
    if not config.name:
        return
    stale = refused_skipped_path(config)
    if stale.is_file():
        stale.unlink(missing_ok=True)
        log.info("removed %s, left by an earlier refused run of this name", stale)


def prepare_data(config: Config, *, split: Split | None = None,
                 classes: tuple[str, ...] | None = None, progress: bool = True,
                 read_only: bool = False) -> PreparedData:
    """Decode every clip of ``config.data`` once (into the cache), then balance and split;
    the validation and test features are laid out contiguously in the cache as well.

    With ``split`` (and its ``classes``), the data of an existing run is brought back instead:
    exactly those clips, in those subsets; a clip that no longer decodes is an error then,
    since the run's results would no longer mean the same. ``read_only``: use what another
    process put in the cache, decode nothing, write nothing (the other processes of a
    distributed run, with rank 0's ``split``).
    Raises :class:`~audiogate.errors.ConfigError` for a front end with empty mel bands
    (:func:`~audiogate.features.frontend.mel_filterbank`) and for a two-class data set whose
    positive class is not known (:func:`~audiogate.core.decision.choose_positive`), before
    anything is read or written,
    and :class:`~audiogate.errors.DataError` when the data cannot make a run
    (:class:`~audiogate.data.discover.UnusableData`, with the files left out, when no class
    may be empty or too small; see :func:`refused_skipped_path`).
    """
    mel_filterbank(config.features())
    if split is not None:
        if classes is None:
            raise ValueError("prepare_data: a saved split needs its classes")
        data = _restore(config, split, classes, progress, read_only)
    else:
        found = discover(config.data, group_by=config.group_by,
                         positive_class=config.positive_class)
        data = _prepare_new(config, found, open_cache(config, read_only=read_only), progress)
    for part in (data.val, data.test):
        part.feature_matrix()
    return data


def split_for(config: Config, clips: Sequence[Clip]) -> tuple[Split, list[Skipped]]:
    """The run's split of ``clips``: the ``split_file``'s when there is one (the clips it does
    not list are left out, with the reason), else audiogate's own stratified, group-aware
    split (:func:`~audiogate.data.split.make_split`); the training part balanced either
    way."""
    if config.split_file:
        split, unlisted = split_as_given(clips, read_split_file(config.split_file),
                                         balance_by=config.balance, seed=config.seed)
        return split, [Skipped(c.path, f"not in the split file {config.split_file}")
                       for c in unlisted]
    return make_split(clips, test_size=config.test_size, val_size=config.val_size,
                      seed=config.seed, balance_by=config.balance), []


def _prepare_new(config: Config, found: Discovery, cache: FeatureCache,
                 progress: bool) -> PreparedData:
    arrays, bad = cache_clips(found.clips, cache=cache, workers=config.workers,
                              progress=progress)
    skipped = found.skipped + bad
    usable = {name: int((arrays.labels == i).sum()) for i, name in enumerate(found.classes)}
    require_all_classes(usable, where=config.data, skipped=skipped)
    clips = merge_identical(arrays.clips, [tuple(ref) for ref in arrays.refs.tolist()])
    try:
        split, unlisted = split_for(config, clips)
    except DataError as exc:  # too few clips: the files left out may be why
        raise UnusableData(str(exc), skipped=skipped) from None
    skipped += unlisted
    log.info("classes %s, usable %s; split train %d / val %d / test %d", found.classes, usable,
             len(split.train), len(split.val), len(split.test))
    return PreparedData(found.classes, arrays.subset(split.train), arrays.subset(split.val),
                        arrays.subset(split.test), split, skipped, usable, found.positive)


def _restore(config: Config, split: Split, classes: tuple[str, ...], progress: bool,
             read_only: bool) -> PreparedData:
    every = split.train + split.val + split.test
    arrays, bad = cache_clips(every, cache=open_cache(config, read_only=read_only),
                              workers=config.workers, progress=progress)
    if bad:
        listed = ", ".join(f"{s.path} ({s.reason})" for s in bad[:5])
        raise DataError(f"cannot resume: {len(bad)} file(s) of the saved split are no longer "
                        f"usable: {listed}")
    usable = {name: int((arrays.labels == i).sum()) for i, name in enumerate(classes)}
    # a run made before positive_class existed keeps the class it accepted then
    positive = stored_positive(classes, chosen=config.positive_class)
    return PreparedData(classes, arrays.subset(split.train), arrays.subset(split.val),
                        arrays.subset(split.test), split, [], usable, positive)
