"""Overlap batch preparation with the model step: one background thread, split cores.

While the main thread runs the network on batch ``k``, a background thread reads batch
``k + 1`` from the cache and computes its (augmented) features. PyTorch releases the GIL in
its kernels, so the two run on different cores. Each gets half the intra-op threads
(:func:`split_threads`), so neither waits on the other's thread team: on a 2-core machine
that is one thread each, which also keeps a busy machine from stalling the training loop.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Generator, Iterable, Iterator
from typing import TypeVar, cast

import torch

DEPTH = 2
"""Batches prepared ahead of the consumer."""
POLL_S = 0.1
"""How often a blocked producer checks whether the consumer has gone."""

T = TypeVar("T")


def prefetch(items: Iterable[T], *, depth: int = DEPTH) -> Generator[T, None, None]:
    """Iterate ``items`` in a background thread, up to ``depth`` ahead; yields them in order.

    The producer runs with gradients off. An exception in it is raised here. Closing the
    returned generator (``contextlib.closing``) stops the producer and waits for it.
    """
    box: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=depth)
    gone = threading.Event()

    def put(item: tuple[bool, object]) -> bool:
        while not gone.is_set():
            try:
                box.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            with torch.no_grad():
                for item in items:
                    if not put((True, item)):
                        return
            put((False, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            put((False, exc))

    thread = threading.Thread(target=produce, name="audiogate-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            more, item = box.get()
            if not more:
                if isinstance(item, BaseException):
                    raise item
                return
            yield cast(T, item)
    finally:
        gone.set()
        thread.join()


@contextlib.contextmanager
def split_threads() -> Iterator[int]:
    """Halve torch's intra-op threads (at least 1) for the duration; yields the new count."""
    before = torch.get_num_threads()
    share = max(1, before // 2)
    torch.set_num_threads(share)
    try:
        yield share
    finally:
        torch.set_num_threads(before)
