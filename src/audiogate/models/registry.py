"""The model registry: a network is known by a name, so a new one is one file and one line.

>>> @register_model("tiny")                                    # doctest: +SKIP
... class Tiny(nn.Module):
...     @classmethod
...     def config_args(cls, config, *, n_classes): return {"n_classes": n_classes}

A checkpoint stores the name and the keyword arguments (:class:`ModelSpec`), so it rebuilds
its network with no config interpretation at load time, as ``timm.create_model`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from torch import nn

from ..errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from ..config import Config


class ModelClass(Protocol):
    """What a registered network class provides besides being an ``nn.Module``."""

    def __call__(self, **kwargs: Any) -> nn.Module: ...

    def config_args(self, config: Config, *, n_classes: int) -> dict[str, Any]:
        """Keyword arguments of the constructor for ``config`` and ``n_classes``."""
        ...


_REGISTRY: dict[str, ModelClass] = {}

M = TypeVar("M")


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator: make a network available as ``model = "<name>"``."""
    def add(cls: M) -> M:
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered")
        if not callable(getattr(cls, "config_args", None)):
            raise TypeError(f"{cls!r} needs a classmethod config_args(config, *, n_classes)")
        _REGISTRY[name] = cls  # type: ignore[assignment]
        return cls
    return add


def model_names() -> tuple[str, ...]:
    """Names of every registered network, sorted."""
    return tuple(sorted(_REGISTRY))


def model_class(name: str) -> ModelClass:
    """The class registered as ``name``; :class:`ConfigError` naming the known ones if none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; known models: "
                          f"{', '.join(model_names())}") from None


@dataclass(frozen=True)
class ModelSpec:
    """A network by name and constructor arguments: all a checkpoint needs to rebuild it."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, config: Config, *, n_classes: int) -> ModelSpec:
        """The spec ``config.model`` gives for ``n_classes`` classes."""
        return cls(config.model, model_class(config.model).config_args(config,
                                                                       n_classes=n_classes))

    def build(self) -> nn.Module:
        """A freshly initialised network (seed torch first for a repeatable one)."""
        try:
            cls = model_class(self.name)
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from None
        try:
            return cls(**self.args)
        except TypeError as exc:
            raise CheckpointError(f"model {self.name!r} cannot be built from the stored "
                                  f"arguments {self.args}: {exc}") from None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "args": dict(self.args)}
