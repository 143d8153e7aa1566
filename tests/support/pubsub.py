"""Fixtures for the local pubsub (filled in by its part)."""
