"""Data-parallel training on PyTorch's own stack: torchrun, ``torch.distributed``, DDP.

torchrun (or ``audiogate train --nproc N``, which runs torchrun's launcher, :func:`launch`)
starts one process per device and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address; :func:`session` joins the process group and leaves it at the end. A
single process (no torchrun, or ``WORLD_SIZE=1``) never touches ``torch.distributed``.

Two groups are used: the device's backend (NCCL on CUDA, gloo on the CPU) for the gradients,
inside :class:`~torch.nn.parallel.DistributedDataParallel`; and a gloo group for small control
messages (the split, stop flags, metrics), which live on the CPU whatever the device. The
control group waits long (:data:`SETUP_TIMEOUT`): rank 0 may be decoding a large data set into
the cache while the others wait at its barrier.

How the ranks share an epoch: every rank draws the same global batch order from the same
seeded generator and takes its own contiguous slice of each global batch (:meth:`Dist.shard`),
so ``N`` processes with ``batch_size`` ``B`` see exactly the batches one process with ``B``
sees.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

SETUP_TIMEOUT = timedelta(hours=24)
"""Longest wait in a control message (rank 0 filling the cache for a large data set)."""
SHUTDOWN_TIMEOUT_S = 300
"""Seconds ``audiogate train --nproc`` gives the processes to stop cleanly after a signal
(finish the batch, write the test report) before torchrun kills them."""

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel job; the default is a job of one process,
    for which every method is a no-op that returns its input."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    control: Any = None
    """The gloo process group for control messages (None when not distributed)."""

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and logs."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether there are other processes to talk to."""
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.active:
            dist.barrier(group=self.control)

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` (picklable), on every rank."""
        if not self.active:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]  # type: ignore[return-value]

    def gather(self, obj: T) -> list[T]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.control)
        return out

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank."""
        if not self.active:
            return flag
        value = torch.tensor([int(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.control)
        return bool(value.item())

    def first(self, value: T | None) -> T | None:
        """The first non-None ``value`` in rank order, on every rank (a decision any rank
        may take, e.g. to stop, becomes everyone's)."""
        return next((v for v in self.gather(value) if v is not None), None)

    def shard(self, rows: np.ndarray) -> np.ndarray:
        """This rank's contiguous part of ``rows`` (``np.array_split`` into ``world_size``
        parts: the first ``len(rows) % world_size`` parts are one longer; a part may be
        empty)."""
        if not self.active:
            return rows
        return np.array_split(rows, self.world_size)[self.rank]

    def wrap(self, net: nn.Module, device: torch.device, *,
             sync_batchnorm: bool = True) -> nn.Module:
        """``net`` in :class:`~torch.nn.parallel.DistributedDataParallel` (which averages the
        gradients over the ranks in the backward pass), made ready by :func:`ddp_ready`;
        ``net`` itself for one process."""
        if not self.active:
            return net
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            ddp_ready(net, device, sync_batchnorm=sync_batchnorm),
            device_ids=[device.index] if device.type == "cuda" else None)


def ddp_ready(net: nn.Module, device: torch.device, *, sync_batchnorm: bool) -> nn.Module:
    """``net`` ready for DDP on ``device``, changed in place.

    With ``sync_batchnorm`` on CUDA, batch-norm layers become :class:`~torch.nn.SyncBatchNorm`
    (statistics of the whole global batch, as one process computes them; PyTorch has it for
    GPUs only). Elsewhere each process normalises its own share of the batch with its own
    statistics, so a network with batch norm trains a little differently in N processes than
    in one (a network without it, like ``simple``, trains the same). Convolution weights are
    laid out channels-last: the networks run channels-last activations, whose weight
    gradients come out channels-last, and DDP's gradient buckets copy the parameters' layout
    (same values either way).
    """
    if sync_batchnorm and device.type == "cuda":
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    for param in net.parameters():
        if param.dim() == 4:
            laid_out = torch.empty_like(param.data, memory_format=torch.channels_last)
            param.data = laid_out.copy_(param.data)  # strides set even where C = 1
    return net


def from_env() -> Dist:
    """Rank and sizes from torchrun's environment (a job of one without it); no groups."""
    env = os.environ

    def get(name: str, default: int) -> int:
        return int(env.get(name, default))

    world = get("WORLD_SIZE", 1)
    return Dist(rank=get("RANK", 0), world_size=world, local_rank=get("LOCAL_RANK", 0),
                local_world_size=get("LOCAL_WORLD_SIZE", world))


def launched() -> bool:
    """Whether this process was started by torchrun (or another torch.distributed launcher)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


@contextlib.contextmanager
def session(device: torch.device) -> Iterator[Dist]:
    """Join the process group torchrun describes (NCCL for CUDA devices, gloo otherwise) plus
    a gloo control group; leave both at the end. Yields :class:`Dist` (a job of one, touching
    nothing, without torchrun or with ``WORLD_SIZE=1``)."""
    env = from_env()
    if not env.active:
        yield env
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                            device_id=device if device.type == "cuda" else None)
    try:
        control = dist.new_group(backend="gloo", timeout=SETUP_TIMEOUT)
        yield Dist(rank=env.rank, world_size=env.world_size, local_rank=env.local_rank,
                   local_world_size=env.local_world_size, control=control)
    finally:
        dist.destroy_process_group()


def launch(argv: Sequence[str], *, nproc: int) -> int:
    """``torchrun --standalone --nproc-per-node nproc -m audiogate <argv>``, in this process
    (torchrun's own launcher, :func:`torch.distributed.run.run`); returns the exit status.

    A SIGINT/SIGTERM to this process reaches every worker, which stops at the next batch
    boundary with its finished epochs saved; the status is then ``128 + signal``.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from ..data.workers import resolve_workers

    logging.getLogger("torch.distributed.elastic").setLevel(logging.WARNING)
    # torchrun would set 1 thread per process (and say so); share the cores out instead
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, resolve_workers(0) // nproc)))
    args = get_args_parser().parse_args([
        "--standalone", f"--nproc-per-node={nproc}", f"--shutdown-timeout={SHUTDOWN_TIMEOUT_S}",
        "--module", "audiogate"])
    args.training_script_args = list(argv)  # set, not parsed: torchrun's parser would take
    # an audiogate flag such as --nproc for an abbreviation of one of its own
    try:
        run(args)
    except SignalException as exc:
        sig = signal.Signals(exc.sigval)
        log.warning("%s: the %d processes were stopped; finished epochs are saved (continue "
                    "with --resume)", sig.name, nproc)
        return 128 + int(sig)
    except ChildFailedError as exc:
        log.error("a training process failed:\n%s", exc.format_msg())
        return 1
    return 0
