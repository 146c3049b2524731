"""Recipes and the training regularisers: SpecAugment, mixup, learning-rate schedules, label
smoothing, BC-ResNet; each does what it says."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from audiogate import resume, train
from audiogate.cli import build_parser, config_from_args, main
from audiogate.config import RECIPES, SPEC_RECIPE, Config
from audiogate.errors import ConfigError
from audiogate.models import BCResNet, ModelSpec
from audiogate.training import Callback, Trainer
from audiogate.training.regularize import (
    ONECYCLE_START,
    SpecAugment,
    lr_factor,
    mixed_loss,
    mixup,
)

from .conftest import make_toy_dataset


def test_spec_augment_masks_bands_and_stretches() -> None:
    aug = SpecAugment(freq_masks=2, freq_width=5, time_masks=1, time_width=7)
    rng = np.random.default_rng(0)
    feats = torch.ones(64, 40, 100)
    out = aug(feats, rng)
    zero = out == 0
    rows = zero.all(dim=2)            # mel channels masked over all frames
    cols = zero.all(dim=1)            # frames masked over all channels
    assert (rows.sum(dim=1) <= 10).all() and (cols.sum(dim=1) <= 7).all()
    assert rows.any() and cols.any()
    # every zero lies in a masked band or stretch; nothing else changed
    assert torch.equal(zero, rows[:, :, None] | cols[:, None, :])
    assert torch.equal(SpecAugment()(feats, rng), feats)                    # off by default
    again = aug(feats, np.random.default_rng(0))
    assert torch.equal(out, again)                                          # seeded


def test_mixup_mixes_inputs_and_losses() -> None:
    rng = np.random.default_rng(1)
    x = torch.randn(8, 4, 5)
    mixed, mix = mixup(x, alpha=0.4, rng=rng)
    assert mix is not None and 0 < mix.lam < 1
    torch.testing.assert_close(mixed, mix.lam * x + (1 - mix.lam) * x[mix.partner])
    logits, y = torch.randn(8, 2), torch.randint(0, 2, (8,))
    ce = torch.nn.CrossEntropyLoss()
    expected = mix.lam * ce(logits, y) + (1 - mix.lam) * ce(logits, y[mix.partner])
    torch.testing.assert_close(mixed_loss(ce, logits, y, mix), expected)
    same, none = mixup(x, alpha=0.0, rng=rng)
    assert none is None and same is x


def test_learning_rate_schedules() -> None:
    # until Ctrl+C (no known length): warm up, then the peak rate
    assert [lr_factor(s, schedule="cosine", total=0, warmup=4) for s in (0, 3, 500)] == [
        0.25, 1.0, 1.0]
    total = 100
    assert [lr_factor(s, schedule="none", total=total, warmup=0) for s in (0, 50, 99)] == [1] * 3
    assert lr_factor(0, schedule="none", total=total, warmup=4) == 0.25
    assert lr_factor(3, schedule="none", total=total, warmup=4) == 1.0
    cosine = [lr_factor(s, schedule="cosine", total=total, warmup=10) for s in range(total + 1)]
    assert cosine[9] == 1.0 and cosine[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(cosine[10:]))
    assert cosine[-1] == pytest.approx(ONECYCLE_START)
    one = [lr_factor(s, schedule="onecycle", total=total, warmup=0) for s in range(total + 1)]
    assert one[0] == pytest.approx(ONECYCLE_START) and max(one) == one[30] == 1.0
    assert one[-1] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ConfigError):
        lr_factor(0, schedule="step", total=total, warmup=0)


def test_recipes_fill_fields_that_are_not_given() -> None:
    spec = Config.from_recipe("spec")
    for name, value in SPEC_RECIPE.items():
        assert getattr(spec, name) == value, name
    strong = Config.from_recipe("strong", lr=0.01)
    assert strong.lr == 0.01 and strong.fixed_length == RECIPES["strong"]["fixed_length"]
    args = build_parser().parse_args(["train", "--recipe", "strong", "--max-epochs", "5"])
    from_cli = config_from_args(args)
    assert from_cli.recipe == "strong" and from_cli.max_epochs == 5
    assert from_cli.fixed_length == RECIPES["strong"]["fixed_length"]
    assert Config.from_dict(strong.to_dict()) == strong          # a saved config reloads as is
    assert Config.from_recipe("default") == Config()              # the default is the fields'
    with pytest.raises(ConfigError, match="unknown recipe"):
        Config.from_recipe("turbo")


@pytest.mark.parametrize("shape", [(64, 200), (40, 101), (13, 7)])
def test_bcresnet_takes_any_input_size(shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    net = BCResNet(n_classes=3, tau=1)
    x = torch.randn(4, *shape, requires_grad=True)
    out = net(x)
    assert out.shape == (4, 3)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert 8_000 < sum(p.numel() for p in net.parameters()) < 10_000        # BC-ResNet-1
    spec = ModelSpec.of(Config(model="bcresnet", width=2), n_classes=2)
    assert spec.args == {"n_classes": 2, "tau": 2, "dropout": 0.3}


def test_label_smoothing_only_in_the_training_loss(tmp_path: Path) -> None:
    from audiogate.data import prepare_data

    data = make_toy_dataset(tmp_path / "data", n_per_class=12)
    config = Config(data=str(data), cache_dir=str(tmp_path / "c"), fixed_length=32, n_fft=512,
                    workers=1, label_smoothing=0.2)
    prepared = prepare_data(config, progress=False)
    trainer = Trainer(config, prepared, progress=False)
    plain = Trainer(replace(config, label_smoothing=0.0), prepared, progress=False)
    confident = torch.tensor([[12.0, -12.0]])
    target = torch.tensor([0])
    assert float(trainer.criterion(confident, target)) > 0.1   # smoothing: never 0
    assert float(plain.criterion(confident, target)) < 1e-6
    # the same network (same seed): validation's loss does not smooth
    labels = prepared.val.labels
    smoothed, unsmoothed = (t.evaluate(t.val_windows, labels) for t in (trainer, plain))
    assert smoothed[0] == unsmoothed[0] and np.array_equal(smoothed[1], unsmoothed[1])


class StopAfter(Callback):
    """Stops a run after ``epochs`` epochs, as a Ctrl+C would (the config keeps its
    max_epochs, so a resume continues the same plan)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if record["epoch"] >= self.epochs:
            trainer.request_stop("test stop")


@pytest.mark.slow
def test_strong_recipe_trains_resumes_and_predicts(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A scheduled, augmented, mixed-up BC-ResNet run stopped after epoch 1 and resumed equals
    an uninterrupted one (the schedule's position is saved), and its checkpoint predicts."""
    data = make_toy_dataset(tmp_path / "data", n_per_class=16)
    config = Config.from_recipe(
        "strong", data=str(data), runs_dir=str(tmp_path / "runs"), fixed_length=32, n_fft=512,
        batch_size=8, workers=1, patience=0, width=1, mixup_alpha=0.2, warmup_epochs=0.5,
        max_epochs=3)
    straight = train(replace(config, name="straight"), progress=False)
    stopped = train(replace(config, name="stopped"), progress=False, callbacks=(StopAfter(1),))
    assert stopped.epochs_done == 1 and stopped.stop_reason == "test stop"
    resumed = resume(stopped.run.root, progress=False)
    assert resumed.epochs_done == 3

    def epochs(run: Path) -> list[dict[str, Any]]:
        rows = json.loads((run / "metrics.json").read_text())["epochs"]
        return [{k: v for k, v in e.items() if k != "seconds"} for e in rows]

    assert epochs(resumed.run.root) == epochs(straight.run.root)
    lrs = [e["lr"] for e in epochs(straight.run.root)]
    assert lrs[0] != lrs[-1] and all(math.isfinite(v) for v in lrs)      # the schedule moved
    capsys.readouterr()
    assert main(["-q", "predict", "--checkpoint", str(straight.run.best), "--json",
                 str(data / "allowed")]) == 0
    verdicts = json.loads(capsys.readouterr().out)
    assert len(verdicts) == 16 and all(v["label"] for v in verdicts)


@pytest.mark.parametrize("frames", [200, 101, 9])
def test_tcresnet_takes_any_number_of_frames(frames: int) -> None:
    from audiogate.models import TCResNet

    torch.manual_seed(0)
    net = TCResNet(n_mels=64, n_classes=2)
    x = torch.randn(3, 64, frames, requires_grad=True)
    out = net(x)
    assert out.shape == (3, 2)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert 60_000 < sum(p.numel() for p in net.parameters()) < 70_000     # TC-ResNet8
    deeper = ModelSpec.of(Config(model="tcresnet", depth=2, width=2), n_classes=2).build()
    assert len(deeper.blocks) == 6 and deeper.fc.in_features == 96


def test_the_constructor_resolves_the_recipe() -> None:
    """``Config(recipe=...)`` is the recipe (fields not given take its values), as
    ``from_recipe`` and a TOML file with ``recipe = ...`` are."""
    assert Config(recipe="spec") == Config.from_recipe("spec")
    for name, value in SPEC_RECIPE.items():
        assert getattr(Config(recipe="spec"), name) == value
    tuned = Config(recipe="spec", lr=0.01)
    assert tuned.lr == 0.01 and tuned.model == "simple"
    assert dataclasses.replace(tuned, seed=3).model == "simple"  # replace keeps values


def test_choices_come_from_the_annotations() -> None:
    from audiogate.config import FIELD_TYPES, choices, reference

    assert choices(FIELD_TYPES["balance"]) == ("weighted", "resample", "downsample", "none")
    assert set(RECIPES) == set(choices(FIELD_TYPES["recipe"]) or ())
    with pytest.raises(ConfigError, match="'clip_pooling' must be one of mean, max"):
        Config(clip_pooling="median")  # type: ignore[arg-type]
    docs = {d.name: d for d in reference()}
    assert list(docs) == [f.name for f in dataclasses.fields(Config)]
    assert docs["pad"].type == "one of: floor | silence" and docs["pad"].default == '"floor"'
    assert docs["fixed_length"].default == '"auto"' and docs["augment"].default == "true"


def test_changed_lists_fields_set_beyond_the_recipe() -> None:
    from audiogate.config import AUGMENT, TRAINING, section_fields

    names = section_fields(TRAINING, AUGMENT)
    assert "width" in names and "noise_p" in names and "model" not in names
    assert Config(recipe="voice").changed(names) == []
    assert Config(recipe="voice", width=4, noise_p=0.1).changed(names) == ["noise_p", "width"]
