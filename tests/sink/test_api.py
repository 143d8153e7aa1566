"""REST API: query parsing and validation, CORS, and the routes against a real store."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from enviromon_sink import api
from enviromon_sink.events import InboundEvent
from enviromon_sink.processor import Sink
from hypothesis import given
from hypothesis import strategies as st

from tests.sink.functions_host import telemetry_body
from tests.support.azurite import connection_string

NOW = datetime(2026, 11, 25, 3, 20, tzinfo=UTC)


def test_default_range_is_the_last_24_hours() -> None:
    """No from/to: [now - 24 h, now), default limit."""
    start, end, limit = api.parse_history_query({}, now=NOW)
    assert (start, end, limit) == (NOW - timedelta(hours=24), NOW, api.DEFAULT_LIMIT)


def test_explicit_range_with_offsets_is_utc() -> None:
    """Zoned ISO-8601 times are accepted and converted to UTC."""
    start, end, limit = api.parse_history_query(
        {"from": "2026-11-25T01:00:00+01:00", "to": "2026-11-25T03:00:00Z", "limit": "5"}, now=NOW
    )
    assert start == datetime(2026, 11, 25, 0, 0, tzinfo=UTC)
    assert end == datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
    assert limit == 5


def test_from_alone_ends_now_and_to_alone_starts_a_day_before() -> None:
    """A missing bound defaults relative to the other one."""
    start, end, _ = api.parse_history_query({"from": "2026-11-25T00:00:00Z"}, now=NOW)
    assert (start, end) == (datetime(2026, 11, 25, tzinfo=UTC), NOW)
    start, end, _ = api.parse_history_query({"to": "2026-11-20T00:00:00Z"}, now=NOW)
    assert (start, end) == (datetime(2026, 11, 19, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC))


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"from": "yesterday"}, "'from' is not an ISO-8601 time"),
        ({"to": "2026-13-45T00:00:00Z"}, "'to' is not an ISO-8601 time"),
        ({"from": "2026-11-25T00:00:00"}, "'from' needs a time zone"),
        ({"to": "2026-11-25"}, "'to' needs a time zone"),
        ({"from": "2026-11-25T03:00:00Z", "to": "2026-11-25T02:00:00Z"}, "before 'to'"),
        ({"from": "2026-11-25T03:00:00Z", "to": "2026-11-25T03:00:00Z"}, "before 'to'"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-11-25T00:00:00Z"}, "at most 31 days"),
        ({"limit": "0"}, "'limit'"),
        ({"limit": "-1"}, "'limit'"),
        ({"limit": "ten"}, "'limit'"),
        ({"limit": "10001"}, "'limit'"),
        ({"limit": "9" * 400}, "'limit'"),
        ({"from": "2026-11-25T00:00:00Z" + "0" * 5000}, "'from' is not an ISO-8601 time"),
        ({"from": "'; DROP TABLE x; --"}, "'from' is not an ISO-8601 time"),
        ({"from": "0001-01-01T00:00:00+01:00"}, "'from' is out of range"),
        ({"to": "0001-01-01T00:00:00Z"}, "'to' is too early"),
    ],
)
def test_bad_query_is_a_clear_error(query: dict[str, str], message: str) -> None:
    """Malformed, zone-less, reversed, too wide or bad limit: ValueError saying what."""
    with pytest.raises(ValueError) as info:
        api.parse_history_query(query, now=NOW)
    assert message in str(info.value)


@given(st.dictionaries(st.sampled_from(["from", "to", "limit"]), st.text(max_size=40)))
def test_any_query_parses_or_fails_cleanly(query: dict[str, str]) -> None:
    """Any query string: a valid bounded range, or ValueError — never another exception."""
    try:
        start, end, limit = api.parse_history_query(query, now=NOW)
    except ValueError as exc:
        assert str(exc)
    else:
        assert start < end
        assert end - start <= api.MAX_RANGE
        assert 1 <= limit <= api.MAX_LIMIT
        assert start.tzinfo is not None and end.tzinfo is not None


class _Unreachable:
    """A store the API must not call (bad requests are answered before any query)."""

    def list_devices(self) -> list[dict[str, Any]]:
        raise AssertionError("store called")

    def history(
        self, device_id: str, start: datetime, end: datetime, limit: int = 0, **kw: Any
    ) -> Any:
        raise AssertionError("store called")

    def rollups(self, step: str, start: datetime, end: datetime, **kw: Any) -> Any:
        raise AssertionError("store called")

    def every_history(self, start: datetime, end: datetime, limit: int = 0) -> Any:
        raise AssertionError("store called")


@pytest.mark.parametrize(
    "device_id",
    ["", "x" * 129, "pi\n", "a\x00b", "\x7f", "tab\there"],
)
def test_invalid_device_id_is_400_before_any_query(device_id: str) -> None:
    """An id the sink could never have stored is refused with 400 before any query."""
    response = api.device_history(_Unreachable(), device_id, {})
    assert response.status == 400
    assert "device id" in response.json()["error"]


@pytest.mark.parametrize(
    "query",
    [
        {"from": "soon"},
        {"limit": "0"},
        {"limit": "x"},
        {"from": "2026-11-25T03:00:00Z", "to": "2026-11-24T03:00:00Z"},
    ],
)
def test_every_history_bad_query_is_400_before_any_query(query: dict[str, str]) -> None:
    """The all-streams telemetry route checks its query as the device route does."""
    response = api.every_history(_Unreachable(), query)
    assert response.status == 400
    assert response.json()["error"]


def test_bad_range_is_400_with_message() -> None:
    """A bad 'from' is answered 400 with the message, JSON, no-store."""
    response = api.device_history(_Unreachable(), "pi-1", {"from": "soon"})
    assert response.status == 400
    assert response.json() == {
        "error": "'from' is not an ISO-8601 time such as 2026-11-25T03:20:00Z"
    }
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Cache-Control"] == "no-store"


def test_cors_headers_only_for_allowed_origins() -> None:
    """with_cors adds the grant and Vary; None leaves the response alone."""
    base = api.json_response(200, {"ok": True})
    assert "Access-Control-Allow-Origin" not in api.with_cors(base, None).headers
    granted = api.with_cors(base, "https://dash.example.com")
    assert granted.headers["Access-Control-Allow-Origin"] == "https://dash.example.com"
    assert granted.headers["Vary"] == "Origin"
    assert granted.body == base.body


def test_preflight() -> None:
    """An allowed origin's preflight gets 204 with GET allowed; another origin gets 403."""
    ok = api.preflight("https://dash.example.com")
    assert ok.status == 204
    assert "GET" in ok.headers["Access-Control-Allow-Methods"]
    assert ok.headers["Access-Control-Allow-Origin"] == "https://dash.example.com"
    refused = api.preflight(None)
    assert refused.status == 403
    assert "Access-Control-Allow-Origin" not in refused.headers


def test_json_response_refuses_nan() -> None:
    """The API never emits NaN (invalid JSON for browsers)."""
    with pytest.raises(ValueError):
        api.json_response(200, {"t": float("nan")})


# --- against a real Sink on Azurite -------------------------------------------------------


def _feed(sink: Sink, device: str, stamps: list[datetime]) -> None:
    sink.process(
        [
            InboundEvent(body=telemetry_body(device, i + 1, ts=ts), device_id=device)
            for i, ts in enumerate(stamps)
        ]
    )


@pytest.fixture
def sink(azurite: str, table_prefix: str) -> Sink:
    return Sink.from_connection_string(azurite, table_prefix=table_prefix)


def test_history_range_query(sink: Sink) -> None:
    """Readings in [from, to) come back oldest first; limit truncates and says so."""
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    stamps = [base + timedelta(minutes=10 * i) for i in range(6)]
    _feed(sink, "pi-a", stamps)
    _feed(sink, "pi-b", stamps[:2])
    query = {"from": _z(stamps[1]), "to": _z(stamps[4])}
    body = api.device_history(sink, "pi-a", query).json()
    assert [r["seq"] for r in body["readings"]] == [2, 3, 4]
    assert all(r["deviceId"] == "pi-a" for r in body["readings"])
    assert body["truncated"] is False
    limited = api.device_history(sink, "pi-a", {**query, "limit": "2"}).json()
    assert [r["seq"] for r in limited["readings"]] == [2, 3]
    assert limited["truncated"] is True
    default = api.device_history(sink, "pi-a", {}).json()  # last 24 h
    assert [r["seq"] for r in default["readings"]] == [1, 2, 3, 4, 5, 6]


def test_unknown_device_is_an_empty_200(sink: Sink) -> None:
    """A well-formed id nobody sent from: 200 and no readings (documented choice)."""
    response = api.device_history(sink, "pi-nobody", {})
    assert response.status == 200
    assert response.json()["readings"] == []


@pytest.mark.parametrize(
    "hostile",
    [
        "pi-a' or PartitionKey ne '",
        "pi-a' or '1' eq '1",
        "' or true or '",
        "pi-a%27",
        "*",
        "pi-a\u2019",
        "pi-a ",
        "PI-A",
    ],
)
def test_device_id_is_data_not_filter(sink: Sink, hostile: str) -> None:
    """Filter-looking ids match no other device's rows (parameterised, escaped keys)."""
    now = datetime.now(UTC)
    _feed(sink, "pi-a", [now - timedelta(minutes=5)])
    response = api.device_history(sink, hostile, {})
    assert response.status == 200
    assert response.json()["readings"] == []


def test_id_with_quote_reads_its_own_rows(sink: Sink) -> None:
    """A legal id holding a quote round-trips: its own rows, nobody else's."""
    now = datetime.now(UTC)
    _feed(sink, "o'brien", [now - timedelta(minutes=3), now - timedelta(minutes=2)])
    _feed(sink, "pi-a", [now - timedelta(minutes=1)])
    readings = api.device_history(sink, "o'brien", {}).json()["readings"]
    assert [(r["deviceId"], r["seq"]) for r in readings] == [("o'brien", 1), ("o'brien", 2)]


def test_devices_lists_every_device(sink: Sink) -> None:
    """GET devices: the committed state of every device, JSON, no-store."""
    now = datetime.now(UTC)
    _feed(sink, "pi-a", [now - timedelta(minutes=2), now - timedelta(minutes=1)])
    _feed(sink, "pi-b", [now - timedelta(minutes=1)])
    response = api.list_devices(sink)
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    devices = response.json()["devices"]
    assert [d["deviceId"] for d in devices] == ["pi-a", "pi-b"]
    assert [d["count"] for d in devices] == [2, 1]


def test_every_history_serves_each_stream_once_with_tokens(sink: Sink) -> None:
    """GET telemetry: every stream (modules apart) in one answer, limit per stream, tokens."""
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    stamps = [base + timedelta(minutes=5 * i) for i in range(6)]
    _feed(sink, "pi-a", stamps)
    _feed(sink, "pi-b", stamps[:2])
    sink.process(
        [
            InboundEvent(
                body=telemetry_body("edge-1", 7, ts=stamps[0]),
                device_id="edge-1",
                module_id="enviro_sensor",
            )
        ]
    )
    query = {"from": _z(stamps[1]), "limit": "3"}
    body = api.every_history(sink, query).json()
    streams = {s["streamId"]: s for s in body["streams"]}
    assert list(streams) == ["edge-1!enviro_sensor", "pi-a", "pi-b"]
    assert streams["edge-1!enviro_sensor"]["readings"] == []  # before `from`
    assert streams["edge-1!enviro_sensor"]["moduleId"] == "enviro_sensor"
    assert [r["seq"] for r in streams["pi-a"]["readings"]] == [2, 3, 4]
    assert [r["seq"] for r in streams["pi-b"]["readings"]] == [2]
    assert streams["pi-b"]["continuation"] is None
    token = streams["pi-a"]["continuation"]
    assert token
    rest = api.device_history(
        sink, "pi-a", {**query, "module": "", "continuation": token, "limit": "10"}
    ).json()
    assert [r["seq"] for r in rest["readings"]] == [5, 6]
    assert body["limit"] == 3


def test_tables_down_is_503() -> None:
    """Storage unreachable: 503 with Retry-After, no internals in the body."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = Sink.from_connection_string(
        connection_string(port), table_prefix="down", create_tables=False, retry_total=0
    )
    for response in (
        api.list_devices(down),
        api.device_history(down, "pi-a", {}),
        api.every_history(down, {}),
    ):
        assert response.status == 503
        assert response.headers["Retry-After"] == "5"
        assert response.json() == {"error": "storage is unavailable, try again shortly"}


def _z(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")
