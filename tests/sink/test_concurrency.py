"""8 worker processes, every batch delivered twice, racing: exact counts, conflicts resolved."""

from __future__ import annotations

from typing import Any

import pytest
from enviromon_sink.events import InboundEvent
from enviromon_sink.processor import Sink

from tests.sink import load
from tests.sink.sinks import history_rows, rows

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
        "conflicts": result.conflicts,
    }


def _run(conn: str, prefix: str, workload: load.Workload, *, in_order: bool) -> list[Any]:
    Sink.from_connection_string(conn, table_prefix=prefix)  # creates the tables
    results = load.run(
        workload,
        workers=8,
        work=_work,
        initializer=_init,
        initargs=(conn, prefix),
        in_order=in_order,
    )
    assert len(results) == 2 * workload.batches
    new = [n for r in results for n in r["new"]]
    assert len(new) == workload.readings and len(set(new)) == workload.readings  # once each
    assert sum(r["duplicates"] for r in results) == workload.readings  # every replay
    history = history_rows(conn, prefix)
    assert len({(h["stream"], h["boot"], h["seq"]) for h in history}) == len(history)
    assert len(history) == workload.readings
    return results


def test_eight_workers_replayed_batches_count_exactly(azurite: str, table_prefix: str) -> None:
    """50 devices: exact counts, Duplicates == replays, one history row each, Rejected once."""
    workload = load.build(devices=50, readings=8_000, partitions=8, batch_size=100, bad_every=40)
    assert workload.readings == 8_000 and workload.bad_per_device == 4
    results = _run(azurite, table_prefix, workload, in_order=True)
    assert sum(r["dead"] for r in results) == 2 * 50 * 4  # refused on both deliveries
    sink = Sink.from_connection_string(azurite, table_prefix=table_prefix, create_tables=False)
    devices = sink.list_devices()
    assert [d["deviceId"] for d in devices] == workload.devices
    for d in devices:
        assert (d["count"], d["duplicates"], d["missing"], d["rejected"]) == (160, 160, 0, 4), d
        assert d["lastSeq"] == 80  # two boots of 80 readings each
    assert len(rows(azurite, table_prefix, "deadletter")) == 200  # one row per refused event
    assert sum(r["conflicts"] for r in results) > 0  # the races this test is about happened


@pytest.mark.parametrize("devices", [50, 1000])
def test_out_of_order_first_deliveries_count_exactly(
    azurite: str, table_prefix: str, devices: int
) -> None:
    """First deliveries in any order too, replays racing: exact counts, no Missing, conflicts."""
    readings = 4_000 if devices == 50 else 2_000
    workload = load.build(devices=devices, readings=readings, partitions=8, batch_size=100)
    results = _run(azurite, table_prefix, workload, in_order=False)
    sink = Sink.from_connection_string(azurite, table_prefix=table_prefix, create_tables=False)
    states = sink.list_devices()
    assert len(states) == devices
    per = workload.readings_per_device
    for d in states:
        assert (d["count"], d["duplicates"], d["missing"]) == (per, per, 0), d
    assert sum(r["conflicts"] for r in results) > 0
