"""Retention pruning costs no request when a stream's state row says nothing is old enough."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta

from azure.data.tables import TableServiceClient, UpdateMode
from enviromon_sink.events import InboundEvent
from enviromon_sink.keys import bucket_of, table_name
from enviromon_sink.processor import Sink

from tests.sink.helpers import T0, event, reading_body
from tests.sink.sinks import rows, state_rows
from tests.sink.transport import FaultyTransport

DEVICE = "pi-prune"
RETENTION = timedelta(days=1)


def is_prune_query(method: str, url: str) -> bool:
    """The prune's query: a stream's old chunks, keys only."""
    return method == "GET" and bool(re.search(r"select=RowKey(&|$)", url))


def prune_queries(transport: FaultyTransport) -> int:
    """Prune queries sent so far."""
    return sum(1 for method, url, _ in transport.sent if is_prune_query(method, url))


def worker(conn: str, prefix: str, now: list[datetime]) -> tuple[Sink, FaultyTransport]:
    """A sink (one worker) whose clock reads ``now[0]``, pruning on every batch."""
    transport = FaultyTransport()
    sink = Sink.from_connection_string(
        conn,
        table_prefix=prefix,
        transport=transport,
        retention=RETENTION,
        prune_interval=timedelta(0),
        clock=_clock(now),
    )
    return sink, transport


def _clock(now: list[datetime]) -> Callable[[], datetime]:
    return lambda: now[0]


def readings(first: int, last: int, *, at: datetime = T0) -> list[InboundEvent]:
    """Readings ``first``..``last`` of DEVICE, a second apart from ``at``."""
    return [
        event(reading_body(s, ts=at + timedelta(seconds=s)), device=DEVICE)
        for s in range(first, last + 1)
    ]


def chunks(conn: str, prefix: str) -> list[str]:
    """RowKeys of the streams table's history rows."""
    return sorted(str(r["RowKey"]) for r in rows(conn, prefix, "streams") if r["RowKey"][0] == "h")


def test_young_history_is_pruned_without_a_request(azurite: str, table_prefix: str) -> None:
    """A stream whose history rows are all newer than the cutoff is pruned without a query."""
    now = [T0 + timedelta(hours=2)]
    sink, transport = worker(azurite, table_prefix, now)
    sink.process(readings(1, 40))  # 32 readings are cut into a history row
    assert len(chunks(azurite, table_prefix)) == 1
    before = len(transport.sent)
    result = sink.process(readings(41, 42))
    assert len(result.readings) == 2
    assert prune_queries(transport) == 0
    assert len(transport.sent) - before == 2  # the state load and the commit, nothing else
    (state,) = state_rows(azurite, table_prefix)
    assert state["HistoryFrom"] == "20261125T030001000000Z"  # the chunk's first reading


def test_old_rows_are_pruned_once_then_the_next_prune_costs_nothing(
    azurite: str, table_prefix: str
) -> None:
    """Old rows are deleted by one prune; the next prune (same cutoff) sends no request."""
    now = [T0]
    sink, transport = worker(azurite, table_prefix, now)
    sink.process(readings(1, 40))
    assert prune_queries(transport) == 0 and len(chunks(azurite, table_prefix)) == 1
    now[0] = T0 + timedelta(days=3)
    sink.process(readings(41, 42))
    assert prune_queries(transport) == 1 and chunks(azurite, table_prefix) == []
    before = len(transport.sent)
    sink.process(readings(43, 44))
    assert prune_queries(transport) == 1
    assert len(transport.sent) - before == 2
    assert sink.device(DEVICE)["count"] == 44  # type: ignore[index]


def test_legacy_state_row_without_history_from_is_still_pruned(
    azurite: str, table_prefix: str
) -> None:
    """A state row written before HistoryFrom existed (unknown) is pruned by a query."""
    now = [T0]
    sink, _ = worker(azurite, table_prefix, now)
    sink.process(readings(1, 40))
    old = chunks(azurite, table_prefix)
    assert len(old) == 1
    # Make it a legacy row: the same state without the column.
    table = TableServiceClient.from_connection_string(azurite).get_table_client(
        table_name(table_prefix, "streams")
    )
    state = dict(table.get_entity(bucket_of(DEVICE), f"s${DEVICE}"))
    assert "HistoryFrom" in state
    del state["HistoryFrom"]
    table.update_entity(state, mode=UpdateMode.REPLACE)
    # A fresh worker cuts a newer chunk (the oldest row is not in it): still unknown.
    fresh, transport = worker(azurite, table_prefix, now)
    fresh.process(readings(41, 80, at=T0 + timedelta(hours=3)))
    assert len(chunks(azurite, table_prefix)) == 2
    assert "HistoryFrom" not in state_rows(azurite, table_prefix)[0]
    now[0] = T0 + timedelta(days=1, hours=2, minutes=30)  # only the first chunk is old
    queried = prune_queries(transport)
    fresh.process(readings(81, 82, at=T0 + timedelta(hours=3)))
    assert prune_queries(transport) == queried + 1
    remaining = chunks(azurite, table_prefix)
    assert len(remaining) == 1 and remaining[0] not in old


def test_a_worker_forgets_prunes_older_than_the_interval(azurite: str, table_prefix: str) -> None:
    """The map of recent prunes holds one interval's streams, not every stream ever seen."""
    now = [T0]
    sink = Sink.from_connection_string(
        azurite,
        table_prefix=table_prefix,
        retention=RETENTION,
        prune_interval=timedelta(hours=1),
        prune_devices_per_batch=4,
        clock=_clock(now),
    )
    for hour in range(5):
        now[0] = T0 + timedelta(hours=hour, minutes=1)
        sink.process([event(reading_body(1, ts=now[0]), device=f"pi-{hour}-{d}") for d in range(4)])
        # White-box on purpose: the bound is on memory, which no reply shows.
        remembered = set(sink._pruned_at)
        assert remembered == {f"pi-{hour}-{d}" for d in range(4)}
