"""`enviromon monitor-events` against the local hub: what a real SDK client sent, with the
hub's system properties, shaped like `az iot hub monitor-events`."""

from __future__ import annotations

import json

import pytest
from azure.iot.device import IoTHubDeviceClient, IoTHubModuleClient, Message
from enviromon_sim.cli import main
from enviromon_sim.exitcodes import EXIT_TIMEOUT
from enviromon_sim.iothub.hub import HubThread
from enviromon_sim.ops.events import Arrived, decode_amqp_properties, event_view

from tests.support.hub import sdk_client


def test_monitor_events_prints_what_arrived(
    hub: HubThread,
    hub_device: object,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two devices send; a device filter prints only one's event, with the hub's ids."""
    monkeypatch.delenv("IOTHUB_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("IOTHUB_EVENTS_CONNECTION", raising=False)
    make = hub_device  # type: ignore[assignment]
    mod = make("pi-1/enviro_sensor")  # type: ignore[operator]
    other = make("pi-2")  # type: ignore[operator]
    with sdk_client(other, IoTHubDeviceClient) as client:
        client.connect()
        client.send_message(Message('{"deviceId": "pi-1", "temperature": 99}', message_id="x:1"))
    with sdk_client(mod, IoTHubModuleClient) as client:
        client.connect()
        msg = Message(
            '{"schema": 1, "temperature": 21.5}',
            message_id="b:1",
            content_type="application/json",
            content_encoding="utf-8",
        )
        msg.custom_properties["source"] = "simulated"
        client.send_message_to_output(msg, "telemetry")
    state = str(hub.hub.state_dir)
    rc = main(
        [
            "monitor-events",
            "--state-dir",
            state,
            "--from-start",
            "-d",
            "pi-1",
            "--count",
            "1",
            "--timeout",
            "20",
        ]
    )
    out, _ = capsys.readouterr()
    assert rc == 0
    event = json.loads(out)["event"]
    assert event["origin"] == "pi-1" and event["module"] == "enviro_sensor"
    assert event["payload"] == {"schema": 1, "temperature": 21.5}
    system = event["properties"]["system"]
    assert system["iothub-connection-device-id"] == "pi-1"
    assert system["message-id"] == "b:1" and system["content-type"] == "application/json"
    assert event["properties"]["application"] == {"source": "simulated"}
    assert event["annotations"]["x-opt-sequence-number"] == 2
    # Nothing new after now: --count is not reached, and it says so with its own exit code.
    rc = main(["monitor-events", "--state-dir", state, "--count", "1", "--timeout", "0.5"])
    _, err = capsys.readouterr()
    assert rc == EXIT_TIMEOUT and "0 of 1 events" in err


def test_payloads_that_are_not_json_and_amqp_properties() -> None:
    """Text stays text, other bytes become base64; AMQP bytes keys/values decode to text."""

    def view(body: bytes) -> object:
        return event_view(Arrived(1, None, {}, {}, body))["event"]["payload"]  # type: ignore[index]

    assert view(b"plain text") == "plain text"
    assert view(b"\xff\x00") == {"base64": "/wA="}
    assert decode_amqp_properties(
        {b"iothub-connection-device-id": b"pi-1", b"x-opt-sequence-number": 5, b"gone": None}
    ) == {"iothub-connection-device-id": "pi-1", "x-opt-sequence-number": "5"}
