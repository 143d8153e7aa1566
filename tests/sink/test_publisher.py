"""Publisher: real SDK → local Web PubSub → WebSocket client; failures counted, never raised."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from enviromon_sink.publisher import (
    FRAME_LIMIT_BYTES,
    NullPublisher,
    WebPubSubPublisher,
    publisher_from_settings,
    split_messages,
)
from enviromon_sink.settings import Settings
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.pubsub import open_client, recv_json, service_client

AZURITE = "UseDevelopmentStorage=true"


@dataclass
class Batch:
    """A committed batch as the publisher sees it (the shape of processor.BatchResult)."""

    readings: list[dict[str, Any]]
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)


def reading(device: str, seq: int, pad: int = 0) -> dict[str, Any]:
    return {
        "deviceId": device,
        "boot": "b1",
        "seq": seq,
        "temperature": 21.5,
        "note": "x" * pad,
    }


def batch(devices: int, per_device: int, pad: int = 0) -> Batch:
    readings = [
        reading(f"pi-{d}", s, pad) for s in range(1, per_device + 1) for d in range(devices)
    ]
    states = {f"pi-{d}": {"deviceId": f"pi-{d}", "count": per_device} for d in range(devices)}
    return Batch(readings, states)


def publisher_for(pubsub: Any, **kw: Any) -> WebPubSubPublisher:
    return WebPubSubPublisher.from_connection_string(
        pubsub.connection_string, hub="enviromon", timeout_seconds=2.0, **kw
    )


def check_split(b: Batch, messages: Sequence[Mapping[str, Any]], limit: int) -> None:
    got = [r for m in messages for r in m["readings"]]
    assert got == b.readings
    for m in messages:
        assert m["type"] == "readings"
        assert len(json.dumps(m).encode()) <= limit
        for r in m["readings"]:
            assert m["devices"][r["deviceId"]] == b.devices[r["deviceId"]]
    assert set().union(*(m["devices"] for m in messages)) == set(b.devices)


def test_small_batch_is_one_message() -> None:
    """A batch that fits is sent as the single message to_message() would give."""
    b = batch(3, 2)
    messages, oversized = split_messages(b.readings, b.devices)
    assert oversized == []
    assert messages == [{"type": "readings", "readings": b.readings, "devices": b.devices}]


def test_large_batch_is_split_under_the_frame_limit() -> None:
    """2 MB of readings become several messages under 1 MB, each with its devices' state."""
    b = batch(10, 40, pad=5000)
    messages, oversized = split_messages(b.readings, b.devices)
    assert oversized == []
    assert len(messages) >= 3
    check_split(b, messages, FRAME_LIMIT_BYTES)


def test_device_state_without_readings_rides_along() -> None:
    """A device with only duplicates still has its counts published."""
    b = Batch([reading("pi-1", 1)], {"pi-1": {"count": 1}, "pi-dup": {"count": 9}})
    messages, _ = split_messages(b.readings, b.devices)
    assert messages[0]["devices"]["pi-dup"] == {"count": 9}


def test_a_reading_too_big_for_any_frame_is_reported() -> None:
    """A single reading over the limit is returned as oversized, the rest still packed."""
    b = Batch([reading("pi-1", 1), reading("pi-1", 2, pad=5000), reading("pi-1", 3)], {"pi-1": {}})
    messages, oversized = split_messages(b.readings, b.devices, max_bytes=2048)
    assert [r["seq"] for r in oversized] == [2]
    assert [[r["seq"] for r in m["readings"]] for m in messages] == [[1, 3]]  # not cut by it


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 900)), max_size=40),
    limit=st.integers(2048, 8192),
)
def test_split_keeps_every_reading_in_order(sizes: list[tuple[int, int]], limit: int) -> None:
    """Any batch: every reading exactly once, in order, every message within the limit."""
    b = Batch(
        [reading(f"pi-{d}", i, pad) for i, (d, pad) in enumerate(sizes)],
        {f"pi-{d}": {"count": d} for d in range(6)},
    )
    messages, oversized = split_messages(b.readings, b.devices, max_bytes=limit)
    assert oversized == []
    check_split(b, messages, limit)


def test_publish_reaches_a_websocket_client(pubsub: Any) -> None:
    """The real SDK sends, the local Web PubSub delivers, a client receives the batch."""
    publisher = publisher_for(pubsub)
    ws = open_client(pubsub)
    try:
        b = batch(2, 3)
        publisher.publish(b)
        frame = recv_json(ws)
    finally:
        ws.close()
    assert frame["type"] == "message" and frame["from"] == "server"
    assert frame["dataType"] == "json"
    assert frame["data"] == {"type": "readings", "readings": b.readings, "devices": b.devices}
    assert publisher.published == 1
    assert publisher.failures == 0


def test_split_batch_arrives_whole(pubsub: Any) -> None:
    """A batch over 1 MB arrives as several frames that together hold every reading."""
    publisher = publisher_for(pubsub)
    ws = open_client(pubsub)
    b = batch(5, 60, pad=4000)
    try:
        publisher.publish(b)
        frames = [recv_json(ws) for _ in range(publisher.published)]
    finally:
        ws.close()
    assert publisher.failures == 0
    assert publisher.published >= 2
    assert [r for f in frames for r in f["data"]["readings"]] == b.readings


def test_publish_while_down_is_counted_not_raised(
    pubsub: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Web PubSub down: publish returns, the failure is counted and logged with device ids."""
    publisher = publisher_for(pubsub)
    pubsub.stop()
    with caplog.at_level(logging.WARNING, logger="enviromon_sink.publisher"):
        publisher.publish(batch(2, 1))
    assert publisher.failures == 1
    assert publisher.published == 0
    assert "pi-0, pi-1" in caplog.text
    pubsub.start()
    ws = open_client(pubsub)
    try:
        b = batch(1, 1)
        publisher.publish(b)
        frame = recv_json(ws)
    finally:
        ws.close()
    assert frame["data"]["readings"] == b.readings
    assert publisher.failures == 1
    assert publisher.published == 1


def test_oversized_reading_is_dropped_and_counted_the_rest_arrive(pubsub: Any) -> None:
    """A reading no frame can hold is counted (failures, dropped_readings); the rest arrive."""
    publisher = WebPubSubPublisher(client=service_client(pubsub), max_message_bytes=2048)
    b = Batch([reading("pi-1", 1), reading("pi-1", 2, pad=5000), reading("pi-1", 3)], {"pi-1": {}})
    ws = open_client(pubsub)
    try:
        publisher.publish(b)
        frame = recv_json(ws)
    finally:
        ws.close()
    assert [r["seq"] for r in frame["data"]["readings"]] == [1, 3]
    assert (publisher.failures, publisher.dropped_readings, publisher.published) == (1, 1, 1)


def test_wrong_key_is_a_counted_failure(pubsub: Any) -> None:
    """A 401 from the service (wrong AccessKey) is counted like any other failure."""
    wrong_key = base64.b64encode(b"w" * 32).decode()
    bad = pubsub.connection_string.replace(pubsub.access_key, wrong_key)
    publisher = WebPubSubPublisher.from_connection_string(bad, hub="enviromon")
    publisher.publish(batch(1, 1))
    assert publisher.failures == 1


def test_unserialisable_reading_is_a_counted_failure() -> None:
    """A reading that is not JSON-ready fails the publish, not the caller."""
    publisher = WebPubSubPublisher.from_connection_string(
        "Endpoint=http://127.0.0.1;Port=9;AccessKey=a2V5;Version=1.0;", hub="enviromon"
    )
    publisher.publish(Batch([{"deviceId": "pi", "bad": object()}]))
    assert publisher.failures == 1


def test_settings_choose_the_publisher(pubsub: Any) -> None:
    """No Web PubSub configured: a NullPublisher; configured: the real one."""
    assert isinstance(
        publisher_from_settings(Settings(tables_connection_string=AZURITE)), NullPublisher
    )
    real = publisher_from_settings(
        Settings(
            tables_connection_string=AZURITE, webpubsub_connection_string=pubsub.connection_string
        )
    )
    assert isinstance(real, WebPubSubPublisher)
    NullPublisher().publish(batch(1, 1))  # accepts a batch and does nothing


def test_hung_webpubsub_costs_one_timeout_per_batch() -> None:
    """A service that accepts but never answers: one attempt per batch, all messages counted."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(0.1)
        accepted: list[socket.socket] = []
        done = threading.Event()

        def accept() -> None:
            while not done.is_set():
                with contextlib.suppress(TimeoutError):
                    accepted.append(listener.accept()[0])

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        port = listener.getsockname()[1]
        key = base64.b64encode(b"k" * 32).decode()
        publisher = WebPubSubPublisher.from_connection_string(
            f"Endpoint=http://127.0.0.1;Port={port};AccessKey={key};Version=1.0;",
            hub="enviromon",
            timeout_seconds=0.3,
        )
        b = batch(5, 60, pad=4000)  # several messages
        expected = len(split_messages(b.readings, b.devices)[0])
        try:
            publisher.publish(b)
        finally:
            done.set()
            thread.join(timeout=5)
            for conn in accepted:
                conn.close()
    assert expected >= 2
    assert publisher.failures == expected
    assert publisher.published == 0
    assert len(accepted) == 1
