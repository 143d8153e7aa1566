"""Streams on Azurite: per (device, module), a poison stream confined, history pages."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableServiceClient, UpdateMode
from enviromon_sink import streams
from enviromon_sink.counting import INT64_MAX, SEQ_JUMP_FLAG
from enviromon_sink.deadletter import body_of
from enviromon_sink.keys import bucket_of, stream_key, table_name
from enviromon_sink.processor import Sink

from tests.sink.helpers import T0, event, reading_body
from tests.sink.sinks import history_rows, rows, state_rows
from tests.sink.transport import Fault, FaultyTransport, is_batch, nth

GOOD = [f"pi-{i:02d}" for i in range(1, 50)]


def test_two_modules_on_one_device_are_counted_apart(azurite: str, table_prefix: str) -> None:
    """enviro_sensor and SimulatedTemperatureSensor on one device: two streams, own counts."""
    sink = Sink.from_connection_string(azurite, table_prefix=table_prefix)
    ours = [event(reading_body(s), device="edge-1", module="enviro_sensor") for s in (1, 2, 3)]
    sim = [
        event(
            {
                "machine": {"temperature": 80.0},
                "ambient": {"temperature": 20.5, "humidity": 30},
                "timeCreated": "2026-11-25T03:00:00Z",
            },
            device="edge-1",
            module="SimulatedTemperatureSensor",
            seq_no=n,
        )
        for n in (10, 11)
    ]
    result = sink.process([ours[0], sim[0], ours[1], sim[1], ours[2]])
    assert set(result.devices) == {"edge-1!enviro_sensor", "edge-1!SimulatedTemperatureSensor"}
    listed = {d["streamId"]: d for d in sink.list_devices()}
    a, b = listed["edge-1!enviro_sensor"], listed["edge-1!SimulatedTemperatureSensor"]
    assert (a["deviceId"], a["moduleId"], a["count"], a["source"]) == (
        "edge-1",
        "enviro_sensor",
        3,
        "simulated",
    )
    assert (b["moduleId"], b["count"], b["values"]["temperature"]) == (
        "SimulatedTemperatureSensor",
        2,
        20.5,
    )
    assert a["values"]["temperature"] == 21.5 and a["missing"] == 0 and a["lastSeq"] == 3
    # The telemetry of the device merges its streams by time; module= picks one.
    start, end = T0 - timedelta(hours=1), T0 + timedelta(hours=1)
    merged = sink.history("edge-1", start, end, 100).readings
    assert len(merged) == 5 and [r["ts"] for r in merged] == sorted(r["ts"] for r in merged)
    one = sink.history("edge-1", start, end, 100, module_id="enviro_sensor", all_modules=False)
    assert [r["seq"] for r in one.readings] == [1, 2, 3]
    assert {r["streamId"] for r in one.readings} == {"edge-1!enviro_sensor"}


@pytest.mark.parametrize("calls", ["pipeline", "sdk"])
def test_poison_device_never_stalls_the_others(calls: str, azurite: str, table_prefix: str) -> None:
    """seq 2**63 - 1 then a new boot, beside 49 good devices: all counted, the next batch too."""
    sink = Sink.from_connection_string(azurite, table_prefix=table_prefix, table_calls=calls)
    poison = [
        event(reading_body(1, boot="0000000000000bad"), device="pi-poison", seq_no=1),
        event(reading_body(INT64_MAX, boot="0000000000000bad", ts=T0), device="pi-poison"),
        event(reading_body(INT64_MAX, boot="0000000000000b0b", ts=T0), device="pi-poison"),
    ]
    good = [event(reading_body(1), device=d) for d in GOOD]
    result = sink.process(good[:25] + poison + good[25:])
    assert result.dead_lettered == 0 and len(result.readings) == 52
    bad = result.devices["pi-poison"]
    assert bad["count"] == 3 and bad["missing"] == 0 and SEQ_JUMP_FLAG in bad["flags"]
    nxt = sink.process([event(reading_body(2), device=d) for d in GOOD] + poison)
    assert len(nxt.readings) == 49 and nxt.duplicates == 3
    assert all(d["count"] == 2 for d in sink.list_devices() if d["deviceId"] != "pi-poison")


@pytest.mark.parametrize("calls", ["pipeline", "sdk"])
def test_a_stream_storage_refuses_is_dead_lettered_and_the_rest_commits(
    calls: str, azurite: str, table_prefix: str
) -> None:
    """A non-transient refusal of one stream's part: that part dead-lettered, 49 others commit."""
    transport = FaultyTransport()
    sink = Sink.from_connection_string(
        azurite, table_prefix=table_prefix, transport=transport, retry_total=0, table_calls=calls
    )
    # "pi-0-bad" sorts first, so it is the first operation of the first transaction; the
    # refusal (a 400 for the transaction) is repeated when it is sent alone.
    transport.inject(Fault(match=nth(is_batch, 1), kind="changeset_400", times=2))
    bad = [event(reading_body(s), device="pi-0-bad", seq_no=s) for s in (1, 2)]
    result = sink.process(bad + [event(reading_body(1), device=d) for d in GOOD])
    assert len(result.readings) == 49 and "pi-0-bad" not in result.devices
    assert result.dead_lettered == 2
    letters = rows(azurite, table_prefix, "deadletter")
    assert {body_of(x) for x in letters} == {e.body for e in bad}
    assert all("storage refused the stream's part: 400" in x["Reason"] for x in letters)
    assert len(history_rows(azurite, table_prefix)) == 49
    assert len(state_rows(azurite, table_prefix)) == 49
    again = sink.process(bad)  # healed: the part, replayed from its dead letters, counts
    assert [r["seq"] for r in again.readings] == [1, 2]


def test_history_pages_with_a_continuation_token(azurite: str, table_prefix: str) -> None:
    """A range of 250 readings in pages of 100: every reading once, in order, then no token."""
    sink = Sink.from_connection_string(azurite, table_prefix=table_prefix)
    sink.process([event(reading_body(s), device="pi-long") for s in range(1, 251)])
    start, end = T0, T0 + timedelta(hours=1)
    seen: list[int] = []
    token = None
    for _ in range(4):
        page = sink.history("pi-long", start, end, 100, continuation=token)
        seen.extend(r["seq"] for r in page.readings)
        token = page.continuation
        if token is None:
            break
    assert seen == list(range(1, 251)) and token is None


@pytest.mark.parametrize("calls", ["pipeline", "sdk"])
def test_unreadable_stored_state_is_kept_and_its_part_dead_lettered(
    calls: str, azurite: str, table_prefix: str
) -> None:
    """A state row edited into nonsense is not overwritten; its part waits in dead letters."""
    sink = Sink.from_connection_string(azurite, table_prefix=table_prefix, table_calls=calls)
    sink.process([event(reading_body(1), device=d) for d in ("pi-broken", "pi-fine")])
    table = TableServiceClient.from_connection_string(azurite).get_table_client(
        table_name(table_prefix, "streams")
    )
    key = stream_key("pi-broken", None)
    table.update_entity(
        {"PartitionKey": bucket_of(key), "RowKey": f"s${key}", "Boots": "not json"},
        mode=UpdateMode.MERGE,
    )
    result = sink.process([event(reading_body(2), device=d) for d in ("pi-broken", "pi-fine")])
    assert [r["deviceId"] for r in result.readings] == ["pi-fine"]
    [letter] = rows(azurite, table_prefix, "deadletter")
    assert letter["DeviceId"] == "pi-broken" and "stored state unreadable" in letter["Reason"]
    assert table.get_entity(bucket_of(key), f"s${key}")["Boots"] == "not json"


def test_one_summary_line_per_batch_and_no_sdk_request_lines(
    azurite: str, table_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch logs one INFO line with its figures; the SDK's per-request lines stay off."""
    sink = Sink.from_connection_string(azurite, table_prefix=table_prefix)
    caplog.set_level(logging.INFO)
    sink.process([event(reading_body(s), device=d) for d in ("pi-a", "pi-b") for s in (1, 2)])
    infos = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert [r.name for r in infos] == ["enviromon_sink.processor"]
    assert infos[0].getMessage().startswith("batch: 4 events, 4 counted, 0 duplicates")


class _AfterFirstRead(RequestsTransport):  # type: ignore[misc]
    """A transport that runs ``then`` once, right after the next GET it carries (when armed)."""

    def __init__(self) -> None:
        super().__init__()
        self.then: Callable[[], None] | None = None

    def send(self, request: Any, **kwargs: Any) -> Any:
        response = super().send(request, **kwargs)
        then, self.then = self.then, None
        if then is not None and request.method == "GET":
            then()
        else:
            self.then = then
        return response


def test_history_read_racing_a_cut_misses_no_reading(azurite: str, table_prefix: str) -> None:
    """Another worker cuts Recent into a history row between a read's two queries: none lost."""
    transport = _AfterFirstRead()
    reader = Sink.from_connection_string(azurite, table_prefix=table_prefix, transport=transport)
    writer = Sink.from_connection_string(azurite, table_prefix=table_prefix)
    writer.process([event(reading_body(s), device="pi-race") for s in range(1, 21)])
    assert not _chunk_rows(azurite, table_prefix)  # all 20 wait in the state's Recent
    start, end = T0, T0 + timedelta(hours=1)
    for read in (
        # One stream (not all of the device's): its reads are the Recent and the rows query.
        lambda: reader.history("pi-race", start, end, 1000, all_modules=False).readings,
        lambda: reader.every_history(start, end, 1000)[0]["readings"],
    ):
        before = {r["seq"] for r in reader.history("pi-race", start, end, 1000).readings}
        more = max(before) + 1
        transport.then = lambda more=more: writer.process(
            [event(reading_body(s), device="pi-race") for s in range(more, more + 20)]
        )
        seen = [r["seq"] for r in read()]
        assert transport.then is None  # the cut did run between the reads
        assert before <= set(seen) and len(seen) == len(set(seen))
    assert _chunk_rows(azurite, table_prefix)  # and it did cut rows


def test_every_history_equals_each_streams_history(azurite: str, table_prefix: str) -> None:
    """GET telemetry's pages are each stream's own history pages: rows and Recent, tokens."""
    sink = Sink.from_connection_string(azurite, table_prefix=table_prefix)
    for device, n in (("pi-a", 100), ("pi-b", 7)):
        sink.process([event(reading_body(s), device=device) for s in range(1, n + 1)])
    sink.process([event(reading_body(s), device="pi-a", module="enviro") for s in range(1, 41)])
    assert _chunk_rows(azurite, table_prefix)  # pi-a's readings are partly in history rows
    start, end = T0 + timedelta(seconds=5), T0 + timedelta(hours=1)
    for limit in (1000, 30):
        every = sink.every_history(start, end, limit)
        assert [s["streamId"] for s in every] == ["pi-a", "pi-a!enviro", "pi-b"]
        for item in every:
            own = sink.history(
                item["deviceId"], start, end, limit, module_id=item["moduleId"], all_modules=False
            )
            assert item["readings"] == own.readings and item["readings"]
            assert item["continuation"] == own.continuation
    token = every[0]["continuation"]
    rest = sink.history("pi-a", start, end, 1000, all_modules=False, continuation=token)
    assert [r["seq"] for r in every[0]["readings"] + rest.readings] == list(range(5, 101))


def _chunk_rows(conn: str, prefix: str) -> list[dict[str, Any]]:
    return [r for r in rows(conn, prefix, "streams") if str(r["RowKey"]).startswith("h$")]


def test_state_rows_sort_last_in_a_bucket() -> None:
    """Load queries bound the scan from below only: no other row kind may sort after states."""
    assert streams.HISTORY < streams.STATE and streams.ROLLUP < streams.STATE
    assert streams.KEYS_PER_QUERY + 2 <= 15  # PartitionKey eq, RowKey ge, the keys
