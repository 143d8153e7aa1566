"""History rows and the processor end to end on Azurite: one row per reading, queries, pruning."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from azure.data.tables import EdmType, EntityProperty, TableServiceClient, UpdateMode
from enviromon_sink import history
from enviromon_sink.events import InboundEvent
from enviromon_sink.history import MAX_TRANSACTION, row_key, time_key, to_row
from enviromon_sink.keys import table_name
from enviromon_sink.normalise import normalise

from tests.sink.helpers import T0, event, reading_body
from tests.sink.sinks import make_sink, rows
from tests.sink.transport import FAILED_CHANGESET, Fault, FaultyTransport, is_batch


def test_batch_counts_writes_history_and_reports_new_readings(
    azurite: str, table_prefix: str
) -> None:
    """A batch counts each reading once, writes one row each, and reports them as new."""
    sink = make_sink(azurite, table_prefix)
    events = [event(reading_body(s), device="pi-a") for s in range(1, 4)]
    events.append(event([reading_body(s, boot="bbbbbbbb") for s in (1, 2)], device="pi-b"))
    result = sink.process(events)
    assert [(r["deviceId"], r["seq"]) for r in result.readings] == [
        ("pi-a", 1),
        ("pi-a", 2),
        ("pi-a", 3),
        ("pi-b", 1),
        ("pi-b", 2),
    ]
    assert result.devices["pi-a"]["count"] == 3 and result.devices["pi-b"]["count"] == 2
    assert result.readings[0]["temperature"] == 21.5 and result.readings[0]["label"] == "pi-kitchen"
    assert (result.duplicates, result.dead_lettered) == (0, 0)
    message = result.to_message()
    assert message["type"] == "readings" and message["devices"]["pi-b"]["lastSeq"] == 2
    assert len(rows(azurite, table_prefix, "history")) == 5


def test_replayed_batch_adds_no_rows_and_no_counts(azurite: str, table_prefix: str) -> None:
    """The same batch again: zero new readings, all duplicates, history unchanged."""
    sink = make_sink(azurite, table_prefix)
    events = [event(reading_body(s), device="pi-a") for s in range(1, 6)]
    sink.process(events)
    again = sink.process(events)
    assert again.readings == [] and again.duplicates == 5
    assert again.devices["pi-a"]["count"] == 5 and again.devices["pi-a"]["duplicates"] == 5
    assert len(rows(azurite, table_prefix, "history")) == 5


def test_more_than_100_readings_of_one_device_split_into_transactions(
    azurite: str, table_prefix: str
) -> None:
    """250 readings of one device land as 250 rows (transactions of at most 100)."""
    sink = make_sink(azurite, table_prefix)
    body = [reading_body(s) for s in range(1, 251)]
    sink.process([event(body[:200], device="pi-a"), event(body[200:], device="pi-a")])
    assert len(rows(azurite, table_prefix, "history")) == 250 > 2 * MAX_TRANSACTION


def test_history_query_range_order_and_limit(azurite: str, table_prefix: str) -> None:
    """history(device, start, end, limit) gives start <= ts < end, oldest first, at most limit."""
    sink = make_sink(azurite, table_prefix)
    sink.process([event(reading_body(s), device="pi a/b") for s in range(1, 11)])
    got = sink.history("pi a/b", T0 + timedelta(seconds=3), T0 + timedelta(seconds=8))
    assert [r["seq"] for r in got] == [3, 4, 5, 6, 7]
    assert got[0]["ts"] == "2026-11-25T03:00:03.000000Z" and got[0]["deviceId"] == "pi a/b"
    assert got[0]["humidity"] == 45.2 and got[0]["gasResistance"] is None
    limited = sink.history("pi a/b", T0, T0 + timedelta(hours=1), limit=4)
    assert [r["seq"] for r in limited] == [1, 2, 3, 4]
    assert sink.history("other", T0, T0 + timedelta(hours=1)) == []


def test_row_key_sorts_by_time_and_is_unique_per_boot_seq() -> None:
    """RowKeys sort by time; same time, different boot or seq → different rows."""
    a = normalise(event(reading_body(2, ts=T0)))[0]
    b = normalise(event(reading_body(3, ts=T0)))[0]
    c = normalise(event(reading_body(1, ts=T0 + timedelta(milliseconds=1))))[0]
    d = normalise(event(reading_body(2, ts=T0, boot="ffffffff")))[0]
    assert row_key(a) < row_key(b) < row_key(c)
    assert len({row_key(a), row_key(b), row_key(d)}) == 3
    # Four-digit years whatever the platform's strftime does with years before 1000.
    assert time_key(datetime(999, 12, 31, tzinfo=UTC)) == "09991231T000000000000Z" < time_key(T0)


def test_retention_prunes_old_rows_with_bounded_work(azurite: str, table_prefix: str) -> None:
    """Rows older than the retention are deleted, at most 100 per device per prune."""
    now = T0 + timedelta(days=40)
    sink = make_sink(
        azurite,
        table_prefix,
        clock=lambda: now,
        retention=timedelta(days=30),
        prune_interval=timedelta(0),
    )
    old = [reading_body(s, ts=T0 + timedelta(seconds=s)) for s in range(1, 151)]
    fresh = [reading_body(s, ts=now - timedelta(minutes=1)) for s in range(151, 153)]
    # The first batch writes the old rows, then prunes 100 of them (bounded work).
    sink.process([event(old, device="pi-a")])
    assert len(rows(azurite, table_prefix, "history")) == 50
    sink.process([event(fresh, device="pi-a")])
    left = rows(azurite, table_prefix, "history")
    assert sorted(int(r["Seq"]) for r in left) == [151, 152]
    assert sink.list_devices()[0]["count"] == 152  # pruning history never touches counts


def test_prune_racing_another_worker_never_fails_the_batch(
    azurite: str,
    table_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another worker deletes an old row between our prune's query and delete: no failure."""
    now = T0 + timedelta(days=40)
    sink = make_sink(
        azurite,
        table_prefix,
        clock=lambda: now,
        retention=timedelta(days=30),
        prune_interval=timedelta(0),
    )
    other = TableServiceClient.from_connection_string(azurite).get_table_client(
        table_name(table_prefix, "history")
    )
    table = sink._history._table  # the prune's own client: the race goes in after its query
    real_query = table.query_entities

    def racing(*args: Any, **kwargs: Any) -> Any:
        found = list(real_query(*args, **kwargs))
        if found:  # the other worker's prune got to the first row first
            other.delete_entity(found[0]["PartitionKey"], found[0]["RowKey"])
        return iter(found)

    monkeypatch.setattr(table, "query_entities", racing)
    old = [reading_body(s, ts=T0 + timedelta(seconds=s)) for s in range(1, 6)]
    with caplog.at_level("WARNING", logger="enviromon_sink.processor"):
        result = sink.process([event(old, device="pi-a")])  # must not raise
    assert len(result.readings) == 5 and result.devices["pi-a"]["count"] == 5
    assert "pruning history of 'pi-a' failed" in caplog.text
    assert len(rows(azurite, table_prefix, "history")) == 4  # the failed delete is atomic
    monkeypatch.undo()
    sink.process([event(reading_body(6, ts=now), device="pi-a")])  # the next prune catches up
    assert [int(r["Seq"]) for r in rows(azurite, table_prefix, "history")] == [6]


def test_list_devices_and_alerts(azurite: str, table_prefix: str) -> None:
    """list_devices gives every device's committed state; alerts from property or threshold."""
    sink = make_sink(azurite, table_prefix, temperature_alert=30.0)
    sink.process(
        [
            event(reading_body(1, temperature=35.0), device="hot"),
            event(reading_body(1), device="cool"),
            event(reading_body(1), device="flagged", properties={"temperatureAlert": "true"}),
        ]
    )
    devices = {d["deviceId"]: d for d in sink.list_devices()}
    assert {k: v["alert"] for k, v in devices.items()} == {
        "cool": False,
        "flagged": True,
        "hot": True,
    }
    assert devices["hot"]["values"]["temperature"] == 35.0
    assert devices["cool"]["lastSeen"] == "2026-11-25T03:00:01.000000Z"


def test_legacy_schemas_counted_exactly_once_by_hub_sequence(
    azurite: str, table_prefix: str
) -> None:
    """Web simulator and SimulatedTemperatureSensor events: counted once, replays ignored."""
    sink = make_sink(azurite, table_prefix)
    enq = datetime(2026, 11, 25, 4, tzinfo=UTC)
    websim = [
        InboundEvent(
            body=b'{"messageId": 1, "deviceId": "Raspberry Pi Web Client", '
            b'"temperature": 27.3, "humidity": 71.2}',
            device_id="websim",
            properties={"temperatureAlert": "false"},
            enqueued_time=enq + timedelta(seconds=i),
            sequence_number=100 + i,
        )
        for i in range(3)  # the page was reloaded: messageId 1 three times, all distinct
    ]
    sts = InboundEvent(
        body=b'{"machine": {"temperature": 21.8, "pressure": 1.07}, '
        b'"ambient": {"temperature": 20.9, "humidity": 25}, '
        b'"timeCreated": "2026-11-25T04:00:00.1234567Z"}',
        device_id="edge1",
        module_id="SimulatedTemperatureSensor",
        enqueued_time=enq,
        sequence_number=7,
    )
    first = sink.process([*websim, sts])
    again = sink.process([*websim, sts])
    assert len(first.readings) == 4 and again.readings == [] and again.duplicates == 4
    devices = {d["deviceId"]: d for d in sink.list_devices()}
    assert devices["websim"]["count"] == 3 and devices["websim"]["missing"] == 0
    assert (
        devices["edge1"]["count"] == 1
        and devices["edge1"]["moduleId"] == "SimulatedTemperatureSensor"
    )


def test_big_hub_sequence_numbers_in_history_and_dead_letters(
    azurite: str, table_prefix: str
) -> None:
    """Legacy readings keyed by hub sequence numbers past 2**31 are stored and queried."""
    sink = make_sink(azurite, table_prefix)
    big = 2**33 + 5
    sink.process(
        [
            event({"temperature": 20.5}, device="pi-a", seq_no=big),
            event(b"{bad", device="pi-a", seq_no=big + 1),
        ]
    )
    [row] = rows(azurite, table_prefix, "history")
    assert row["Seq"] == big
    got = sink.history("pi-a", T0 - timedelta(days=1), T0 + timedelta(days=1))
    assert [r["seq"] for r in got] == [big]
    [letter] = rows(azurite, table_prefix, "deadletter")
    assert letter["SequenceNumber"] == big + 1


def test_one_transaction_request_per_device_per_batch(
    azurite: str, table_prefix: str, lean_enabled: set[str]
) -> None:
    """History goes out as one $batch request per device and batch (no fallback resend)."""
    transport = FaultyTransport()
    sink = make_sink(azurite, table_prefix, transport=transport)
    sink.process([event(reading_body(s), device=d) for d in ("pi-a", "pi-b") for s in range(1, 31)])
    sent = [headers for method, url, headers in transport.sent if is_batch(method, url)]
    assert len(sent) == 2 and not lean_enabled
    # The real service reads a request without x-ms-version as its oldest version (no JSON).
    assert {h.get("x-ms-version") for h in sent} == {sink_api_version(azurite)}
    assert len(rows(azurite, table_prefix, "history")) == 60


# -- the lean $batch writer against the SDK's submit_transaction --------------------------------

HOSTILE_KEYS = ["o'brien", "a''b", "ü日本 ✓", "%2F plus+ & space", "pi-kitchen"]


def _typed(entity: Mapping[str, Any]) -> dict[str, tuple[str, Any]]:
    """An entity's properties with the Python type each came back as (Edm types show here)."""
    return {k: (type(v).__name__, v) for k, v in entity.items()}


def _hostile_rows() -> list[dict[str, Any]]:
    """Rows of one partition with quotes and unicode in keys and every property type we write."""
    return [
        {
            "PartitionKey": "dev 'ü' +1",
            "RowKey": rk,
            "Text": "<script>alert('x')</script> \"q\" ü 日本",
            "Flag": True,
            "Small": -(2**31),
            "Big": EntityProperty(2**62 + 1, EdmType.INT64),
            "Ratio": 21.5,
            "When": T0 + timedelta(microseconds=123456),
            "Skipped": None,
        }
        for rk in HOSTILE_KEYS
    ] + [to_row(r) for r in normalise(event([reading_body(s) for s in (1, 2)], device="pi a/b"))]


def sink_api_version(conn: str) -> str:
    """The Table API version the SDK itself sends."""
    return TableServiceClient.from_connection_string(conn).api_version


@pytest.fixture
def lean_enabled(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """A fresh switch-off set, so a test that switches the writer off affects no other test."""
    fresh: set[str] = set()
    monkeypatch.setattr(history, "_LEAN_OFF", fresh)
    return fresh


def test_lean_writer_stores_what_the_sdk_stores(
    azurite: str, make_prefix: Callable[[], str], lean_enabled: set[str]
) -> None:
    """Same rows through the lean writer and submit_transaction read back identical, types too."""
    service = TableServiceClient.from_connection_string(azurite)
    lean, sdk = (service.create_table(make_prefix() + "h") for _ in range(2))
    rows_in = _hostile_rows()
    by_pk: dict[str, list[dict[str, Any]]] = {}
    for row in rows_in:
        by_pk.setdefault(row["PartitionKey"], []).append(row)
    for chunk in by_pk.values():
        assert history.lean_upsert(lean, chunk) is None  # taken by the lean path, no fallback
        sdk.submit_transaction([("upsert", r, {"mode": UpdateMode.REPLACE}) for r in chunk])
    got_lean = sorted(lean.list_entities(), key=lambda e: (e["PartitionKey"], e["RowKey"]))
    got_sdk = sorted(sdk.list_entities(), key=lambda e: (e["PartitionKey"], e["RowKey"]))
    assert len(got_lean) == len(rows_in) == len(got_sdk)
    assert [_typed(e) for e in got_lean] == [_typed(e) for e in got_sdk]
    assert {e["RowKey"] for e in got_lean} >= set(HOSTILE_KEYS)
    assert not lean_enabled


def test_failed_changeset_falls_back_to_the_sdk_then_switches_lean_off(
    azurite: str, table_prefix: str, lean_enabled: set[str]
) -> None:
    """A 202 whose changeset failed is never taken as done: the SDK resends; lean turns off."""
    transport = FaultyTransport()
    fault = transport.inject(Fault(match=is_batch, kind="changeset_400", times=1))
    sink = make_sink(azurite, table_prefix, transport=transport)

    def batches() -> int:
        return sum(is_batch(method, url) for method, url, _ in transport.sent)

    sink.process([event(reading_body(s), device="pi-a") for s in range(1, 4)])
    assert fault.hits == 1 and batches() == 2  # the refused lean request, the SDK's resend
    assert len(rows(azurite, table_prefix, "history")) == 3  # the SDK's resend wrote them
    assert len(lean_enabled) == 1  # the SDK succeeded where the lean writer was refused
    sink.process([event(reading_body(s), device="pi-a") for s in range(4, 7)])
    assert batches() == 3  # switched off: straight to the SDK, no second refused attempt
    assert len(rows(azurite, table_prefix, "history")) == 6


def test_transient_refusal_keeps_the_lean_writer(
    azurite: str, table_prefix: str, lean_enabled: set[str]
) -> None:
    """A 503 on the lean request (retries off) falls back once but does not switch lean off."""
    transport = FaultyTransport()
    fault = transport.inject(Fault(match=is_batch, kind="503", times=1))
    sink = make_sink(azurite, table_prefix, transport=transport, retry_total=0)
    sink.process([event(reading_body(s), device="pi-a") for s in range(1, 4)])
    assert fault.hits == 1 and not lean_enabled
    assert len(rows(azurite, table_prefix, "history")) == 3


def test_refused_status_reads_the_documented_batch_responses() -> None:
    """All parts 2xx → None; the service's failed changeset → 400; a count mismatch → 0."""
    ok = b"".join(
        b"--changesetresponse_1\r\nContent-Type: application/http\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\nContent-ID: %d\r\n\r\n" % i
        for i in range(3)
    )
    assert history.refused_status(ok, 3) is None
    assert history.refused_status(ok, 4) == 0
    assert history.refused_status(FAILED_CHANGESET, 1) == 400
    assert history.refused_status(FAILED_CHANGESET, 5) == 400
    assert history.refused_status(b"garbage", 1) == 0


def test_lean_writer_is_unavailable_on_a_different_sdk_layout() -> None:
    """No private ``_client``, or a send_request that takes other arguments: UNAVAILABLE."""
    rows_in = [{"PartitionKey": "p", "RowKey": "r", "N": 1}]
    layout = {"url": "http://127.0.0.1:1/acct", "table_name": "t", "api_version": "2019-02-02"}
    assert history.lean_upsert(SimpleNamespace(**layout), rows_in) == history.UNAVAILABLE  # type: ignore[arg-type]

    def other_signature(request: object) -> None:  # no stream= keyword
        raise AssertionError("not reached")

    client = SimpleNamespace(send_request=other_signature)
    table = SimpleNamespace(_client=client, **layout)
    assert history.lean_upsert(table, rows_in) == history.UNAVAILABLE  # type: ignore[arg-type]


def test_unavailable_lean_writer_goes_to_the_sdk_and_stays_off(
    azurite: str, table_prefix: str, lean_enabled: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the lean writer cannot run, the SDK writes the rows and lean is not tried again."""
    calls: list[int] = []

    def unavailable(table: object, rows_: object) -> int:
        calls.append(1)
        return history.UNAVAILABLE

    monkeypatch.setattr(history, "lean_upsert", unavailable)
    sink = make_sink(azurite, table_prefix)
    sink.process([event(reading_body(s), device="pi-a") for s in range(1, 4)])
    sink.process([event(reading_body(s), device="pi-a") for s in range(4, 7)])
    assert len(rows(azurite, table_prefix, "history")) == 6 and len(calls) == 1
    assert len(lean_enabled) == 1
