"""Table storage failing mid-batch: the batch raises, and redelivered it counts exactly once."""

from __future__ import annotations

import re

import pytest
from enviromon_sink.errors import TransientStoreError
from enviromon_sink.events import InboundEvent
from enviromon_sink.processor import Sink

from tests.sink.helpers import event, reading_body
from tests.sink.sinks import history_rows, rows
from tests.sink.transport import (
    Fault,
    FaultyTransport,
    any_request,
    is_batch,
    is_state_write,
    nth,
)


def faulty_sink(conn: str, prefix: str, retry_total: int = 0) -> tuple[Sink, FaultyTransport]:
    transport = FaultyTransport()
    sink = Sink.from_connection_string(
        conn, table_prefix=prefix, transport=transport, retry_total=retry_total
    )
    return sink, transport


def batch() -> list[InboundEvent]:
    """Two devices, three readings each, and one refused event."""
    events = [event(reading_body(s), device=d) for d in ("pi-a", "pi-b") for s in (1, 2, 3)]
    events.append(event(b"{bad", device="pi-a", seq_no=9))
    return events


def assert_exact(conn: str, prefix: str, sink: Sink) -> None:
    devices = {d["deviceId"]: d for d in sink.list_devices()}
    for dev in ("pi-a", "pi-b"):
        assert devices[dev]["count"] == 3 and devices[dev]["missing"] == 0
    assert devices["pi-a"]["rejected"] == 1
    assert len(history_rows(conn, prefix)) == 6
    assert len(rows(conn, prefix, "deadletter")) == 1


def is_state_load(method: str, url: str) -> bool:
    """A load of streams' state rows: a query of the streams table."""
    return method == "GET" and "streams()?$filter=" in url


@pytest.mark.parametrize(
    ("match", "kind"),
    [
        (is_state_write, "503"),
        (is_state_write, "drop"),  # the write landed, the response was lost
        (is_batch, "503"),
        (is_batch, "drop"),
        (is_state_load, "503"),
        (is_state_load, "drop"),
    ],
    ids=[
        "state-503",
        "state-dropped",
        "transaction-503",
        "transaction-dropped",
        "load-503",
        "load-dropped",
    ],
)
def test_fault_raises_and_redelivery_counts_once(
    azurite: str, table_prefix: str, match: object, kind: str
) -> None:
    """An injected fault makes process() raise; the same batch again commits exact counts."""
    sink, transport = faulty_sink(azurite, table_prefix)
    fault = transport.inject(Fault(match=match, kind=kind))  # type: ignore[arg-type]
    with pytest.raises(TransientStoreError) as info:
        sink.process(batch())
    assert fault.hits >= 1 and info.value.__cause__ is not None
    transport.heal()
    sink.process(batch())  # the host redelivers the whole batch
    assert_exact(azurite, table_prefix, sink)
    again = sink.process(batch())  # and a later replay still counts zero
    assert again.readings == [] and again.duplicates == 6
    assert_exact(azurite, table_prefix, sink)


def test_second_device_fails_after_first_committed(azurite: str, table_prefix: str) -> None:
    """pi-a commits, pi-b's write fails: the redelivery counts pi-a zero times, pi-b once."""
    sink, transport = faulty_sink(azurite, table_prefix)
    sink.process([event(reading_body(1), device="pi-b")])
    # pi-a and pi-b live in different buckets (b07, b05): pi-a's transaction goes first.
    transport.inject(Fault(match=nth(is_state_write, 2), kind="503"))
    with pytest.raises(TransientStoreError):
        sink.process(batch())
    assert sink.device("pi-a") is not None  # pi-a's part was committed before pi-b failed
    assert sink.device("pi-b")["count"] == 1  # type: ignore[index]
    transport.heal()
    result = sink.process(batch())
    assert sorted((r["deviceId"], r["seq"]) for r in result.readings) == [
        ("pi-b", 2),
        ("pi-b", 3),
    ]
    devices = {d["deviceId"]: d for d in sink.list_devices()}
    assert devices["pi-a"]["count"] == 3 and devices["pi-b"]["count"] == 3


def test_sdk_retry_rides_out_a_single_503(azurite: str, table_prefix: str) -> None:
    """One 503 with the SDK's retries on: no error surfaces and counts are exact."""
    sink, transport = faulty_sink(azurite, table_prefix, retry_total=2)
    fault = transport.inject(Fault(match=is_state_write, kind="503", times=1))
    sink.process(batch())
    assert fault.hits == 1
    assert_exact(azurite, table_prefix, sink)


def test_tables_down_entirely_raises_and_keeps_nothing_half_counted(
    azurite: str, table_prefix: str
) -> None:
    """Every request dropped: process() raises TransientStoreError; healed, counts are exact."""
    sink, transport = faulty_sink(azurite, table_prefix)
    transport.inject(Fault(match=any_request, kind="503"))
    for _ in range(3):
        with pytest.raises(TransientStoreError):
            sink.process(batch())
    transport.heal()
    sink.process(batch())
    assert_exact(azurite, table_prefix, sink)


def test_failed_history_pruning_never_fails_the_batch(azurite: str, table_prefix: str) -> None:
    """Retention pruning is housekeeping: a 503 on it is logged; the batch commits."""
    from datetime import timedelta

    # A stream with a history row older than the retention, so pruning it needs a query
    # (a stream whose state row says nothing is old enough is pruned without one).
    Sink.from_connection_string(azurite, table_prefix=table_prefix, retention=None).process(
        [event(reading_body(s), device="pi-old") for s in range(1, 41)]
    )
    old = [r["RowKey"] for r in rows(azurite, table_prefix, "streams") if r["RowKey"][0] == "h"]
    assert len(old) == 1
    transport = FaultyTransport()
    sink = Sink.from_connection_string(
        azurite,
        table_prefix=table_prefix,
        transport=transport,
        retry_total=0,
        retention=timedelta(days=1),
        prune_interval=timedelta(0),
    )
    prune = transport.inject(
        # The prune's query: the stream's old chunks, keys only.
        Fault(
            match=lambda m, u: m == "GET" and bool(re.search(r"select=RowKey(&|$)", u)), kind="503"
        )
    )
    result = sink.process([*batch(), event(reading_body(41), device="pi-old")])
    assert prune.hits >= 1 and len(result.readings) == 7
    devices = {d["deviceId"]: d for d in sink.list_devices()}
    assert [devices[d]["count"] for d in ("pi-a", "pi-b", "pi-old")] == [3, 3, 41]
    assert len(rows(azurite, table_prefix, "deadletter")) == 1
    # The failed prune deleted nothing; the next one does.
    transport.heal()
    assert [r["RowKey"] for r in rows(azurite, table_prefix, "streams") if r["RowKey"] in old]
    sink.process([event(reading_body(42), device="pi-old")])
    assert not [r for r in rows(azurite, table_prefix, "streams") if r["RowKey"] in old]
