"""Telemetry from the real azure-iot-device SDK (sync and async) into the event log."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from azure.iot.device import IoTHubDeviceClient, IoTHubModuleClient, Message
from azure.iot.device.aio import IoTHubModuleClient as AsyncModuleClient
from enviromon_sim.iothub.hub import HubThread

from tests.support.hub import sdk_client, wait_until


def _message(body: dict[str, Any], mid: str) -> Message:
    msg = Message(
        json.dumps(body), message_id=mid, content_type="application/json", content_encoding="utf-8"
    )
    msg.custom_properties["temperatureAlert"] = "false"
    msg.custom_properties["source"] = "simulated"
    return msg


def test_device_telemetry_lands_in_event_log_with_system_properties(
    hub: HubThread, hub_device: Any
) -> None:
    """A sync device client's message is stored with hub-set system properties and its own."""
    dev = hub_device("pi-1")
    with sdk_client(dev, IoTHubDeviceClient) as client:
        client.connect()
        client.send_message(_message({"seq": 1, "temperature": 21.4}, "boot:1"))
    events = wait_until(lambda: hub.event_log.read_after(0), timeout=5)
    assert len(events) == 1
    ev = events[0]
    assert json.loads(ev.body) == {"seq": 1, "temperature": 21.4}
    sp = ev.system_properties
    assert sp["iothub-connection-device-id"] == "pi-1"
    assert "iothub-connection-module-id" not in sp
    assert sp["message-id"] == "boot:1"
    assert sp["content-type"] == "application/json"
    assert sp["content-encoding"] == "utf-8"
    assert json.loads(sp["iothub-connection-auth-method"])["type"] == "sas"
    assert sp["iothub-enqueuedtime"].startswith(str(ev.enqueued_time.year))
    assert ev.properties == {"temperatureAlert": "false", "source": "simulated"}


def test_property_values_with_reserved_characters_round_trip(
    hub: HubThread, hub_device: Any
) -> None:
    """URL-encoded property names and values ('&', '=', '/', spaces, unicode) arrive intact."""
    dev = hub_device("pi-1")
    client = IoTHubDeviceClient.create_from_connection_string(
        dev.connection_string, **dev.client_kwargs()
    )
    msg = Message(b"\x00\xffraw", message_id="a&b=c/d")
    msg.correlation_id = "c 1"
    msg.user_id = "u%2F"
    msg.custom_properties["k&=/ ü"] = "v&=/?# ü"
    try:
        client.connect()
        client.send_message(msg)
    finally:
        client.shutdown()
    ev = wait_until(lambda: hub.event_log.read_after(0), timeout=5)[0]
    assert ev.body == b"\x00\xffraw"
    assert ev.system_properties["message-id"] == "a&b=c/d"
    assert ev.system_properties["correlation-id"] == "c 1"
    assert ev.system_properties["user-id"] == "u%2F"
    assert ev.properties == {"k&=/ ü": "v&=/?# ü"}


def test_module_output_telemetry_is_routed_other_outputs_are_not(
    hub: HubThread, hub_device: Any
) -> None:
    """A sync module client's output 'telemetry' reaches the log; output 'debug' does not."""
    dev = hub_device("pi-1/enviro_sensor")
    with sdk_client(dev, IoTHubModuleClient) as client:
        client.connect()
        client.send_message_to_output(_message({"seq": 1}, "b:1"), "debug")
        client.send_message_to_output(_message({"seq": 2}, "b:2"), "telemetry")
        client.send_message(_message({"seq": 3}, "b:3"))  # no output name: not routed either
    events = wait_until(lambda: hub.event_log.read_after(0), timeout=5)
    assert [json.loads(e.body)["seq"] for e in events] == [2]
    sp = events[0].system_properties
    assert sp["iothub-connection-device-id"] == "pi-1"
    assert sp["iothub-connection-module-id"] == "enviro_sensor"
    assert hub.core.stats["messages_unrouted"] == 2


def test_async_module_clients_keep_order_and_are_kept_apart(
    hub: HubThread, hub_device: Any
) -> None:
    """Two async module clients on two devices: every message once, in order, under its own id."""
    devs = [hub_device("pi-a/enviro_sensor"), hub_device("pi-b/enviro_sensor")]

    async def run() -> None:
        clients = [
            AsyncModuleClient.create_from_connection_string(
                d.connection_string, **d.client_kwargs()
            )
            for d in devs
        ]
        try:
            await asyncio.wait_for(asyncio.gather(*(c.connect() for c in clients)), 20)

            async def send(client: Any, name: str) -> None:
                for seq in range(1, 21):
                    await client.send_message_to_output(
                        _message({"dev": name, "seq": seq}, f"{name}:{seq}"), "telemetry"
                    )

            await asyncio.wait_for(
                asyncio.gather(send(clients[0], "pi-a"), send(clients[1], "pi-b")), 30
            )
        finally:
            await asyncio.gather(*(c.shutdown() for c in clients), return_exceptions=True)

    asyncio.run(run())
    events = wait_until(
        lambda: (e := hub.event_log.read_after(0, max_events=100)) and len(e) >= 40 and e,
        timeout=5,
    )
    assert len(events) == 40
    for name in ("pi-a", "pi-b"):
        mine = [e for e in events if e.system_properties["iothub-connection-device-id"] == name]
        bodies = [json.loads(e.body) for e in mine]
        assert [b["seq"] for b in bodies] == list(range(1, 21))
        assert {b["dev"] for b in bodies} == {name}
        assert [e.system_properties["message-id"] for e in mine] == [
            f"{name}:{s}" for s in range(1, 21)
        ]
