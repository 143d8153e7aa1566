"""Rollups: min/mean/max per step from counted readings only, exact under replays."""

from __future__ import annotations

import itertools
import random
from datetime import timedelta
from typing import Any

from enviromon_sink import api, rollups
from enviromon_sink.normalise import Reading
from enviromon_sink.processor import Sink
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sink.helpers import T0, event, reading_body


def _reading(minute: float, temperature: float | None) -> Reading:
    when = T0 + timedelta(minutes=minute)
    return Reading(
        device_id="pi-r",
        module_id=None,
        label=None,
        boot="aaaaaaaa",
        seq=1,
        ts=when,
        source="simulated",
        values={"temperature": temperature, "humidity": 40.0},
    )


def _direct(readings: list[Reading], step: str) -> dict[str, dict[str, Any]]:
    """The aggregates computed straight from the readings: bucket ISO → metric → [n, sum, ...]."""
    out: dict[str, dict[str, Any]] = {}
    for r in readings:
        when = rollups.bucket_of(r.ts, rollups.STEPS[step])
        key = when.isoformat(timespec="microseconds").replace("+00:00", "Z")
        for metric, value in r.values.items():
            if value is not None:
                agg = out.setdefault(key, {}).setdefault(metric, [])
                agg.append(value)
    return out


@settings(deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 300), st.one_of(st.none(), st.floats(-40, 85))), max_size=80),
    st.data(),
)
def test_add_in_any_batches_equals_the_direct_aggregates(
    pairs: list[tuple[float, float | None]], data: st.DataObject
) -> None:
    """Readings in any order, cut into any batches: open + closed buckets = direct min/mean/max."""
    readings = [_reading(m, t) for m, t in pairs]
    cuts: list[int] = sorted(data.draw(st.lists(st.integers(0, len(readings)), max_size=5)))
    bounds = [0, *cuts, len(readings)]
    per_step: dict[str, list[tuple[str, Any]]] = {s: [] for s in rollups.STEPS}
    opened: rollups.Open = {}
    for a, b in itertools.pairwise(bounds):
        opened, closed = rollups.add(opened, readings[a:b])
        for step, _, entries in rollups.rows_of(closed):
            assert len(entries) <= rollups.BUCKETS_PER_ROW
            per_step[step].extend((t, m) for t, m in entries)
    far = T0 + timedelta(days=1)
    for step in rollups.STEPS:
        entries = [*per_step[step], *rollups.open_buckets(opened, step)]
        got = rollups.points(entries, T0 - timedelta(days=1), far)
        assert _as_points(rollups.columns(entries, T0 - timedelta(days=1), far)) == got
        want = _direct(readings, step)
        assert [p["ts"] for p in got] == sorted(want)
        for point in got:
            for metric, values in want[point["ts"]].items():
                agg = point[metric]
                assert agg["n"] == len(values)
                assert agg["min"] == min(values) and agg["max"] == max(values)
                assert abs(agg["mean"] - sum(values) / len(values)) < 1e-6


def _as_points(cols: dict[str, Any]) -> list[dict[str, Any]]:
    """Columns back to points (a metric with n 0 at an index is absent there)."""
    out = []
    for i, ts in enumerate(cols["ts"]):
        point: dict[str, Any] = {"ts": ts}
        for metric, col in cols["metrics"].items():
            if col["n"][i]:
                point[metric] = {k: col[k][i] for k in ("min", "mean", "max", "n")}
        out.append(point)
    return out


def test_rollups_route_counts_each_reading_once(azurite: str, table_prefix: str) -> None:
    """Two devices, three hours a minute apart, batches replayed and a late one: exact points."""
    sink = Sink.from_connection_string(azurite, table_prefix=table_prefix)
    rng = random.Random(3)
    temps: dict[tuple[str, int], float] = {}
    events = []
    for s in range(1, 181):
        for device in ("pi-r1", "pi-r2"):
            t = round(rng.uniform(15, 25), 2)
            temps[(device, s)] = t
            body = reading_body(s, temperature=t, ts=T0 + timedelta(minutes=s))
            events.append(event(body, device=device))
    late = events.pop(50)  # arrives after everything else
    batches = [events[i : i + 40] for i in range(0, len(events), 40)] + [[late]]
    for i, batch in enumerate(batches):
        sink.process(batch)
        if i % 2:
            sink.process(batches[i - 1])  # a replay, after a later batch
    sink.process(batches[0])
    response = api.rollups(
        sink,
        {"step": "15m", "from": T0.isoformat(), "to": (T0 + timedelta(hours=4)).isoformat()},
    )
    assert response.status == 200
    streams = {s["streamId"]: s for s in response.json()["streams"]}
    assert set(streams) == {"pi-r1", "pi-r2"}
    for device, stream in streams.items():
        points = stream["points"]
        assert sum(p["temperature"]["n"] for p in points) == 180
        first = points[0]  # minutes 1..14 of the first quarter hour
        values = [temps[(device, s)] for s in range(1, 15)]
        assert first["temperature"]["n"] == 14
        assert first["temperature"]["min"] == min(values)
        assert first["temperature"]["max"] == max(values)
    assert api.rollups(sink, {"step": "5m"}).status == 400
    assert api.rollups(sink, {"step": "15m", "shape": "rows"}).status == 400
    cols = api.rollups(
        sink,
        {
            "step": "15m",
            "from": T0.isoformat(),
            "to": (T0 + timedelta(hours=4)).isoformat(),
            "shape": "columns",
        },
    ).json()
    assert cols["shape"] == "columns"
    for item in cols["streams"]:
        assert "points" not in item
        assert _as_points(item) == streams[item["streamId"]]["points"]
