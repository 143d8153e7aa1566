"""Errors of the operator's commands; the CLI prints each as one line."""

from __future__ import annotations


class OpsError(Exception):
    """Root of every error the operator's commands raise on purpose."""


class NotFoundError(OpsError, LookupError):
    """No such device, module or reading."""


class WaitTimeoutError(OpsError, TimeoutError):
    """A command that waits gave up after its timeout."""


class ConfigurationError(OpsError, ValueError):
    """A missing or malformed option, environment variable or connection string."""
