"""Fixtures for the local hub (filled in by its part)."""
