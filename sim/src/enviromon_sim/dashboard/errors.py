"""Errors of the local dashboard server."""

from __future__ import annotations


class DashboardServerError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(DashboardServerError, ValueError):
    """A bad ``--api``, ``--hub`` or dashboard directory; the message says which."""
