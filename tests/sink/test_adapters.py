"""Adapters: Functions events, the local event log and EventData become InboundEvents."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from azure.eventhub import EventData
from azure.eventhub._pyamqp.message import Message, Properties
from enviromon_sim.iothub.eventlog import EventLog, NewEvent
from enviromon_sink import adapters
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sink.functions_host import HubMessage, function_batch

BODY = json.dumps({"schema": 1, "deviceId": "spoofed", "boot": "b1", "seq": 1}).encode()


def test_function_batch_identity_comes_from_the_hub() -> None:
    """Device and module ids come from system properties, never the body's deviceId."""
    events = function_batch(
        [
            HubMessage(BODY, "pi-kitchen", "enviro_sensor", {"temperatureAlert": "true"}, "b1:1"),
            HubMessage(b'{"x": 2}', "pi-hall", None, {"source": "simulated"}, "b1:2"),
        ]
    )
    inbound = adapters.from_function_events(events)
    assert [e.device_id for e in inbound] == ["pi-kitchen", "pi-hall"]
    assert [e.module_id for e in inbound] == ["enviro_sensor", None]
    assert inbound[0].body == BODY
    assert inbound[0].properties == {"temperatureAlert": "true"}
    assert inbound[1].properties == {"source": "simulated"}
    assert [e.message_id for e in inbound] == ["b1:1", "b1:2"]
    assert inbound[0].sequence_number is not None
    assert inbound[1].sequence_number == inbound[0].sequence_number + 1
    assert inbound[0].enqueued_time is not None and inbound[0].enqueued_time.tzinfo is not None


def test_function_batch_without_device_id_keeps_none() -> None:
    """An event without the hub's device id is passed on with None (the core dead-letters it)."""
    inbound = adapters.from_function_events(function_batch([HubMessage(BODY, None)]))
    assert inbound[0].device_id is None
    assert inbound[0].body == BODY


def test_function_batch_json_data_type() -> None:
    """With the host's default 'json' data type the bodies still arrive (re-serialised)."""
    events = function_batch(
        [HubMessage(BODY, "pi-1"), HubMessage(b'{"t": 1}', "pi-2")], data_type="json"
    )
    inbound = adapters.from_function_events(events)
    assert [json.loads(e.body) for e in inbound] == [json.loads(BODY), {"t": 1}]
    assert [e.device_id for e in inbound] == ["pi-1", "pi-2"]


def test_function_properties_become_strings_and_are_bounded() -> None:
    """Non-string property values become strings; a huge bag is capped."""
    props: dict[str, object] = {"n": 3, "flag": True, "obj": {"a": 1}, "none": None}
    props.update({f"k{i}": "v" * 5000 for i in range(200)})
    inbound = adapters.from_function_events(function_batch([HubMessage(BODY, "pi", None, props)]))
    got = inbound[0].properties
    assert got["n"] == "3"
    assert got["flag"] == "true"
    assert json.loads(got["obj"]) == {"a": 1}
    assert "none" not in got
    assert len(got) <= 64
    assert all(len(v) <= 1024 for v in got.values())


def test_event_log_events(tmp_path: Path) -> None:
    """The local hub's events carry their system properties into the InboundEvent."""
    with EventLog(tmp_path / "events.db") as log:
        log.append_many(
            [
                NewEvent(
                    {
                        "iothub-connection-device-id": "pi-1",
                        "iothub-connection-module-id": "enviro_sensor",
                        "message-id": "b:1",
                        "content-type": "application/json",
                    },
                    {"temperatureAlert": "false"},
                    BODY,
                ),
                NewEvent({"message-id": "x"}, {}, b"\xff\xfe"),
            ]
        )
        inbound = adapters.from_event_log(log.read_batch())
    assert inbound[0].device_id == "pi-1"
    assert inbound[0].module_id == "enviro_sensor"
    assert inbound[0].message_id == "b:1"
    assert inbound[0].properties == {"temperatureAlert": "false"}
    assert inbound[0].body == BODY
    assert inbound[0].sequence_number == 1
    assert inbound[0].enqueued_time is not None
    assert inbound[1].device_id is None
    assert inbound[1].body == b"\xff\xfe"


def _received(
    body: list[bytes], annotations: dict[str | bytes, Any], app: dict[str | bytes, Any]
) -> EventData:
    """An EventData as azure-eventhub builds it from a received AMQP message."""
    message = Message(
        data=body,
        message_annotations=annotations,
        application_properties=app,
        properties=Properties(message_id=b"b2:9", content_type=b"application/json"),
    )
    return EventData._from_message(message)


def test_event_data_bytes_keys() -> None:
    """EventData's bytes keys and values are decoded; a multi-part body is joined."""
    event = _received(
        [BODY[:10], BODY[10:]],
        {
            b"iothub-connection-device-id": b"pi-2",
            b"iothub-connection-module-id": b"enviro_sensor",
            b"x-opt-sequence-number": 41,
            b"x-opt-enqueued-time": int(time.time() * 1000),
        },
        {b"temperatureAlert": b"true"},
    )
    [inbound] = adapters.from_event_data([event])
    assert inbound.device_id == "pi-2"
    assert inbound.module_id == "enviro_sensor"
    assert inbound.properties == {"temperatureAlert": "true"}
    assert inbound.body == BODY
    assert inbound.message_id == "b2:9"
    assert inbound.sequence_number == 41
    assert inbound.enqueued_time is not None
    assert abs((datetime.now(UTC) - inbound.enqueued_time).total_seconds()) < 60


@settings(max_examples=100, deadline=None)
@given(
    device=st.one_of(st.none(), st.text(max_size=40)),
    props=st.dictionaries(
        st.text(max_size=20),
        st.one_of(st.text(max_size=50), st.integers(), st.booleans(), st.none(), st.floats()),
        max_size=10,
    ),
    body=st.binary(max_size=200),
)
def test_adapter_never_raises_on_odd_metadata(
    device: str | None, props: dict[str, object], body: bytes
) -> None:
    """Whatever the property bag holds, the adapter yields str -> str and the exact body."""
    inbound = adapters.from_function_events(function_batch([HubMessage(body, device, None, props)]))
    assert inbound[0].body == body
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in inbound[0].properties.items())
    assert inbound[0].device_id == (device or None)
