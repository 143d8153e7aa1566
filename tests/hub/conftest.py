"""Hub tests: a tighter per-test bound than the suite's 300 s.

The sync SDK's ``connect``, ``send_message`` and ``get_twin`` take no timeout; this bound makes
a hung call fail its test within a minute instead of holding CI.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HUB_TEST_TIMEOUT_S = 60
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every test in tests/hub a timeout unless it sets its own."""
    for item in items:
        if _HERE in item.path.parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(HUB_TEST_TIMEOUT_S))
