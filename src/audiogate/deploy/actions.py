"""What a live gate does with its events, without ever holding up the listening.

* :class:`Printer`: one JSON line (``--json``) or one line for people per event, on stdout.
* :class:`CommandAction`: runs a command per event of one decision (``--on-allowed``,
  ``--on-rejected``): no shell, the event's fields in environment variables
  (:func:`event_env`), one at a time in a worker thread from a bounded queue; a command that
  fails, cannot start or outlives ``timeout_s`` is logged, and an event that finds the queue
  full is dropped with a warning. Its output goes to stderr, so stdout stays the events.
* :class:`Webhook`: POSTs each event as JSON to a URL from a bounded queue in a worker
  thread, retrying a failed delivery ``retries`` times with doubling waits.

Every action is called with an :class:`~audiogate.deploy.listen.Event` and returns at once;
:meth:`close` waits (a bounded time) for what is queued.
"""

from __future__ import annotations

import logging
import os
import queue
import shlex
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from ..errors import ConfigError
from ..files import to_json
from .listen import Event

log = logging.getLogger(__name__)

QUEUE_SIZE = 32
"""Events an action holds while its worker is busy; more are dropped (with a warning)."""
COMMAND_TIMEOUT_S = 60.0
"""A command still running after this long is killed (and logged)."""
WEBHOOK_TIMEOUT_S = 5.0
WEBHOOK_RETRIES = 3
WEBHOOK_BACKOFF_S = 0.5
"""Wait before the first retry; doubled before each next one."""
CLOSE_WAIT_S = 10.0
"""How long :meth:`close` waits for queued work before leaving it."""
ENV_PREFIX = "AUDIOGATE_"


def event_env(event: Event) -> dict[str, str]:
    """The event's fields as environment variables: ``AUDIOGATE_EVENT`` (allowed/rejected),
    ``AUDIOGATE_LABEL``, ``AUDIOGATE_START``, ``AUDIOGATE_END``, ``AUDIOGATE_SCORE``,
    ``AUDIOGATE_THRESHOLD``, ``AUDIOGATE_LATENCY_MS``, ``AUDIOGATE_N_WINDOWS``,
    ``AUDIOGATE_SEQ``, ``AUDIOGATE_TIME`` and ``AUDIOGATE_JSON`` (all of it)."""
    fields = event.as_dict()
    env = {ENV_PREFIX + key.upper(): str(value) for key, value in fields.items()}
    env[ENV_PREFIX + "JSON"] = to_json(fields, indent=None)
    return env


class Printer:
    """Events to ``out`` (default stdout), flushed line by line."""

    def __init__(self, *, as_json: bool, out: IO[str] | None = None) -> None:
        self.as_json, self.out = as_json, out

    def __call__(self, event: Event) -> None:
        out = self.out or sys.stdout
        out.write((to_json(event.as_dict(), indent=None) if self.as_json else event.line())
                  + "\n")
        out.flush()

    def close(self) -> None:
        pass


class _Worker:
    """A bounded queue of events and one daemon thread that handles them in order."""

    name = "action"

    def __init__(self, *, queue_size: int) -> None:
        if queue_size < 1:
            raise ConfigError(f"an action's queue holds at least 1 event, got {queue_size}")
        self.queue: queue.Queue[Event | None] = queue.Queue(maxsize=queue_size)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"audiogate-{self.name}",
                                       daemon=True)
        self.thread.start()

    def __call__(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            log.warning("%s: event %d dropped: %d events are still waiting", self.describe(),
                        event.seq, self.queue.maxsize)

    def _run(self) -> None:
        while (event := self.queue.get()) is not None:
            try:
                self.handle(event)
            except Exception:  # a worker must outlive any one event; the error is logged
                log.exception("%s failed on event %d", self.describe(), event.seq)
            finally:
                self.queue.task_done()
        self.queue.task_done()

    def handle(self, event: Event) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Let the worker finish what is queued, for at most ``wait_s`` seconds."""
        self.stopping.set()
        try:
            self.queue.put(None, timeout=wait_s)
        except queue.Full:
            log.warning("%s: queued events left undone", self.describe())
            return
        self.thread.join(wait_s)
        if self.thread.is_alive():
            log.warning("%s: still busy after %g s; left running", self.describe(), wait_s)


class CommandAction(_Worker):
    """Runs ``command`` (a string split like a shell would, but run without one, or a list)
    for every event whose decision is ``on``. ``run`` replaces :func:`subprocess.run` in
    tests."""

    name = "command"

    def __init__(self, command: str | Sequence[str], *, on: str,
                 timeout_s: float = COMMAND_TIMEOUT_S, queue_size: int = QUEUE_SIZE,
                 run: Callable[..., Any] = subprocess.run,
                 env: Mapping[str, str] | None = None) -> None:
        self.argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not self.argv:
            raise ConfigError(f"--on-{on} needs a command")
        self.on, self.timeout_s, self.run = on, timeout_s, run
        self.base_env = dict(os.environ if env is None else env)
        super().__init__(queue_size=queue_size)

    def describe(self) -> str:
        return f"--on-{self.on} {shlex.join(self.argv)[:80]}"

    def __call__(self, event: Event) -> None:
        if event.decision == self.on:
            super().__call__(event)

    def handle(self, event: Event) -> None:
        try:
            done = self.run(self.argv, env={**self.base_env, **event_env(event)},
                            stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno(),
                            timeout=self.timeout_s, check=False)
        except FileNotFoundError:
            log.error("%s: command not found: %s", self.describe(), self.argv[0])
        except PermissionError:
            log.error("%s: not executable: %s", self.describe(), self.argv[0])
        except subprocess.TimeoutExpired:
            log.error("%s: killed after %g s (event %d)", self.describe(), self.timeout_s,
                      event.seq)
        else:
            if done.returncode != 0:
                log.warning("%s: exited with status %d (event %d)", self.describe(),
                            done.returncode, event.seq)


def post_json(url: str, body: bytes, *, timeout: float) -> int:
    """POST ``body`` (JSON) to ``url``; the HTTP status (an error status raises
    :class:`urllib.error.HTTPError`)."""
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "audiogate-listen"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return int(response.status)


class Webhook(_Worker):
    """POSTs every event as JSON to ``url`` (http or https), with ``retries`` more attempts
    after a failure, waiting ``backoff_s``, then twice that, ... between them. ``post`` and
    ``sleep`` replace the HTTP call and the wait in tests."""

    name = "webhook"

    def __init__(self, url: str, *, retries: int = WEBHOOK_RETRIES,
                 backoff_s: float = WEBHOOK_BACKOFF_S, timeout_s: float = WEBHOOK_TIMEOUT_S,
                 queue_size: int = QUEUE_SIZE, post: Callable[..., int] = post_json,
                 sleep: Callable[[float], Any] | None = None) -> None:
        if not url.lower().startswith(("http://", "https://")):
            raise ConfigError(f"--webhook must be an http:// or https:// URL, got {url!r}")
        if retries < 0:
            raise ConfigError(f"webhook retries must be >= 0, got {retries}")
        self.url, self.retries, self.backoff_s, self.timeout_s = url, retries, backoff_s, \
            timeout_s
        self.post = post
        self.sleep = sleep or self._wait
        super().__init__(queue_size=queue_size)

    def _wait(self, seconds: float) -> None:
        """Sleep, but not past :meth:`close` (then the remaining retries go at once)."""
        self.stopping.wait(seconds)

    def describe(self) -> str:
        return f"webhook {self.url[:80]}"

    def handle(self, event: Event) -> None:
        body = to_json(event.as_dict(), indent=None).encode("utf-8")
        wait = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                self.post(self.url, body, timeout=self.timeout_s)
                return
            except (urllib.error.URLError, OSError, ValueError) as exc:
                problem = exc
            if attempt < self.retries:
                log.debug("%s: attempt %d failed (%s); again in %g s", self.describe(),
                          attempt + 1, problem, wait)
                self.sleep(wait)
                wait *= 2
        log.error("%s: event %d not delivered after %d attempt(s): %s", self.describe(),
                  event.seq, self.retries + 1, problem)
