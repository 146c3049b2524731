"""The model registry and the specification's network."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from audiogate.config import Config
from audiogate.errors import CheckpointError, ConfigError
from audiogate.models import ModelSpec, SimpleConvNet, model_names, register_model
from audiogate.models.registry import _REGISTRY


def test_simple_is_registered_and_sized_by_the_config() -> None:
    assert "simple" in model_names()
    spec = ModelSpec.of(Config(model="simple", n_mels=32, fixed_length=48, dropout=0.1),
                        n_classes=3)
    assert spec.as_dict() == {"name": "simple", "args": {"n_mels": 32, "n_frames": 48,
                                                         "n_classes": 3, "dropout": 0.1}}
    net = spec.build()
    assert isinstance(net, SimpleConvNet)
    assert net(torch.zeros(2, 32, 48)).shape == (2, 3)


def test_a_new_network_is_one_class_and_one_decorator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("audiogate.models.registry._REGISTRY", dict(_REGISTRY))

    @register_model("mean-pool")
    class MeanPool(nn.Module):
        def __init__(self, *, n_mels: int, n_classes: int) -> None:
            super().__init__()
            self.fc = nn.Linear(n_mels, n_classes)

        @classmethod
        def config_args(cls, config: Config, *, n_classes: int) -> dict[str, Any]:
            return {"n_mels": config.n_mels, "n_classes": n_classes}

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.mean(dim=-1))

    config = Config(model="mean-pool")          # the config accepts it at once
    net = ModelSpec.of(config, n_classes=2).build()
    assert isinstance(net, MeanPool) and net(torch.zeros(4, 64, 10)).shape == (4, 2)
    with pytest.raises(ValueError, match="already registered"):
        register_model("mean-pool")(MeanPool)


def test_unknown_model_names_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'resnet9000'; known models: .*simple"):
        ModelSpec.of(Config(model="resnet9000"), n_classes=2)
    with pytest.raises(CheckpointError, match="unknown model 'gone'"):
        ModelSpec("gone", {}).build()
    with pytest.raises(CheckpointError, match="cannot be built from the stored arguments"):
        ModelSpec("simple", {"n_mels": 64}).build()


def test_a_class_without_config_args_cannot_register() -> None:
    with pytest.raises(TypeError, match="config_args"):
        register_model("bare")(nn.Linear)
