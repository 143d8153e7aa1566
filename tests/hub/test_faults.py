"""Fault injection with the real SDK: restart with state kept, dropped and refused
connections, held PUBACKs. Nothing is lost; replays show up as duplicates, never as gaps."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from typing import Any

import pytest
from azure.iot.device import IoTHubDeviceClient, IoTHubModuleClient, Message, MethodResponse
from azure.iot.device.aio import IoTHubDeviceClient as AsyncDeviceClient
from azure.iot.device.exceptions import (
    ConnectionDroppedError,
    NoConnectionError,
    OperationCancelled,
)
from enviromon_sim.iothub.errors import DeviceNotConnectedError
from enviromon_sim.iothub.hub import HubThread
from enviromon_sim.iothub.topics import METHODS_FILTER, TWIN_DESIRED_FILTER

from tests.support.hub import sdk_client, wait_subscribed, wait_until


def _ids(hub: HubThread) -> list[str]:
    return [e.system_properties["message-id"] for e in hub.event_log.read_after(0, max_events=1000)]


async def _send_retrying(client: Any, msg: Message, limit: float = 30.0) -> None:
    """Send, retrying while the SDK reconnects: it does not queue, and fails a send at once
    while disconnected (issues #441, #972), as the edge module's own buffer expects."""
    deadline = asyncio.get_running_loop().time() + limit
    while True:
        try:
            await asyncio.wait_for(client.send_message(msg), limit)
            return
        except (NoConnectionError, ConnectionDroppedError, OperationCancelled):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


def _first_patch_with(patches: queue.Queue[Any], key: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        patch = patches.get(timeout=max(0.0, deadline - time.monotonic()))
        if key in patch:
            return patch


def test_restart_with_state_kept_subscriptions_survive(hub: HubThread, hub_device: Any) -> None:
    """After a full hub restart the SDK reconnects without re-subscribing, and desired
    patches, method calls and telemetry still work; twins and the event log are kept."""
    dev = hub_device("pi-1/enviro_sensor")
    patches: queue.Queue[Any] = queue.Queue()
    with sdk_client(dev, IoTHubModuleClient) as client:

        def on_method(req: Any) -> None:
            client.send_method_response(
                MethodResponse.create_from_method_request(req, 200, {"ok": True})
            )

        client.on_twin_desired_properties_patch_received = patches.put
        client.on_method_request_received = on_method
        client.connect()
        client.patch_twin_reported_properties({"health": "ok"})
        client.send_message_to_output(Message("before", message_id="m:1"), "telemetry")
        wait_subscribed(hub, dev.identity, TWIN_DESIRED_FILTER)
        wait_subscribed(hub, dev.identity, METHODS_FILTER)
        assert hub.core.connects["pi-1/enviro_sensor"] == 1

        hub.restart(down_seconds=1.0)

        wait_until(lambda: hub.online(dev.identity), timeout=20)
        wait_until(lambda: client.connected, timeout=20)  # the SDK's own view
        assert hub.core.connects["pi-1/enviro_sensor"] == 1  # a new hub object counts afresh
        hub.patch_desired(dev.identity, {"telemetryInterval": 3})
        # After a reconnect the SDK GETs the twin and may hand up a synthetic patch of what it
        # finds ({"$version": 1} if that GET beats ours): take the first with the new setting.
        patch = _first_patch_with(patches, "telemetryInterval", timeout=10)
        assert patch == {"telemetryInterval": 3, "$version": 2}
        assert hub.invoke(dev.identity, "readNow", None, 5.0) == (200, {"ok": True})
        client.send_message_to_output(Message("after", message_id="m:2"), "telemetry")
        assert client.get_twin()["reported"] == {"health": "ok", "$version": 2}
    # Each send returned on its PUBACK, which the hub sends only once the event is stored.
    assert _ids(hub) == ["m:1", "m:2"]


def test_dropped_connections_lose_nothing(hub: HubThread, hub_device: Any) -> None:
    """Dropping every connection mid-stream: the SDK reconnects and every message arrives."""
    dev = hub_device("pi-1")

    async def run() -> None:
        client = AsyncDeviceClient.create_from_connection_string(
            dev.connection_string, **dev.client_kwargs()
        )
        try:
            await asyncio.wait_for(client.connect(), 20)
            for seq in range(1, 31):
                if seq == 11:
                    await asyncio.get_running_loop().run_in_executor(None, hub.drop_connections)
                await _send_retrying(client, Message(str(seq), message_id=f"d:{seq}"))
        finally:
            await client.shutdown()

    asyncio.run(run())
    ids = _ids(hub)
    assert set(ids) == {f"d:{s}" for s in range(1, 31)}
    assert hub.core.stats["dropped_by_fault"] == 1
    assert hub.core.connects["pi-1"] >= 2


def test_refused_connections_are_retried(hub: HubThread, hub_device: Any) -> None:
    """While the hub refuses (CONNACK 3: server unavailable) the SDK retries, then gets in."""
    dev = hub_device("pi-1")
    with sdk_client(dev, IoTHubDeviceClient) as client:
        client.connect()
        hub.refuse_connections(2.5)
        hub.drop_connections()
        wait_until(lambda: hub.core.stats["refused_by_fault"] >= 1, timeout=10)
        wait_until(lambda: hub.online(dev.identity), timeout=20)
        wait_until(lambda: client.connected, timeout=20)  # the SDK's own view
        client.send_message(Message("back", message_id="r:1"))
    assert _ids(hub) == ["r:1"]


def test_held_pubacks_then_drop_replays_as_duplicate(hub: HubThread, hub_device: Any) -> None:
    """With PUBACKs held, send_message does not complete though the event is stored; after a
    drop the SDK re-sends it (DUP), so the log holds it twice: at-least-once, never lost."""
    dev = hub_device("pi-1")
    client = IoTHubDeviceClient.create_from_connection_string(
        dev.connection_string, **dev.client_kwargs()
    )
    done = threading.Event()
    errors: list[BaseException] = []

    def send() -> None:
        try:
            client.send_message(Message(json.dumps({"seq": 1}), message_id="h:1"))
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)
        finally:
            done.set()

    try:
        client.connect()
        hub.hold_pubacks(True)
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        wait_until(lambda: _ids(hub) == ["h:1"], timeout=10)
        assert not done.wait(1.0), "send_message completed without a PUBACK"
        hub.drop_connections()
        wait_until(lambda: _ids(hub) == ["h:1", "h:1"], timeout=20)
        hub.hold_pubacks(False)
        assert done.wait(20), "send_message never completed after PUBACKs resumed"
        sender.join(5)
        assert errors == []
    finally:
        client.shutdown()
    events = hub.event_log.read_after(0)
    assert [json.loads(e.body) for e in events] == [{"seq": 1}, {"seq": 1}]


def test_a_hub_that_forgets_sessions_loses_the_sdk_subscriptions(
    hub: HubThread, hub_device: Any
) -> None:
    """Control for the restart test: without the persisted session the reconnected SDK does not
    subscribe again, so method calls cannot reach it (why the hub keeps sessions on disk)."""
    dev = hub_device("pi-1")
    with sdk_client(dev, IoTHubDeviceClient) as client:
        client.on_method_request_received = lambda req: None
        client.connect()
        wait_subscribed(hub, dev.identity)
        hub.restart(down_seconds=0.5, forget_sessions=True)
        wait_until(lambda: hub.online(dev.identity), timeout=20)
        wait_until(lambda: client.connected, timeout=20)  # the SDK's own view
        client.send_message(Message("still sends", message_id="f:1"))
        assert hub.run(lambda: dict(hub.core.sessions["pi-1"].subscriptions)) == {}
        with pytest.raises(DeviceNotConnectedError):
            hub.invoke(dev.identity, "identify", None, 1.0)
    assert _ids(hub) == ["f:1"]
