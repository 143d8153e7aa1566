"""The demo runner's errors: each carries a message meant for the person at the terminal."""

from __future__ import annotations


class DemoError(Exception):
    """The demo cannot start or keep running; ``str(exc)`` says why and what to do."""


class PortBusyError(DemoError):
    """A port the demo needs is taken by another process."""


class ServiceFailedError(DemoError):
    """A service exited or did not become ready in time."""
