"""Twins and direct methods through the real SDK, each identity kept to its own."""

from __future__ import annotations

import asyncio
import queue
from typing import Any

import pytest
from azure.iot.device import IoTHubDeviceClient, IoTHubModuleClient, MethodResponse
from azure.iot.device.aio import IoTHubDeviceClient as AsyncDeviceClient
from azure.iot.device.exceptions import ClientError
from enviromon_sim.iothub.errors import DeviceNotConnectedError, MethodTimeoutError
from enviromon_sim.iothub.hub import HubThread

from tests.support.hub import sdk_client, wait_subscribed


def test_twin_get_reported_and_desired_patch_sync_module(hub: HubThread, hub_device: Any) -> None:
    """get_twin, a reported patch ($version bumps) and a pushed desired patch, sync module."""
    dev = hub_device("pi-1/enviro_sensor")
    ident = dev.identity
    hub.patch_desired(ident, {"telemetryInterval": 10})
    patches: queue.Queue[dict[str, Any]] = queue.Queue()
    with sdk_client(dev, IoTHubModuleClient) as client:
        client.on_twin_desired_properties_patch_received = patches.put
        client.connect()
        twin = client.get_twin()
        assert twin["desired"] == {"telemetryInterval": 10, "$version": 2}
        assert twin["reported"] == {"$version": 1}
        client.patch_twin_reported_properties({"sensor": {"kind": "simulated"}, "buffer": 3})
        client.patch_twin_reported_properties({"buffer": None})  # null deletes
        assert client.get_twin()["reported"] == {"sensor": {"kind": "simulated"}, "$version": 3}
        hub.patch_desired(ident, {"alerts": {"temperatureHigh": 31.5}})
        patch = patches.get(timeout=10)
        assert patch == {"alerts": {"temperatureHigh": 31.5}, "$version": 3}
    service = hub.get_twin(ident)
    assert service["properties"]["desired"]["alerts"] == {"temperatureHigh": 31.5}
    assert service["properties"]["reported"]["sensor"] == {"kind": "simulated"}


def test_invalid_reported_patch_is_refused_and_twin_unchanged(
    hub: HubThread, hub_device: Any
) -> None:
    """A reported patch with a '$' key is refused as a whole; the twin keeps its version."""
    dev = hub_device("pi-1")
    with sdk_client(dev, IoTHubDeviceClient) as client:
        client.connect()
        with pytest.raises(ClientError) as info:
            client.patch_twin_reported_properties({"ok": 1, "bad$key": 2})
        causes = []
        err: BaseException | None = info.value
        while err is not None:
            causes.append(repr(err))
            err = err.__cause__
        assert any("400" in c for c in causes), causes
        assert client.get_twin()["reported"] == {"$version": 1}


def test_method_call_and_answer_async_device(hub: HubThread, hub_device: Any) -> None:
    """The hub invokes a method on an async device client and gets its status and payload."""
    dev = hub_device("pi-1")
    seen: list[tuple[str, Any]] = []

    async def run() -> tuple[int, Any]:
        client = AsyncDeviceClient.create_from_connection_string(
            dev.connection_string, **dev.client_kwargs()
        )

        async def handler(request: Any) -> None:
            seen.append((request.name, request.payload))
            await client.send_method_response(
                MethodResponse.create_from_method_request(
                    request, 200, {"blinked": request.payload["seconds"]}
                )
            )

        try:
            client.on_method_request_received = handler
            await asyncio.wait_for(client.connect(), 20)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, wait_subscribed, hub, dev.identity)
            return await loop.run_in_executor(
                None, hub.invoke, dev.identity, "identify", {"seconds": 5}, 5.0
            )
        finally:
            await client.shutdown()

    status, payload = asyncio.run(run())
    assert (status, payload) == (200, {"blinked": 5})
    assert seen == [("identify", {"seconds": 5})]


def test_method_timeout_and_offline_device(hub: HubThread, hub_device: Any) -> None:
    """No answer within the timeout is a MethodTimeoutError; an offline device is not connected."""
    dev = hub_device("pi-1")
    with pytest.raises(DeviceNotConnectedError):
        hub.invoke(dev.identity, "identify", {}, 1.0)
    requests: queue.Queue[Any] = queue.Queue()
    with sdk_client(dev, IoTHubDeviceClient) as client:
        client.on_method_request_received = requests.put  # never answers
        client.connect()
        wait_subscribed(hub, dev.identity)
        with pytest.raises(MethodTimeoutError):
            hub.invoke(dev.identity, "readNow", None, 0.5)
        assert requests.get(timeout=5).name == "readNow"


def test_two_devices_see_only_their_own_twin_and_methods(hub: HubThread, hub_device: Any) -> None:
    """Twin patches and method calls for one device never reach the other."""
    a, b = hub_device("pi-a"), hub_device("pi-b")
    got: dict[str, queue.Queue[Any]] = {"pi-a": queue.Queue(), "pi-b": queue.Queue()}
    clients: list[Any] = []
    try:
        for dev in (a, b):
            c = IoTHubDeviceClient.create_from_connection_string(
                dev.connection_string, **dev.client_kwargs()
            )
            clients.append(c)
            name = dev.identity.device_id

            def on_patch(patch: Any, name: str = name) -> None:
                got[name].put(("patch", patch))

            def on_method(req: Any, name: str = name, client: Any = c) -> None:
                got[name].put(("method", req.name))
                client.send_method_response(
                    MethodResponse.create_from_method_request(req, 200, name)
                )

            c.on_twin_desired_properties_patch_received = on_patch
            c.on_method_request_received = on_method
            c.connect()
            c.patch_twin_reported_properties({"me": name})
        wait_subscribed(hub, a.identity)
        wait_subscribed(hub, b.identity)
        hub.patch_desired(a.identity, {"only": "a"})
        assert hub.invoke(b.identity, "whoami", None, 5.0) == (200, "pi-b")
        assert got["pi-a"].get(timeout=5) == ("patch", {"only": "a", "$version": 2})
        assert got["pi-b"].get(timeout=5) == ("method", "whoami")
        assert clients[0].get_twin()["reported"]["me"] == "pi-a"
        assert clients[1].get_twin() == {
            "desired": {"$version": 1},
            "reported": {"me": "pi-b", "$version": 2},
        }
        # Checked after a further round trip each, so a stray delivery has had time to land.
        assert got["pi-a"].empty() and got["pi-b"].empty()
    finally:
        for c in clients:
            c.shutdown()
