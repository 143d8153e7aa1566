"""Sink core benchmark: our exactly-once sink against the ORIGINAL enviromon algorithm.

Same Azurite, same load: a catch-up backlog of schema-1 readings from devices hashed over 8
partitions, cut into batches of 100 events, handed to worker processes (a partition's next
batch only after its previous one finished, as Event Hubs consumers do), and every batch
delivered a second time at a random later moment to a random worker.

Figures (one name=value per line):
  sink.readings_per_s            ours: distinct readings / wall time (also writes history)
  sink.original_readings_per_s   the original algorithm (sink_workers.py): same readings / time
  sink.speedup_vs_original       ratio of the two; baseline = the original algorithm
  sink.table_requests_per_reading  ours: Table requests (all, replays included) / readings
  sink.original_table_requests_per_reading
  sink.lost, sink.double_counted                 ours: per-device |Count - truth|, both ways
  sink.conflicts, sink.steady.conflicts          ours: stream writes that lost an ETag race
  sink.original_lost                             messages whose count was dropped after 10 tries
  sink.original_double_counted                   replays the original counted again
  sink.hot_device.*               1 device, 2,000 readings, 8 workers: every batch races on one
                                 entity (the original's 10 tries run out here)
  sink.steady.*                   1,000 devices, 10,000 readings (about one reading per device
                                 per batch, as a fleet in steady state sends), batches of 100
                                 from 8 partitions, 8 workers, every batch twice; ours and the
                                 original: speedup_vs_original (goal >= 5),
                                 table_requests_per_reading (goal <= 0.5), lost/double_counted
  sink.steady.sdk_calls.*         the steady load with ENVIROMON_TABLE_CALLS=sdk (the storage
                                 SDK's own transactions and queries, not rest.py's):
                                 readings_per_s, speedup_vs_original, lost, double_counted;
                                 sink.steady.pipeline_over_sdk_calls = ours / that
  sink.readings_per_s.devices_N   N = 10, 100, 1,000, 10,000 devices, 10,000 readings each run
                                 (goal: flat within 3x from 10 to 10,000)
  sink.readings_per_s.workers_N   50 devices, 4,000 readings, N workers

  sink.calls.<kind>.<call>.client_cpu_ms  client CPU per call, one client: kind = pipeline
                                 (rest.py) or sdk (the storage SDK's calls); call =
                                 transaction_1/12/100 (upserts of state-sized rows) or
                                 query_13_rows (a state load); sink.calls.<call>.sdk_over_pipeline

Set AZURE_TABLES_CONNECTION_STRING to run against a real account instead of a local Azurite.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from azure.data.tables import (  # noqa: E402
    EdmType,
    EntityProperty,
    TableServiceClient,
    UpdateMode,
)
from enviromon_sink.processor import Sink  # noqa: E402
from enviromon_sink.rest import CALL_KINDS, for_table  # noqa: E402

from bench import sink_workers  # noqa: E402
from tests.sink import load  # noqa: E402
from tests.support.azurite import Azurite  # noqa: E402

DEVICES = 50
READINGS = 20_000
WORKERS = 8
SCALING_READINGS = 4_000  # per workers run, to keep the whole bench within minutes
STEADY_DEVICES = 1_000
STEADY_READINGS = 10_000  # also the readings of every devices_N run
HOT_READINGS = 2_000


def _prefix() -> str:
    return "b" + uuid.uuid4().hex[:12]


def _timed_load(
    conn: str,
    prefix: str,
    *,
    devices: int,
    readings: int,
    workers: int,
    work: Callable[..., Any],
    initializer: Callable[..., None],
    initargs: tuple[Any, ...] = (),
) -> tuple[load.Workload, list[Any], float]:
    """The same load for both algorithms: the workload, each batch's result, and seconds."""
    workload = load.build(devices=devices, readings=readings, partitions=8, batch_size=100)
    start = time.perf_counter()
    results = load.run(
        workload,
        workers=workers,
        work=work,
        initializer=initializer,
        initargs=(conn, prefix, *initargs),
    )
    return workload, results, time.perf_counter() - start


def run_ours(
    conn: str, *, devices: int, readings: int, workers: int, table_calls: str = "pipeline"
) -> dict[str, float]:
    prefix = _prefix()
    sink = Sink.from_connection_string(conn, table_prefix=prefix)
    workload, results, elapsed = _timed_load(
        conn,
        prefix,
        devices=devices,
        readings=readings,
        workers=workers,
        work=sink_workers.work_ours,
        initializer=sink_workers.init_ours,
        initargs=(table_calls,),
    )
    truth = workload.readings_per_device
    states = sink.list_devices()
    lost = sum(max(0, truth - d["count"]) for d in states) + truth * (devices - len(states))
    double = sum(max(0, d["count"] - truth) for d in states)
    return {
        "readings": workload.readings,
        "seconds": elapsed,
        "readings_per_s": workload.readings / elapsed,
        "requests_per_reading": sum(r["requests"] for r in results) / workload.readings,
        "lost": lost,
        "double_counted": double,
        "duplicates": sum(r["duplicates"] for r in results),
        "conflicts": sum(r["conflicts"] for r in results),
    }


def run_original(conn: str, *, devices: int, readings: int, workers: int) -> dict[str, float]:
    prefix = _prefix()
    service = TableServiceClient.from_connection_string(conn)
    service.create_table_if_not_exists(f"{prefix}DeviceState")
    service.create_table_if_not_exists(f"{prefix}Calibration")
    workload, results, elapsed = _timed_load(
        conn,
        prefix,
        devices=devices,
        readings=readings,
        workers=workers,
        work=sink_workers.work_original,
        initializer=sink_workers.init_original,
    )
    committed: Counter[str] = Counter()
    dropped = 0
    for result in results:
        for message, outcome, _ in result["outcomes"]:
            if outcome == "committed":
                committed[message] += 1
            else:
                dropped += 1
    # Each message was delivered twice: a second commit is a double count; a message never
    # committed by either delivery is a lost reading.
    double = sum(n - 1 for n in committed.values() if n > 1)
    never = workload.readings - len(committed)
    table = service.get_table_client(f"{prefix}DeviceState")
    total_count = sum(int(e["Count"]) for e in table.list_entities())
    return {
        "readings": workload.readings,
        "seconds": elapsed,
        "readings_per_s": workload.readings / elapsed,
        "requests_per_reading": sum(r["requests"] for r in results) / workload.readings,
        "dropped": dropped,
        "never_counted": never,
        "double_counted": double,
        "count_total": total_count,
    }


def _state_like(i: int) -> dict[str, Any]:
    """An entity the size and shape of a stream's state row."""
    int64 = {"Count", "Duplicates", "Missing", "Rejected", "LastSeq"}
    return {
        "PartitionKey": "b00",
        "RowKey": f"s$pi-{i:05d}",
        "DeviceId": f"pi-{i:05d}",
        "ModuleId": "",
        **{name: EntityProperty(5, EdmType.INT64) for name in int64},
        "Boot": "0a1b2c3d",
        "Boots": '[{"b":"0a1b2c3d","s":5,"g":[],"t":1764039600000000}]',
        "Values": '{"temperature":21.5,"humidity":45.0,"pressure":1000.0}',
        "Source": "simulated",
        "Calibration": 0,
        "Alert": False,
        "Flags": "[]",
        "Label": "",
        "Recent": "[" + ",".join(['{"b":"0a1b2c3d","s":5,"t":"2026-11-25T03:00:00Z"}'] * 10) + "]",
        "Rollup": "{}",
        "HistoryFrom": "",
    }


def calls_cpu_ms(conn: str) -> dict[str, float]:
    """Client CPU per call of rest.py's requests and of the SDK's, one client, same Azurite."""
    service = TableServiceClient.from_connection_string(conn)
    name = f"{_prefix()}calls"
    table = service.create_table(name)
    out: dict[str, float] = {}
    try:
        for kind in CALL_KINDS:
            calls = for_table(table, kind=kind)
            for size in (1, 12, 100):
                reps = max(5, 600 // size)
                start = time.process_time()
                for r in range(reps):
                    calls.submit(
                        [
                            ("upsert", _state_like(r * 100 + i), {"mode": UpdateMode.REPLACE})
                            for i in range(size)
                        ]
                    )
                out[f"{kind}.transaction_{size}"] = (time.process_time() - start) / reps * 1000
            keys = [f"s$pi-{i:05d}" for i in range(0, 1300, 100)]
            where = "PartitionKey eq @pk and RowKey ge @lo and ( {} )".format(
                " or ".join(f"RowKey eq @k{i}" for i in range(len(keys)))
            )
            params = {"pk": "b00", "lo": keys[0], **{f"k{i}": k for i, k in enumerate(keys)}}
            start = time.process_time()
            for _ in range(200):
                assert len(calls.query(where, params)) == len(keys)
            out[f"{kind}.query_13_rows"] = (time.process_time() - start) / 200 * 1000
    finally:
        service.delete_table(name)
    return out


def _with_tables(body: Callable[[str], None]) -> None:
    external = os.environ.get("AZURE_TABLES_CONNECTION_STRING")
    if external:
        body(external)
        return
    with tempfile.TemporaryDirectory() as tmp:
        server = Azurite(Path(tmp))
        try:
            body(server.connection_string)
        finally:
            server.stop()


def _emit(name: str, value: Any) -> None:
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    print(f"{name}={text}", flush=True)


def _bench(conn: str) -> None:
    per_call = calls_cpu_ms(conn)
    for figure, ms in per_call.items():
        _emit(f"sink.calls.{figure}.client_cpu_ms", ms)
    for call in ("transaction_1", "transaction_12", "transaction_100", "query_13_rows"):
        _emit(
            f"sink.calls.{call}.sdk_over_pipeline",
            per_call[f"sdk.{call}"] / per_call[f"pipeline.{call}"],
        )
    ours = run_ours(conn, devices=DEVICES, readings=READINGS, workers=WORKERS)
    original = run_original(conn, devices=DEVICES, readings=READINGS, workers=WORKERS)
    _emit("sink.load", f"{READINGS}_readings_{DEVICES}_devices_{WORKERS}_workers_each_batch_twice")
    _emit("sink.readings_per_s", ours["readings_per_s"])
    _emit("sink.original_readings_per_s", original["readings_per_s"])
    _emit("sink.speedup_vs_original", ours["readings_per_s"] / original["readings_per_s"])
    _emit("sink.seconds", ours["seconds"])
    _emit("sink.original_seconds", original["seconds"])
    _emit("sink.table_requests_per_reading", ours["requests_per_reading"])
    _emit("sink.original_table_requests_per_reading", original["requests_per_reading"])
    _emit("sink.lost", int(ours["lost"]))
    _emit("sink.double_counted", int(ours["double_counted"]))
    _emit("sink.duplicates_recognised", int(ours["duplicates"]))
    _emit("sink.conflicts", int(ours["conflicts"]))
    _emit("sink.original_lost", int(original["never_counted"]))
    _emit("sink.original_dropped_updates", int(original["dropped"]))
    _emit("sink.original_double_counted", int(original["double_counted"]))
    _emit("sink.original_count_total", int(original["count_total"]))

    # One hot device: every in-flight batch (first deliveries and replays) races on one entity.
    hot = run_ours(conn, devices=1, readings=HOT_READINGS, workers=WORKERS)
    hot_original = run_original(conn, devices=1, readings=HOT_READINGS, workers=WORKERS)
    _emit("sink.hot_device.readings", HOT_READINGS)
    _emit("sink.hot_device.readings_per_s", hot["readings_per_s"])
    _emit("sink.hot_device.original_readings_per_s", hot_original["readings_per_s"])
    _emit("sink.hot_device.lost", int(hot["lost"]))
    _emit("sink.hot_device.double_counted", int(hot["double_counted"]))
    _emit("sink.hot_device.original_lost", int(hot_original["never_counted"]))
    _emit("sink.hot_device.original_dropped_updates", int(hot_original["dropped"]))
    _emit("sink.hot_device.original_double_counted", int(hot_original["double_counted"]))

    # Steady state: a batch holds about one reading per device.
    steady = run_ours(conn, devices=STEADY_DEVICES, readings=STEADY_READINGS, workers=WORKERS)
    steady_original = run_original(
        conn, devices=STEADY_DEVICES, readings=STEADY_READINGS, workers=WORKERS
    )
    _emit("sink.steady.load", f"{STEADY_READINGS}_readings_{STEADY_DEVICES}_devices_8_partitions")
    _emit("sink.steady.readings_per_s", steady["readings_per_s"])
    _emit("sink.steady.original_readings_per_s", steady_original["readings_per_s"])
    _emit(
        "sink.steady.speedup_vs_original",
        steady["readings_per_s"] / steady_original["readings_per_s"],
    )
    _emit("sink.steady.table_requests_per_reading", steady["requests_per_reading"])
    _emit(
        "sink.steady.original_table_requests_per_reading", steady_original["requests_per_reading"]
    )
    _emit("sink.steady.conflicts", int(steady["conflicts"]))
    _emit("sink.steady.lost", int(steady["lost"]))
    _emit("sink.steady.double_counted", int(steady["double_counted"]))
    _emit("sink.steady.original_lost", int(steady_original["never_counted"]))
    _emit("sink.steady.original_double_counted", int(steady_original["double_counted"]))
    # The same steady load with the storage SDK's own calls (ENVIROMON_TABLE_CALLS=sdk): what
    # the hand-written requests of rest.py are worth.
    steady_sdk = run_ours(
        conn,
        devices=STEADY_DEVICES,
        readings=STEADY_READINGS,
        workers=WORKERS,
        table_calls="sdk",
    )
    _emit("sink.steady.sdk_calls.readings_per_s", steady_sdk["readings_per_s"])
    _emit(
        "sink.steady.sdk_calls.speedup_vs_original",
        steady_sdk["readings_per_s"] / steady_original["readings_per_s"],
    )
    _emit(
        "sink.steady.pipeline_over_sdk_calls",
        steady["readings_per_s"] / steady_sdk["readings_per_s"],
    )
    _emit("sink.steady.sdk_calls.lost", int(steady_sdk["lost"]))
    _emit("sink.steady.sdk_calls.double_counted", int(steady_sdk["double_counted"]))

    rates: dict[int, float] = {}
    for devices in (10, 100, 1000, 10_000):
        run = (
            steady
            if devices == STEADY_DEVICES
            else run_ours(conn, devices=devices, readings=STEADY_READINGS, workers=WORKERS)
        )
        rates[devices] = run["readings_per_s"]
        _emit(f"sink.readings_per_s.devices_{devices}", run["readings_per_s"])
        _emit(f"sink.table_requests_per_reading.devices_{devices}", run["requests_per_reading"])
        _emit(f"sink.lost.devices_{devices}", int(run["lost"] + run["double_counted"]))
    _emit("sink.readings_per_s.devices_max_over_min", max(rates.values()) / min(rates.values()))
    for workers in (1, 2, 4, 8):
        run = run_ours(conn, devices=DEVICES, readings=SCALING_READINGS, workers=workers)
        _emit(f"sink.readings_per_s.workers_{workers}", run["readings_per_s"])
    _emit("sink.scaling.readings", SCALING_READINGS)
    _emit(
        "sink.scaling.note",
        f"devices_N_runs_use_{STEADY_READINGS}_readings_workers_N_{SCALING_READINGS}_each_batch_twice",
    )


def main() -> None:
    _with_tables(_bench)


if __name__ == "__main__":
    main()
