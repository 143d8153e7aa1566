"""Errors of the sink: one root, and specific errors that also subclass a builtin."""

from __future__ import annotations


class SinkError(Exception):
    """Root of every error this package raises on purpose."""


class RejectedMessageError(SinkError, ValueError):
    """A message body cannot be accepted; it is dead-lettered with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientStoreError(SinkError, ConnectionError):
    """Table storage failed in a way a retry of the whole batch can fix (raise to the host)."""


class SettingsError(SinkError, ValueError):
    """A required setting is missing or malformed."""


class StoreContentionError(TransientStoreError):
    """A device's state kept changing under this worker (412 after 412) past the deadline.

    Raised so the host re-runs the whole batch; the replay then counts zero times again.
    """


class CorruptStateError(SinkError, ValueError):
    """A device's stored state entity cannot be read back (edited by hand, or another writer).

    Raised rather than overwritten: overwriting would silently lose the device's counts.
    """
