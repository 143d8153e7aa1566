"""8 worker processes, 50 devices, 20,000 readings, every batch delivered twice: exact counts."""

from __future__ import annotations

from typing import Any

from enviromon_sink.events import InboundEvent
from enviromon_sink.processor import Sink

from tests.sink import load
from tests.sink.sinks import rows

_sink: Sink | None = None


def _init(conn: str, prefix: str) -> None:
    global _sink
    _sink = Sink.from_connection_string(conn, table_prefix=prefix, create_tables=False)


def _work(batch: list[InboundEvent]) -> dict[str, Any]:
    assert _sink is not None
    result = _sink.process(batch)
    return {
        "new": [(r["deviceId"], r["boot"], r["seq"]) for r in result.readings],
        "duplicates": result.duplicates,
        "dead": result.dead_lettered,
    }


def test_eight_workers_replayed_batches_count_exactly(azurite: str, table_prefix: str) -> None:
    """Exact counts, Duplicates == replays, one history row per reading, Rejected once each."""
    Sink.from_connection_string(azurite, table_prefix=table_prefix)  # creates the tables
    workload = load.build(devices=50, readings=20_000, partitions=8, batch_size=100, bad_every=40)
    assert workload.readings == 20_000 and workload.bad_per_device == 10
    results = load.run(
        workload, workers=8, work=_work, initializer=_init, initargs=(azurite, table_prefix)
    )
    assert len(results) == 2 * workload.batches

    new = [n for r in results for n in r["new"]]
    assert len(new) == 20_000 and len(set(new)) == 20_000  # each reading reported new once
    assert sum(r["duplicates"] for r in results) == 20_000  # and every replay as a duplicate
    assert sum(r["dead"] for r in results) == 2 * 50 * 10  # refused on both deliveries

    sink = Sink.from_connection_string(azurite, table_prefix=table_prefix, create_tables=False)
    devices = sink.list_devices()
    assert [d["deviceId"] for d in devices] == workload.devices
    for d in devices:
        assert (d["count"], d["duplicates"], d["missing"], d["rejected"]) == (400, 400, 0, 10), d
        assert d["lastSeq"] == 200  # two boots of 200 readings each
    history = rows(azurite, table_prefix, "history")
    assert len(history) == 20_000
    assert len({(h["PartitionKey"], h["RowKey"]) for h in history}) == 20_000
    assert len(rows(azurite, table_prefix, "deadletter")) == 500  # one row per refused event
