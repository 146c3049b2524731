"""Work spread over worker processes: chunks of files in, results out in order, and workers
that never outlive the process that started them."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

import torch
from tqdm.auto import tqdm

CHUNK = 16
"""Files per task sent to a worker process."""
IN_FLIGHT = 3
"""Tasks queued per worker: keeps the workers busy while bounding finished, unread results."""

PARENT_POLL_S = 0.25
"""How often a worker checks that the process that started it is still alive (seconds)."""
PR_SET_PDEATHSIG = 1
"""Linux ``prctl`` option: a signal the kernel sends this process when its parent dies."""

R = TypeVar("R")


def resolve_workers(workers: int) -> int:
    """``0`` means every core this process may use."""
    if workers > 0:
        return workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def processes_for(n_paths: int, *, workers: int) -> int:
    """Worker processes :func:`ordered_map` starts for ``n_paths`` paths (1: it works in
    this process)."""
    return min(resolve_workers(workers), max(1, -(-n_paths // CHUNK)))


@contextlib.contextmanager
def cores_left(processes: int) -> Iterator[int]:
    """For the duration, torch's intra-op threads in this process are the cores that
    ``processes`` busy worker processes leave, at least one (yielded). Threads beyond the
    free cores do not add speed: they spin waiting for each other, many times slower than
    one thread (a batch of 64 one-second clips: 37 ms of features at one thread, 760 ms at
    two beside two busy processes on two cores)."""
    before = torch.get_num_threads()
    share = before if processes <= 1 else max(1, resolve_workers(0) - processes)
    torch.set_num_threads(min(before, share))
    try:
        yield min(before, share)
    finally:
        torch.set_num_threads(before)


def _worker_init(parent: int) -> None:
    """Set up a decoding worker started by process ``parent``.

    One intra-op thread (the processes are the parallelism); Ctrl+C ignored (the parent
    handles it and shuts the pool down); and the worker dies with its parent, so a parent
    killed with SIGKILL leaves no orphaned worker holding hundreds of MB.
    """
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)


def die_with_parent(parent: int) -> None:
    """End this process as soon as process ``parent`` (its parent) is gone.

    On Linux the kernel sends SIGKILL at the parent's death (``prctl(PR_SET_PDEATHSIG)``);
    everywhere, a daemon thread checks every ``PARENT_POLL_S`` seconds that the parent is
    still this process's parent (an orphan is re-parented) and exits if not.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="audiogate-parent-watch",
                     daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def ordered_map(fn: Callable[[Sequence[str]], list[R]], paths: Sequence[str], *,
                 workers: int, bar: tqdm) -> Iterator[R]:
    """``fn`` over chunks of ``paths`` in ``workers`` processes; results one per path, in
    order. At most ``IN_FLIGHT`` chunks per worker are pending at any time."""
    chunks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
    n_workers = processes_for(len(paths), workers=workers)
    if n_workers == 1:
        for chunk in chunks:
            yield from fn(chunk)
            bar.update(len(chunk))
        return
    with ProcessPoolExecutor(max_workers=n_workers, initializer=_worker_init,
                             initargs=(os.getpid(),)) as pool:
        pending: deque[Future[list[R]]] = deque()
        sent = 0
        try:
            while pending or sent < len(chunks):
                while sent < len(chunks) and len(pending) < IN_FLIGHT * n_workers:
                    pending.append(pool.submit(fn, chunks[sent]))
                    sent += 1
                done = pending.popleft().result()
                yield from done
                bar.update(len(done))
        except BaseException:  # Ctrl+C or a closed consumer: drop the queued work
            pool.shutdown(wait=True, cancel_futures=True)
            raise
