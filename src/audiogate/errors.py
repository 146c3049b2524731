"""Exception types raised by audiogate.

Every error a user can cause derives from :class:`AudiogateError`, so the CLI can print its
message and exit without a traceback, while genuine bugs still surface as tracebacks.
"""

from __future__ import annotations


class AudiogateError(Exception):
    """Base class for all errors a user can act on."""


class ConfigError(AudiogateError, ValueError):
    """A configuration value is invalid; the message names the field."""


class AudioError(AudiogateError):
    """One audio file cannot be used (unreadable, empty, corrupt, too short, non-finite)."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class DataError(AudiogateError):
    """The data set as a whole cannot be used (missing classes, too few files to split)."""


class CheckpointError(AudiogateError):
    """A checkpoint is missing, corrupt, unsafe or incompatible with the requested use."""
