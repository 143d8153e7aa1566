"""Operator-command tests: a per-test bound, since the sync device SDK takes no timeouts."""

from __future__ import annotations

from pathlib import Path

import pytest

OPS_TEST_TIMEOUT_S = 90
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every test in tests/ops a timeout unless it sets its own."""
    for item in items:
        if _HERE in item.path.parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(OPS_TEST_TIMEOUT_S))
