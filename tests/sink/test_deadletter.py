"""Dead letters: reason, the whole raw body, hub metadata, idempotent on replay."""

from __future__ import annotations

import json
from typing import Any

import pytest
from enviromon_sink.deadletter import MAX_KEPT_BYTES, NO_DEVICE_PARTITION, body_of
from enviromon_sink.events import InboundEvent

from tests.sink.helpers import event, reading_body
from tests.sink.sinks import make_sink, rows


def test_refused_event_row_has_reason_body_and_metadata(azurite: str, table_prefix: str) -> None:
    """A refused event gets a row with its reason, body, device, sequence number, time."""
    sink = make_sink(azurite, table_prefix)
    result = sink.process([event(b'{"temperature": NaN}', device="pi-a", seq_no=42)])
    assert result.dead_lettered == 1 and result.readings == []
    [row] = rows(azurite, table_prefix, "deadletter")
    assert row["Reason"] == "NaN is not JSON"
    assert row["Body"] == '{"temperature": NaN}' and row["BodyBytes"] == 20
    assert row["BodyTruncated"] is False
    assert (row["DeviceId"], row["PartitionKey"], int(row["SequenceNumber"])) == (
        "pi-a",
        "pi-a",
        42,
    )
    assert row["EnqueuedTime"].year == 2026
    assert result.devices["pi-a"]["rejected"] == 1


def test_replayed_refusal_is_one_row_and_counted_once(azurite: str, table_prefix: str) -> None:
    """The same refused event redelivered: still one row, Rejected still 1."""
    sink = make_sink(azurite, table_prefix)
    bad = event(b"{oops", device="pi-a", seq_no=5)
    sink.process([bad])
    again = sink.process([bad])
    assert len(rows(azurite, table_prefix, "deadletter")) == 1
    assert again.devices["pi-a"]["rejected"] == 1


def test_whole_bodies_are_kept_up_to_the_hubs_limit(azurite: str, table_prefix: str) -> None:
    """Binary, 255 KiB text and a 500-reading array come back byte for byte; beyond 256 KiB cut."""
    sink = make_sink(azurite, table_prefix)
    binary = bytes(range(256)) * 400  # 100 KiB, not UTF-8
    text = b'{"x": "' + "ü".encode() * 130_000 + b'"}'  # 255 KiB of text
    packed = json.dumps([reading_body(s) for s in range(1, 500)] + [{"schema": 1}]).encode()
    huge = b'{"x": "' + b"a" * 10_000_000 + b'"}'
    bodies = {1: binary, 2: text, 3: packed, 4: huge}
    sink.process([event(b, device="pi-a", seq_no=n) for n, b in bodies.items()])
    by_seq = {int(r["SequenceNumber"]): r for r in rows(azurite, table_prefix, "deadletter")}
    for n in (1, 2, 3):
        assert body_of(by_seq[n]) == bodies[n], n
        assert by_seq[n]["BodyBytes"] == len(bodies[n]) and by_seq[n]["BodyTruncated"] is False
    assert len(packed) > 100_000 and "item 499" in by_seq[3]["Reason"]
    assert body_of(by_seq[4]) == huge[:MAX_KEPT_BYTES] and by_seq[4]["BodyTruncated"] is True
    assert by_seq[4]["BodyBytes"] == len(huge) and "bytes >" in by_seq[4]["Reason"]


def test_event_without_hub_device_has_its_own_partition(azurite: str, table_prefix: str) -> None:
    """No hub device id: dead-lettered under ~nodevice and counted nowhere, body id or not."""
    sink = make_sink(azurite, table_prefix)
    result = sink.process([event(reading_body(1, label="pi-a"), device=None, seq_no=3)])
    [row] = rows(azurite, table_prefix, "deadletter")
    assert row["PartitionKey"] == NO_DEVICE_PARTITION
    assert "iothub-connection-device-id" in row["Reason"]
    assert result.devices == {} and sink.list_devices() == []


def test_unstorable_hub_ids_are_dead_lettered_not_fatal(azurite: str, table_prefix: str) -> None:
    """Hub ids with a lone surrogate or a control character: dead-lettered, the batch goes on."""
    sink = make_sink(azurite, table_prefix)
    result = sink.process(
        [
            event(reading_body(1), device="pi\ud800x", module="m\udfffy", seq_no=1),
            event(reading_body(1), device="pi\x00z", seq_no=2),
            event(reading_body(1), device="pi-good", seq_no=3),
        ]
    )
    assert result.dead_lettered == 2 and [r["deviceId"] for r in result.readings] == ["pi-good"]
    by_seq = {int(r["SequenceNumber"]): r for r in rows(azurite, table_prefix, "deadletter")}
    assert by_seq[1]["DeviceId"] == "pi\ufffd\ufffd\ufffdx" and by_seq[1]["ModuleId"] != ""
    assert "not a valid IoT Hub id" in by_seq[1]["Reason"] and by_seq[2]["Reason"]


def test_properties_kept_as_json(azurite: str, table_prefix: str) -> None:
    """The event's application properties are kept with the dead letter."""
    sink = make_sink(azurite, table_prefix)
    sink.process([event(b"[1,2]", device="pi-a", properties={"temperatureAlert": "true"})])
    [row] = rows(azurite, table_prefix, "deadletter")
    assert json.loads(row["Properties"]) == {"temperatureAlert": "true"}
    assert "item 0" in row["Reason"]


def test_a_bug_in_normalise_costs_one_event_not_the_batch(
    azurite: str, table_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception while normalising one event dead-letters it; the rest count."""
    from enviromon_sink.normalise import normalise as real

    def buggy(ev: InboundEvent, **kw: Any) -> Any:
        if ev.sequence_number == 2:
            raise KeyError("boom")
        return real(ev, **kw)

    monkeypatch.setattr("enviromon_sink.processor.normalise", buggy)
    sink = make_sink(azurite, table_prefix)
    events = [event(reading_body(s), device="pi-a", seq_no=s) for s in (1, 2, 3)]
    result = sink.process(events)
    assert [r["seq"] for r in result.readings] == [1, 3] and result.dead_lettered == 1
    [row] = rows(azurite, table_prefix, "deadletter")
    assert row["Reason"] == "internal error: KeyError" and row["SequenceNumber"] == 2
    assert result.devices["pi-a"]["missing"] == 1 and result.devices["pi-a"]["rejected"] == 1
