"""Fixtures for the local azurite (filled in by its part)."""
