"""Where a live gate's samples come from: a microphone, a file, raw PCM on a pipe.

Each source is an iterable of blocks: float32 ``[shape=(m,)]`` or ``[shape=(m, channels)]``
at its :attr:`rate`, or ``None`` where the stream has a gap (a microphone lost and found
again), after which what was open must be decided afresh
(:meth:`~audiogate.deploy.listen.Listener.flush`).

* :class:`FileSource`: any file audiogate decodes, at real time (paced by a :class:`Clock`
  that tests replace) or as fast as it decodes;
* :class:`PcmSource`: raw PCM from a binary stream (stdin): ``s16le`` or ``f32le``,
  interleaved channels, a stated rate, so ``arecord``, ``sox`` or ``ffmpeg`` can be piped in;
* :class:`MicSource`: the system microphone through PortAudio (the ``sounddevice`` package of
  the ``live`` extra, imported when a microphone is used), with ``reconnect`` to wait for a
  device that was unplugged or is missing.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Iterator
from typing import IO, Any, Protocol

import numpy as np

from ..data.audio_io import stream_audio
from ..errors import AudiogateError, ConfigError

log = logging.getLogger(__name__)

BLOCK_S = 0.032
"""Seconds per block a source yields (a file, the microphone)."""
PCM_FORMATS = {"s16le": ("<i2", 32768.0), "f32le": ("<f4", 1.0)}
"""Raw sample formats: numpy dtype and the value of full scale."""
MAX_CHANNELS = 32
MIN_RATE, MAX_RATE = 1000, 384_000
RECONNECT_S = 2.0
"""Seconds between attempts to open a lost microphone again (``reconnect``)."""
INSTALL_LIVE = ("the microphone needs the 'live' extra: pip install 'audiogate[live]' (the "
                "sounddevice package), and the PortAudio library (Debian/Ubuntu: apt-get "
                "install libportaudio2)")

Block = np.ndarray | None
"""Samples, or None for a gap in the stream."""


class SourceError(AudiogateError):
    """A source that cannot deliver (no microphone, a device lost without ``reconnect``)."""


class Clock(Protocol):
    """Time for pacing: ``now()`` in seconds (monotonic) and ``sleep(seconds)``."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class RealClock:
    """The machine's monotonic clock."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _check_rate(rate: int, what: str) -> None:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise ConfigError(f"{what} must be in {MIN_RATE}-{MAX_RATE} Hz, got {rate}")


class FileSource:
    """A file decoded block by block at ``rate`` (mono), at real time unless ``realtime`` is
    False: block ``i`` is yielded no earlier than its start time after the first block."""

    def __init__(self, path: str | os.PathLike[str], *, rate: int, realtime: bool = True,
                 clock: Clock | None = None, block_s: float = BLOCK_S) -> None:
        _check_rate(rate, "the file source's rate")
        self.path, self.rate, self.realtime = path, rate, realtime
        self.clock = clock or RealClock()
        self.block = max(1, round(block_s * rate))
        self.name = str(path)

    def __iter__(self) -> Iterator[Block]:
        began, sent = self.clock.now(), 0
        pending = np.zeros(0, np.float32)
        for piece in stream_audio(self.path, sr=self.rate):
            pending = np.concatenate([pending, piece])
            while pending.size >= self.block:
                block, pending = pending[:self.block], pending[self.block:]
                self._pace(began, sent)
                sent += block.size
                yield block
        if pending.size:
            self._pace(began, sent)
            yield pending

    def _pace(self, began: float, sent: int) -> None:
        if self.realtime:
            wait = began + sent / self.rate - self.clock.now()
            if wait > 0:
                self.clock.sleep(wait)


class PcmSource:
    """Raw interleaved PCM from a binary stream (``fmt``: ``s16le`` or ``f32le``) at ``rate``
    with ``channels``; ends at the stream's end (an incomplete last frame is dropped)."""

    def __init__(self, stream: IO[bytes], *, fmt: str, rate: int, channels: int,
                 block_s: float = BLOCK_S) -> None:
        if fmt not in PCM_FORMATS:
            raise ConfigError(f"raw PCM format must be one of {', '.join(PCM_FORMATS)}, got "
                              f"{fmt!r}")
        _check_rate(rate, "--rate")
        if not 1 <= channels <= MAX_CHANNELS:
            raise ConfigError(f"--channels must be in 1-{MAX_CHANNELS}, got {channels}")
        self.stream, self.rate, self.channels = stream, rate, channels
        self.dtype, self.scale = PCM_FORMATS[fmt]
        self.frame_bytes = np.dtype(self.dtype).itemsize * channels
        self.block_bytes = max(1, round(block_s * rate)) * self.frame_bytes
        self.name = "<stdin>"

    def __iter__(self) -> Iterator[Block]:
        pending = b""
        read = getattr(self.stream, "read1", self.stream.read)
        while True:
            data = read(self.block_bytes)
            if not data:
                break
            pending += data
            whole = len(pending) - len(pending) % self.frame_bytes
            if whole:
                raw, pending = pending[:whole], pending[whole:]
                samples = np.frombuffer(raw, dtype=self.dtype).astype(np.float32) / self.scale
                yield samples.reshape(-1, self.channels)
        if pending:
            log.warning("raw PCM ended inside a frame: %d trailing byte(s) dropped",
                        len(pending))


def sounddevice_module() -> Any:
    """The ``sounddevice`` module, or :class:`SourceError` saying what to install (it is
    missing, or PortAudio is)."""
    try:
        return importlib.import_module("sounddevice")
    except ImportError:
        raise SourceError(INSTALL_LIVE) from None
    except OSError as exc:  # sounddevice is there, libportaudio is not
        raise SourceError(f"{INSTALL_LIVE} ({exc})") from None


def list_devices(sd: Any | None = None) -> list[dict[str, Any]]:
    """The input devices PortAudio sees: index, name, input channels, default rate, and
    whether it is the default input."""
    sd = sd or sounddevice_module()
    try:
        devices = list(sd.query_devices())
        default = sd.default.device[0] if sd.default.device else -1
    except sd.PortAudioError as exc:
        raise SourceError(f"PortAudio cannot list the audio devices: {exc}") from None
    return [{"index": i, "name": d["name"], "channels": d["max_input_channels"],
             "rate": d["default_samplerate"], "default": i == default}
            for i, d in enumerate(devices) if d["max_input_channels"] > 0]


def _device(text: str | None) -> int | str | None:
    """``--device``: an index or (part of) a name; None: the default input."""
    if text is None or text == "":
        return None
    return int(text) if text.isdigit() else text


class MicSource:
    """The microphone (PortAudio through ``sounddevice``; ``sd`` replaces the module in tests).

    ``device``: an index or part of a name (None: the default input); ``rate``: None for the
    device's own. A device that cannot be opened, or that fails mid-stream (unplugged), is a
    :class:`SourceError` with what to do, unless ``reconnect``: then it is tried again every
    ``reconnect_s`` seconds (``clock``), and a ``None`` block marks the gap.
    """

    def __init__(self, *, device: str | None = None, rate: int | None = None,
                 channels: int = 1, reconnect: bool = False, sd: Any | None = None,
                 clock: Clock | None = None, block_s: float = BLOCK_S,
                 reconnect_s: float = RECONNECT_S) -> None:
        if not 1 <= channels <= MAX_CHANNELS:
            raise ConfigError(f"--channels must be in 1-{MAX_CHANNELS}, got {channels}")
        self.sd = sd or sounddevice_module()
        self.device, self.channels, self.reconnect = _device(device), channels, reconnect
        self.clock, self.block_s, self.reconnect_s = clock or RealClock(), block_s, reconnect_s
        self.rate = rate or self._default_rate()
        _check_rate(self.rate, "the microphone's rate")
        self.name = f"microphone {device}" if device else "microphone"

    def _default_rate(self) -> int:
        try:
            info = self.sd.query_devices(self.device, "input")
        except (self.sd.PortAudioError, ValueError) as exc:
            raise SourceError(self._no_device(exc)) from None
        return int(info["default_samplerate"])

    def _no_device(self, exc: BaseException) -> str:
        which = "no default input device" if self.device is None else \
            f"no input device {self.device!r}"
        return (f"no microphone: {which} ({exc}). List the devices with --list-devices and "
                "choose one with --device, or listen to a file or stdin with --input")

    def _open(self) -> Any:
        stream = self.sd.InputStream(samplerate=self.rate, channels=self.channels,
                                     dtype="float32", device=self.device,
                                     blocksize=max(1, round(self.block_s * self.rate)))
        stream.start()
        return stream

    def __iter__(self) -> Iterator[Block]:
        block = max(1, round(self.block_s * self.rate))
        lost = False
        while True:
            try:
                stream = self._open()
            except (self.sd.PortAudioError, ValueError) as exc:
                if not self.reconnect:
                    raise SourceError(self._no_device(exc) + " (or pass --reconnect to wait "
                                      "for it)") from None
                if not lost:
                    log.warning("%s unavailable (%s); trying again every %g s", self.name,
                                exc, self.reconnect_s)
                    lost = True
                self.clock.sleep(self.reconnect_s)
                continue
            if lost:
                log.warning("%s is back", self.name)
                lost = False
            try:
                yield from self._read(stream, block)
            except self.sd.PortAudioError as exc:
                if not self.reconnect:
                    raise SourceError(f"{self.name} lost mid-stream ({exc}): what was heard "
                                      "until then is decided; pass --reconnect to wait for "
                                      "it to come back") from None
                log.warning("%s lost mid-stream (%s); what was open is decided, trying "
                            "again every %g s", self.name, exc, self.reconnect_s)
                lost = True
                yield None
            finally:
                _close_quietly(stream, self.sd.PortAudioError)

    def _read(self, stream: Any, block: int) -> Iterator[np.ndarray]:
        while True:
            data, overflowed = stream.read(block)
            if overflowed:
                log.warning("%s: samples lost (input overflow): the listener fell behind "
                            "real time", self.name)
            yield np.asarray(data, np.float32).copy()


def _close_quietly(stream: Any, error: type[BaseException]) -> None:
    try:
        stream.close()
    except error as exc:  # a device already gone
        log.debug("closing the input stream: %s", exc)


def open_source(spec: str, *, gate_rate: int, realtime: bool = True, fmt: str = "s16le",
                rate: int | None = None, channels: int | None = None,
                device: str | None = None, reconnect: bool = False,
                stdin: IO[bytes] | None = None) -> FileSource | PcmSource | MicSource:
    """The source ``--input`` names: ``mic``, ``-`` (raw PCM on stdin: ``fmt``, ``rate``,
    ``channels``) or a file (decoded at ``gate_rate``, at real time unless ``realtime`` is
    False). Flags that do not apply to it are refused."""
    if device is not None and spec != "mic":
        raise ConfigError("--device chooses a microphone: use it with --input mic")
    if spec == "mic":
        return MicSource(device=device, rate=rate, channels=channels or 1,
                         reconnect=reconnect)
    if reconnect:
        raise ConfigError("--reconnect waits for a lost microphone: use it with --input mic")
    if spec == "-":
        if rate is None:
            raise ConfigError("raw PCM on stdin needs its rate: --rate N (and --format, "
                              "--channels if not s16le mono)")
        import sys

        return PcmSource(stdin or sys.stdin.buffer, fmt=fmt, rate=rate, channels=channels or 1)
    if rate is not None or channels is not None:
        raise ConfigError("--rate and --channels describe a microphone or raw PCM on stdin; "
                          "a file says its own")
    if not os.path.isfile(spec):
        raise ConfigError(f"--input {spec!r}: no such file (use 'mic', '-' for stdin, or an "
                          "audio file)")
    return FileSource(spec, rate=gate_rate, realtime=realtime)
