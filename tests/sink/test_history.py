"""History rows and the processor end to end on Azurite: one row per reading, queries, pruning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from enviromon_sink.events import InboundEvent
from enviromon_sink.history import MAX_TRANSACTION, row_key
from enviromon_sink.normalise import normalise

from tests.sink.helpers import T0, event, reading_body
from tests.sink.sinks import make_sink, rows


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


def test_one_transaction_request_per_device_per_batch(azurite: str, table_prefix: str) -> None:
    """History goes out as one $batch request per device and batch (no fallback resend)."""
    from tests.sink.transport import FaultyTransport

    transport = FaultyTransport()
    sink = make_sink(azurite, table_prefix, transport=transport)
    batches: list[str] = []
    original = transport.send

    def spy(request: object, **kw: object) -> object:
        if "$batch" in request.url:  # type: ignore[attr-defined]
            batches.append(request.url)  # type: ignore[attr-defined]
        return original(request, **kw)

    transport.send = spy  # type: ignore[method-assign]
    sink.process([event(reading_body(s), device=d) for d in ("pi-a", "pi-b") for s in range(1, 31)])
    assert len(batches) == 2
    assert len(rows(azurite, table_prefix, "history")) == 60
