"""Errors of the edge module: one root, and specific errors that also subclass a builtin."""

from __future__ import annotations


class EnviroSensorError(Exception):
    """Root of every error this package raises on purpose."""


class SensorError(EnviroSensorError, OSError):
    """A sensor could not give a reading (I/O error, not ready within the bound, ...)."""


class SensorNotFoundError(SensorError, FileNotFoundError):
    """No sensor answered: no I2C bus, or no chip at any address tried."""


class I2CBusNotFoundError(SensorNotFoundError):
    """The I2C bus itself is missing or cannot be opened, so no chip could be probed."""


class ConfigError(EnviroSensorError, ValueError):
    """A configuration (environment, CLI or twin patch) was refused as a whole.

    Attributes:
        problems: each reason on its own (the message joins them), so a caller can gather the
            problems of several sources and report them all at once.
    """

    def __init__(self, message: str, *, problems: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems) or (message,)


class BufferStoreError(EnviroSensorError, OSError):
    """The on-disk reading buffer could not be opened, read or written."""


class HubError(EnviroSensorError, ConnectionError):
    """The hub could not be reached, or refused or failed a call (the reading stays buffered)."""


class HubTimeoutError(HubError, TimeoutError):
    """A hub call did not finish within its deadline."""
