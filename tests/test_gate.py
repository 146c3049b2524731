"""A gate's decision: threshold, pooling over a clip's windows, random training crops, and the
operating point chosen on validation, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiogate.cli import main
from audiogate.config import Config
from audiogate.core.decision import Decision, clip_windows, positive_index
from audiogate.data import prepare_data
from audiogate.data.synth import voice_like
from audiogate.errors import ConfigError
from audiogate.gates import load
from audiogate.models.checkpoint import load_checkpoint
from audiogate.training import Trainer

from .conftest import SR, TINY_FLAGS, build_band_gate, hiss, make_toy_dataset

GATE = ("not_allowed", "allowed")
ALLOWED = "allowed"


def test_positive_class_of_a_gate() -> None:
    """The rule of old gates, which still judge by it (a checkpoint or export without a
    stored positive class)."""
    assert positive_index(GATE) == 1
    assert positive_index(("allowed", "zzz")) == 0
    assert positive_index(("cat", "dog")) == 1
    assert positive_index(("a", "b", "c")) is None


def test_threshold_decides_and_argmax_without_it() -> None:
    probs = np.array([[0.7, 0.3], [0.4, 0.6], [0.1, 0.9]], np.float32)
    assert Decision(GATE, ALLOWED).labels(probs).tolist() == [0, 1, 1]
    assert Decision(GATE, ALLOWED, threshold=0.25).labels(probs).tolist() == [1, 1, 1]
    assert Decision(GATE, ALLOWED, threshold=0.8).labels(probs).tolist() == [0, 0, 1]
    flipped = Decision(("allowed", "other"), ALLOWED, threshold=0.65)  # positive is label 0
    assert flipped.labels(probs).tolist() == [0, 1, 1]
    with pytest.raises(ConfigError, match="two-class"):
        Decision(("a", "b", "c"), threshold=0.5)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        Decision(GATE, ALLOWED, threshold=1.5)
    with pytest.raises(ConfigError, match="pooling"):
        Decision(GATE, ALLOWED, pooling="median")


def test_pooling_mean_and_max() -> None:
    windows = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]], np.float32)
    np.testing.assert_allclose(Decision(GATE, ALLOWED).pool(windows), [2.0 / 3, 1.0 / 3],
                               rtol=1e-6)
    np.testing.assert_array_equal(Decision(GATE, ALLOWED, pooling="max").pool(windows),
                                  windows[2])
    three = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]], np.float32)   # most confident window
    np.testing.assert_array_equal(Decision(("a", "b", "c"), pooling="max").pool(three),
                                  three[1])


@pytest.mark.parametrize(("n", "expected"), [(50, [0]), (100, [0]), (101, [0, 1]),
                                             (250, [0, 50, 100, 150])])
def test_clip_windows_cover_the_clip(n: int, expected: list[int]) -> None:
    assert clip_windows(n=n, window=100).tolist() == expected


@pytest.fixture(scope="module")
def band_gate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_band_gate(tmp_path_factory.mktemp("gate") / "band.pt", fixed_length=100)


def test_whole_clips_are_pooled(band_gate: Path) -> None:
    """3 s of hiss then 1 s of voice: most windows say not_allowed, one or two allowed."""
    rng = np.random.default_rng(0)
    y = 0.5 * np.concatenate([hiss(rng=rng, duration=3.0),
                              voice_like(rng=rng, duration=1.0, sr=SR)]).astype(np.float32)
    gate = load(band_gate)
    mean = gate.predict(y, sr=SR)
    assert mean.label == "not_allowed" and mean.n_windows == 8   # 0.99 s windows, half hop
    gate.decision = Decision(GATE, ALLOWED, pooling="max")
    assert gate.predict(y, sr=SR).label == "allowed"
    gate.max_clip_s = 2.0                                       # the voice is past 2 s
    assert gate.predict(y, sr=SR).label == "not_allowed"


def test_threshold_override(band_gate: Path) -> None:
    y = 0.5 * voice_like(rng=np.random.default_rng(1), duration=1.0, sr=SR)
    p = load(band_gate).predict(y, sr=SR)
    assert p.label == "allowed" and p.threshold is None and 0.5 < p.score < 1
    strict = load(band_gate, threshold=min(1.0, p.score + 1e-3)).predict(y, sr=SR)
    assert strict.label == "not_allowed" and strict.score == pytest.approx(p.score)
    assert strict.as_dict()["threshold"] == pytest.approx(p.score + 1e-3)


def test_random_crops_stay_inside_the_clip(tmp_path: Path) -> None:
    """Clips whose samples count their own position: a crop's first sample tells its start."""
    data = make_toy_dataset(tmp_path / "data", n_per_class=12)
    ramp = (np.arange(SR * 2) / (SR * 2)).astype(np.float32) * 0.9
    sf.write(data / "allowed" / "tone_000.wav", ramp, SR, subtype="FLOAT")
    config = Config(data=str(data), cache_dir=str(tmp_path / "cache"), fixed_length=32,
                    n_fft=512, workers=1, augment=False, max_clip_s=1.5)
    trainer = Trainer(config, prepare_data(config, progress=False), progress=False)
    train = trainer.data.train
    rows = np.flatnonzero([c.path.endswith("tone_000.wav") for c in train.clips])
    assert len(rows) == 1  # seed 0 puts the ramp in the training split
    n_samples = config.features().n_samples
    starts = set()
    for epoch in range(1, 121):  # a clip's crop is drawn from its seed of (seed, epoch, clip)
        waves, lengths = trainer.crops(rows, epoch=epoch)
        first = np.rint(waves[:, 0] / 0.9 * SR * 2).astype(int)
        assert ((first >= 0) & (first <= round(1.5 * SR) - n_samples)).all()
        assert (lengths == n_samples).all()
        starts.update(first.tolist())
    assert len(starts) > 50                                       # really random
    twice = trainer.crops(np.repeat(rows, 2), epoch=7)[0]
    assert np.array_equal(twice[0], twice[1])  # the same clip in the same epoch: same crop
    fixed = Trainer(Config(**{**config.to_dict(), "random_crop": False}), trainer.data,
                    progress=False)
    assert np.rint(fixed.crops(rows, epoch=1)[0][:, 0] * 1e6).tolist() == [0.0]


@pytest.mark.parametrize(("pooling", "random_crop"), [("mean", True), ("max", False)])
def test_validation_judges_whole_clips_as_predict_does(tmp_path: Path, pooling: str,
                                                       random_crop: bool,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Clips of 0.2-1.5 s against a 0.31 s window: the per-epoch validation (which picks the
    best epoch) pools every window of a clip as ``predict`` does, not its first window only:
    the same labels, and a loss from the same pooled probabilities; also when training takes
    each clip's first window (no random crops, as the spec recipe). Windows past the memory
    budget are computed at each evaluation, to the same features and results."""
    from audiogate.models.checkpoint import save_checkpoint
    from audiogate.training import windows as windows_module

    gen = np.random.default_rng(3)
    root = tmp_path / "data"
    for i in range(16):
        n = round(gen.uniform(0.2, 1.5) * SR)
        (root / "allowed").mkdir(parents=True, exist_ok=True)
        (root / "not_allowed").mkdir(parents=True, exist_ok=True)
        tone = 0.3 * np.sin(2 * np.pi * gen.uniform(300, 3000) * np.arange(n) / SR)
        sf.write(root / "allowed" / f"a{i:02d}.wav", tone.astype(np.float32), SR)
        sf.write(root / "not_allowed" / f"n{i:02d}.wav", hiss(rng=gen, duration=n / SR) * 0.3,
                 SR)
    config = Config(data=str(root), cache_dir=str(tmp_path / "cache"), fixed_length=32,
                    n_fft=512, workers=1, clip_pooling=pooling, random_crop=random_crop)
    trainer = Trainer(config, prepare_data(config, progress=False), progress=False)
    val = trainer.data.val
    window = config.features().n_samples
    expected = [len(clip_windows(n=sf.info(c.path).frames, window=window)) for c in val.clips]
    assert np.bincount(trainer.val_windows.owner).tolist() == expected  # predict's windows
    assert sum(expected) > len(val)
    loss, pooled = trainer.evaluate(trainer.val_windows, val.labels)
    save_checkpoint(tmp_path / "m.pt", net=trainer.net, spec=trainer.spec, config=config,
                    classes=trainer.classes, epoch=1, metrics={})
    model = load(tmp_path / "m.pt").with_threshold(None)
    probs = np.array([[p.probabilities[c] for c in trainer.classes]
                      for p in model.predict_many([c.path for c in val.clips])])
    np.testing.assert_allclose(pooled, probs, atol=1e-4)
    weight = trainer.class_weight[val.labels]
    picked = probs[np.arange(len(val)), val.labels]
    assert loss == pytest.approx(-(weight * np.log(picked)).sum() / weight.sum(), rel=1e-4)

    monkeypatch.setattr(windows_module, "EVAL_BATCH", 3)  # several batches, some mixed
    kept = trainer.val_windows
    computed = windows_module.ClipWindows.of(val, frontend=trainer.frontend,
                                             max_clip_s=config.max_clip_s,
                                             device=trainer.device, budget_bytes=0)
    assert kept.stored is not None and computed.stored is None
    assert computed.owner.tolist() == kept.owner.tolist()
    rows = np.arange(len(kept.owner))[::-1].copy()
    np.testing.assert_allclose(computed.feats(rows).numpy(), kept.feats(rows).numpy(),
                               atol=1e-5)
    loss_computed, pooled_computed = trainer.evaluate(computed, val.labels)
    assert loss_computed == pytest.approx(loss, rel=1e-5)
    np.testing.assert_allclose(pooled_computed, pooled, atol=1e-5)


def test_operating_point_is_chosen_on_validation_and_used(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    data = make_toy_dataset(tmp_path / "data", n_per_class=24)
    runs = tmp_path / "runs"
    assert main(["-q", "train", "--data", str(data), "--runs-dir", str(runs), "--name", "g",
                 *TINY_FLAGS, "--max-epochs", "2", "--operating-point", "far=0"]) == 0
    run = runs / "g"
    best = load_checkpoint(run / "models/best.pt")
    assert best.gate is not None and best.gate["operating_point"] == "far=0"
    assert best.gate["positive"] == "allowed" and best.gate["validation"]["far"] == 0.0
    report = json.loads((run / "test_metrics.json").read_text())
    assert report["gate"]["threshold"] == pytest.approx(best.gate["threshold"])
    for name in ("roc_test.png", "det_test.png", "confusion_test.png"):
        assert (run / "outputs" / name).stat().st_size > 1000
    capsys.readouterr()
    assert main(["-q", "predict", "--checkpoint", str(run / "models/best.pt"), "--json",
                 str(data / "allowed" / "tone_001.wav")]) == 0
    verdict = json.loads(capsys.readouterr().out)[0]
    assert verdict["threshold"] == pytest.approx(best.gate["threshold"])
    # a threshold nobody reaches rejects every allowed clip
    assert main(["-q", "evaluate", "--checkpoint", str(run / "models/best.pt"),
                 "--threshold", "1.0", "--out", str(tmp_path / "ev")]) == 0
    strict = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert strict["gate"]["frr"] == 1.0 and strict["gate"]["far"] == 0.0
    assert (tmp_path / "ev" / "det.png").is_file() and (tmp_path / "ev" / "roc.png").is_file()


def test_auto_window_comes_from_the_training_split(tmp_path: Path) -> None:
    """Clips of 0.3-1.2 s: the window must hold 90% of the training clips whole, and the run
    records the number it chose."""
    import csv

    rng = np.random.default_rng(3)
    data = tmp_path / "data"
    for cls in ("allowed", "not_allowed"):
        for i in range(20):
            seconds = float(rng.uniform(0.3, 1.2))
            y = 0.3 * rng.standard_normal(round(seconds * SR)).astype(np.float32)
            sf.write(data / cls / f"{i:02d}.wav" if (data / cls).is_dir() else
                     _mkdir(data / cls) / f"{i:02d}.wav", y, SR)
    runs = tmp_path / "runs"
    flags = [f for f in TINY_FLAGS if f != "32"]
    flags.remove("--fixed-length")
    assert main(["-q", "train", "--data", str(data), "--runs-dir", str(runs), "--name", "a",
                 *flags, "--fixed-length", "auto", "--max-epochs", "1"]) == 0
    config = load_checkpoint(runs / "a" / "models" / "best.pt").config
    assert not config.auto_window
    assert f"fixed_length = {config.fixed_length}\n" in (runs / "a" / "config.toml").read_text()
    with open(runs / "a" / "split.csv") as fh:
        train = [row["path"] for row in csv.DictReader(fh) if row["subset"] == "train"]
    durations = np.asarray([sf.info(p).duration for p in train])
    window_s = (config.fixed_length - 1) * config.hop_length / config.sr
    assert np.mean(durations <= window_s) >= 0.9
    smaller = (config.fixed_length - 5) * config.hop_length / config.sr
    assert np.mean(durations <= smaller) < 0.9   # and no more than that (multiple of 4)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
