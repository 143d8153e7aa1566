"""SAS authentication with the real SDK: refusals surface as CredentialError; renewal works."""

from __future__ import annotations

import time
from typing import Any

import pytest
from azure.iot.device import IoTHubDeviceClient, IoTHubModuleClient, Message
from azure.iot.device.exceptions import CredentialError
from enviromon_sim.iothub import sas
from enviromon_sim.iothub.hub import HubThread
from enviromon_sim.iothub.sas import generate_key

from tests.support.hub import sdk_client, wait_until


def _connect_expecting_credential_error(client: Any) -> None:
    try:
        with pytest.raises(CredentialError):
            client.connect()
    finally:
        client.shutdown()


def test_wrong_key_is_refused_with_credential_error(hub: HubThread, hub_device: Any) -> None:
    """Another key gets CONNACK 5, which the SDK raises as CredentialError."""
    dev = hub_device("pi-1")
    bad = (
        dev.connection_string.rsplit("SharedAccessKey=", 1)[0] + f"SharedAccessKey={generate_key()}"
    )
    client = IoTHubDeviceClient.create_from_connection_string(bad, **dev.client_kwargs())
    _connect_expecting_credential_error(client)
    assert hub.core.stats["refused_auth"] == 1
    assert hub.core.stats["connections"] == 0


def test_unknown_device_and_module_are_refused(hub: HubThread, hub_device: Any) -> None:
    """A device or module the registry does not know is refused."""
    dev = hub_device("pi-1")
    ghost = dev.connection_string.replace("DeviceId=pi-1", "DeviceId=pi-ghost")
    _connect_expecting_credential_error(
        IoTHubDeviceClient.create_from_connection_string(ghost, **dev.client_kwargs())
    )
    as_module = dev.connection_string.replace("DeviceId=pi-1;", "DeviceId=pi-1;ModuleId=nope;")
    _connect_expecting_credential_error(
        IoTHubModuleClient.create_from_connection_string(as_module, **dev.client_kwargs())
    )
    assert hub.core.stats["refused_auth"] == 2


def test_expired_token_is_refused(hub: HubThread, hub_device: Any) -> None:
    """A correctly signed but expired SAS token is refused."""
    dev = hub_device("pi-1")
    key = hub.hub.registry.get(dev.identity).key
    # The SDK itself refuses a token that is already expired, so give it one about to expire.
    expiry = int(time.time()) + 2
    token = sas.build_token("localhost/devices/pi-1", key, expiry)
    kwargs = dev.client_kwargs()
    client = IoTHubDeviceClient.create_from_sastoken(token, **kwargs)
    time.sleep(max(0.0, expiry + 0.2 - time.time()))
    _connect_expecting_credential_error(client)
    # The same token with a future expiry is accepted: the refusal was the expiry.
    good = IoTHubDeviceClient.create_from_sastoken(
        sas.build_token("localhost/devices/pi-1", key, int(time.time()) + 600), **kwargs
    )
    try:
        good.connect()
    finally:
        good.shutdown()
    assert hub.core.connects["pi-1"] == 1


def test_sas_renewal_reconnects_with_a_new_token(hub: HubThread, hub_device: Any) -> None:
    """sastoken_ttl=123: the SDK renews 120 s early (after ~3 s) by reconnecting, and works on."""
    dev = hub_device("pi-1")
    with sdk_client(dev, IoTHubDeviceClient, sastoken_ttl=123) as client:
        client.connect()
        first = hub.run(lambda: hub.core.sessions["pi-1"].connection.expiry)
        wait_until(lambda: hub.core.connects["pi-1"] >= 2, timeout=15)
        wait_until(lambda: hub.online(dev.identity), timeout=10)
        wait_until(lambda: client.connected, timeout=20)  # the SDK's own view
        second = hub.run(lambda: hub.core.sessions["pi-1"].connection.expiry)
        assert second > first
        client.send_message(Message("after renewal", message_id="r:1"))
        assert client.get_twin()["desired"] == {"$version": 1}
    events = hub.event_log.read_after(0)
    assert [e.body for e in events] == [b"after renewal"]
    assert hub.core.stats["refused_auth"] == 0
