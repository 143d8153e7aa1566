"""Fixtures for the local hub: a running hub on free ports with a tmp state dir, and devices.

The SDK always dials port 8883 (azure/iot/device/common/mqtt_transport.py), so tests reach a
hub on a free port through the SDK's documented ``proxy_options``: the hub's HTTP CONNECT
listener tunnels every CONNECT straight into its MQTT/TLS service.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from enviromon_sim.iothub.hub import HubConfig, HubThread
from enviromon_sim.iothub.topics import METHODS_FILTER, Identity


@dataclass(frozen=True)
class HubDevice:
    """What a test needs to connect one device or module with the real SDK."""

    identity: Identity
    connection_string: str
    ca_pem: str
    proxy_port: int

    def client_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``create_from_connection_string`` (short retry interval)."""
        from azure.iot.device import ProxyOptions

        kwargs: dict[str, Any] = {
            "server_verification_cert": self.ca_pem,
            "proxy_options": ProxyOptions("HTTP", "127.0.0.1", self.proxy_port),  # type: ignore[no-untyped-call]
            "connection_retry_interval": 1,
            "keep_alive": 30,
        }
        kwargs.update(overrides)
        return kwargs


@contextmanager
def sdk_client(dev: HubDevice, client_class: Any, **overrides: Any) -> Iterator[Any]:
    """A real SDK client (sync device or module class) for ``dev``, shut down on exit.

    Not yet connected: set handlers first, then ``connect()``.
    """
    client = client_class.create_from_connection_string(
        dev.connection_string, **dev.client_kwargs(**overrides)
    )
    try:
        yield client
    finally:
        client.shutdown()


def start_hub(state_dir: Path, **config: Any) -> HubThread:
    """A hub on free ports (MQTT, HTTP CONNECT tunnel, admin) with state in ``state_dir``."""
    settings: dict[str, Any] = {"mqtt_port": 0, "proxy_port": 0, "admin_port": 0}
    settings.update(config)
    return HubThread(HubConfig(state_dir=state_dir, **settings)).start()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubThread]:
    """A running local hub with its state in a tmp dir; stopped after the test."""
    thread = start_hub(tmp_path / "hub")
    try:
        yield thread
    finally:
        thread.stop()
    assert thread.leftover_tasks == [], "the hub left tasks running after it stopped"


def make_device(hub: HubThread, name: str) -> HubDevice:
    """Register ``device`` or ``device/module`` on ``hub`` and return how to connect it."""
    identity = Identity.parse(name)
    hub.hub.add(identity)
    assert hub.proxy_port is not None
    return HubDevice(
        identity=identity,
        connection_string=hub.hub.connection_string(identity),
        ca_pem=hub.hub.tls.ca_pem(),
        proxy_port=hub.proxy_port,
    )


@pytest.fixture
def hub_device(hub: HubThread) -> Any:
    """A factory: ``hub_device("pi-1")`` or ``hub_device("pi-1/enviro_sensor")``."""

    def factory(name: str) -> HubDevice:
        return make_device(hub, name)

    return factory


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def wait_subscribed(
    hub: HubThread, identity: Identity, topic_filter: str = METHODS_FILTER, timeout: float = 10.0
) -> None:
    """Wait until the hub holds ``topic_filter`` in ``identity``'s session.

    The SDK subscribes when a handler is first set, after ``connect`` has returned.
    """

    def subscribed() -> bool:
        session = hub.core.sessions.get(identity.client_id)
        return session is not None and topic_filter in session.subscriptions

    wait_until(lambda: hub.run(subscribed), timeout=timeout)
