"""Edge-hub tests: the module's real entry point against the local hub, each under a bound."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from enviromon_sim.iothub.hub import HubThread

from tests.support.hub import start_hub

EDGE_HUB_TEST_TIMEOUT_S = 120
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every test here a timeout unless it sets its own."""
    for item in items:
        if _HERE in item.path.parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(EDGE_HUB_TEST_TIMEOUT_S))


@pytest.fixture
def edge_hub(tmp_path: Path) -> Iterator[tuple[HubThread, Path]]:
    """A local hub with the IoT Edge workload API stand-in for device ``pi-edge``.

    Yields the hub and the workload socket (under /tmp: unix socket paths are short).
    """
    sock_dir = Path(tempfile.mkdtemp(prefix="wl", dir="/tmp"))
    sock = sock_dir / "workload.sock"
    hub = start_hub(tmp_path / "hub", workload_socket=sock, workload_device_id="pi-edge")
    try:
        yield hub, sock
    finally:
        hub.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)
    assert hub.leftover_tasks == []
