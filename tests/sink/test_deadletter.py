"""Dead letters: reason, raw body (truncated safely), hub metadata, idempotent on replay."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from enviromon_sink.deadletter import MAX_BODY_BYTES, MAX_BODY_CHARS, NO_DEVICE_PARTITION
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


def test_binary_and_huge_bodies_are_truncated_safely(azurite: str, table_prefix: str) -> None:
    """Invalid UTF-8 goes in as base64, a huge body is cut to fit, the original size is kept."""
    sink = make_sink(azurite, table_prefix)
    binary = bytes(range(256)) * 100
    huge = b'{"x": "' + b"a" * 10_000_000 + b'"}'
    sink.process([event(binary, device="pi-a", seq_no=1), event(huge, device="pi-a", seq_no=2)])
    by_seq = {int(r["SequenceNumber"]): r for r in rows(azurite, table_prefix, "deadletter")}
    assert base64.b64decode(by_seq[1]["BodyBase64"]) == binary[:MAX_BODY_BYTES]
    assert by_seq[1]["BodyBytes"] == len(binary) and by_seq[1]["BodyTruncated"] is True
    assert by_seq[2]["Body"] == huge[:MAX_BODY_CHARS].decode()
    assert by_seq[2]["BodyBytes"] == len(huge) and "bytes >" in by_seq[2]["Reason"]


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
