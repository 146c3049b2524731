"""Where training runs and in what precision: device resolution, autocast, gradient scaling.

Nothing here needs CUDA to import or to run on a CPU-only machine: ``torch.cuda`` and
``torch.backends.mps`` are only asked at run time, and only when the config names them or
``auto`` looks for them.

* ``device``: ``auto`` (CUDA if present, else Apple's MPS, else the CPU), ``cpu``, ``cuda``,
  ``cuda:N`` or ``mps``. With several processes on one machine (torchrun), ``auto`` and
  ``cuda`` give each process the GPU of its local rank.
* ``precision``: ``32`` (float32), ``bf16-mixed`` or ``16-mixed``: the network's forward pass
  and loss run under :func:`torch.autocast` with that dtype, the weights and the optimizer stay
  float32; ``16-mixed`` scales the loss (:class:`torch.amp.GradScaler`) so small float16
  gradients do not flush to zero. The log-mel front end always computes in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from ..errors import ConfigError

AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
"""The autocast dtype of each mixed precision."""


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _no_cuda_reason() -> str:
    if torch.version.cuda is None:
        return (f"this PyTorch ({torch.__version__}) is the CPU-only build; install the CUDA "
                "build (see the README) or use --device cpu")
    return "no CUDA GPU is visible (check the driver and CUDA_VISIBLE_DEVICES) or use --device cpu"


def resolve_device(name: str, *, local_rank: int = 0, local_world_size: int = 1) -> torch.device:
    """The :class:`torch.device` a config's ``device`` names, checked to exist here.

    ``local_rank`` / ``local_world_size``: this process's place among the processes on this
    machine (torchrun's ``LOCAL_RANK`` / ``LOCAL_WORLD_SIZE``); with more than one, ``cuda``
    means GPU ``local_rank`` and a fixed ``cuda:N`` is refused (every process would share it).
    Raises :class:`~audiogate.errors.ConfigError` naming what is missing.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise ConfigError("config field 'device' is 'mps', but Apple's MPS backend is not "
                              "available here; use --device cpu")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise ConfigError(f"config field 'device' is {name!r}, but {_no_cuda_reason()}")
    count = torch.cuda.device_count()
    if name == "cuda":
        index = local_rank if local_world_size > 1 else torch.cuda.current_device()
    else:
        if local_world_size > 1:
            raise ConfigError(f"config field 'device' is {name!r}, but {local_world_size} "
                              "processes run on this machine and would share that GPU; use "
                              "--device cuda (each process takes the GPU of its local rank)")
        index = int(name.split(":", 1)[1])
    if index >= count:
        raise ConfigError(f"config field 'device' asks for GPU {index}, but this machine has "
                          f"{count} visible GPU(s)")
    return torch.device("cuda", index)


class Precision:
    """Autocast and gradient scaling for one device and one ``precision`` setting."""

    def __init__(self, name: str, device: torch.device) -> None:
        self.name, self.device = name, device
        self.dtype = AUTOCAST_DTYPES.get(name)
        if name == "16-mixed" and device.type != "cuda":
            raise ConfigError(f"config field 'precision' is '16-mixed', which needs a CUDA GPU "
                              f"(device is {device}); use bf16-mixed or 32")
        if name == "bf16-mixed" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"config field 'precision' is 'bf16-mixed', but {device} has no "
                              "bfloat16 support; use 16-mixed or 32")
        self.scaler = torch.amp.GradScaler(device.type) if name == "16-mixed" else None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Run the enclosed forward pass (and loss) in the mixed dtype; float32 for ``32``."""
        if self.dtype is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=self.dtype):
            yield

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backward pass and optimizer step (the loss scaled and unscaled for ``16-mixed``;
        a step whose gradients overflowed is skipped and the scale lowered)."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """The gradient scaler's state (empty without one), for ``last.pt``."""
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; ignored when either side has no scaler (a run resumed
        in another precision starts its scaler afresh)."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def to_cpu(tree: Any) -> Any:
    """``tree`` (dicts, lists, tuples of tensors and plain data) with every tensor on the CPU:
    what checkpoints store, so they load on a machine without the training device."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu()
    if isinstance(tree, dict):
        return {k: to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(to_cpu(v) for v in tree)
    return tree


def to_device(array: Any, device: torch.device) -> torch.Tensor:
    """A numpy array as a tensor on ``device`` (through pinned memory, asynchronously, on
    CUDA)."""
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
