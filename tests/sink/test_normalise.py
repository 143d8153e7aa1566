"""Normalising every accepted schema, and refusing everything else with a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from enviromon_sink import normalise as n
from enviromon_sink.errors import RejectedMessageError
from enviromon_sink.events import InboundEvent
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sink.helpers import T0, event, reading_body


def test_ours_single_reading() -> None:
    """A schema-1 reading keeps boot, seq, ts, source, values and takes identity from the hub."""
    [r] = n.normalise(event(reading_body(7, label="someone-else"), device="pi-hall"))
    assert r.device_id == "pi-hall"
    assert r.label == "someone-else"
    assert (r.boot, r.seq, r.source) == ("0a1b2c3d", 7, "simulated")
    assert r.ts == datetime(2026, 11, 25, 3, 0, 7, tzinfo=UTC)
    assert r.values == {
        "temperature": 21.5,
        "humidity": 45.2,
        "pressure": 1012.8,
        "gasResistance": None,
        "iaq": None,
    }
    assert not r.alert and not r.synthetic_boot


def test_ours_packed_array_in_order() -> None:
    """A packed array gives one reading per item, in body order."""
    readings = n.normalise(event([reading_body(s) for s in (3, 4, 5)]))
    assert [r.seq for r in readings] == [3, 4, 5]


def test_schema_1_bodies_validate_against_the_contract() -> None:
    """The helper's bodies are real schema-1 messages (validated with the contract's schema)."""
    from importlib import resources

    import jsonschema

    schema = json.loads(
        resources.files("enviromon_sink").joinpath("contract/telemetry-v1.schema.json").read_text()
    )
    jsonschema.validate(reading_body(1), schema)
    jsonschema.validate([reading_body(1), reading_body(2)], schema)


def test_web_simulator_uses_hub_sequence_and_enqueued_time() -> None:
    """The Raspberry Pi web simulator's body: synthetic boot, hub seq, enqueued time, alert prop."""
    body = {
        "messageId": 1,
        "deviceId": "Raspberry Pi Web Client",
        "temperature": 27.3,
        "humidity": 71.2,
    }
    enq = datetime(2026, 11, 25, 4, 0, tzinfo=UTC)
    [r] = n.normalise(
        event(body, seq_no=991, enqueued=enq, properties={"temperatureAlert": "true"})
    )
    assert (r.boot, r.seq, r.ts) == (n.BOOT_HUB, 991, enq)
    assert r.source == "simulated" and r.label == "Raspberry Pi Web Client"
    assert r.values == {"temperature": 27.3, "humidity": 71.2, "pressure": None, "light": None}
    assert r.alert and r.synthetic_boot


def test_web_simulator_without_sequence_number_falls_back_to_message_id() -> None:
    """With no hub sequence number the body's messageId is the seq, in boot ~msg."""
    body = {
        "messageId": 5,
        "deviceId": "Raspberry Pi Web Client",
        "temperature": 20.0,
        "humidity": 50,
    }
    [r] = n.normalise(event(body, seq_no=None))
    assert (r.boot, r.seq) == (n.BOOT_MESSAGE_ID, 5)


@pytest.mark.parametrize(
    ("body", "values"),
    [
        (
            {"DeviceId": "x", "Temperature": 20.0, "Humidity": 40, "Pressure": 1000},
            (20.0, 40, 1000),
        ),
        ({"deviceId": "x", "Celsius": 19.5, "hPa": 990.5, "Id": 3}, (19.5, None, 990.5)),
        (
            {"temperature": 18, "HPa": 1001, "light": 250.25, "geo": {"lat": 1.5, "lon": 2}},
            (18, None, 1001),
        ),
    ],
)
def test_original_enviromon_fields(body: dict[str, object], values: tuple[object, ...]) -> None:
    """Every alias of the original function's fields is read into the metric keys."""
    [r] = n.normalise(event(body, seq_no=10))
    assert (r.values["temperature"], r.values["humidity"], r.values["pressure"]) == values
    assert r.source == "legacy"


def test_simulated_temperature_sensor() -> None:
    """SimulatedTemperatureSensor: ambient values, .NET timeCreated with 7 digits, simulated."""
    body = {
        "machine": {"temperature": 21.8, "pressure": 1.07},
        "ambient": {"temperature": 20.9, "humidity": 25},
        "timeCreated": "2026-11-25T03:20:00.1234567Z",
    }
    [r] = n.normalise(event(body, seq_no=4, enqueued=datetime(2026, 11, 25, 3, 20, 1, tzinfo=UTC)))
    assert r.values == {"temperature": 20.9, "humidity": 25}
    assert r.ts == datetime(2026, 11, 25, 3, 20, 0, 123456, tzinfo=UTC)
    assert r.source == "simulated" and r.label is None


def test_alert_by_threshold_and_property() -> None:
    """temperature ≥ threshold or temperatureAlert=true marks the reading."""
    hot = event(reading_body(1, temperature=31.0))
    assert n.normalise(hot, temperature_alert=30.0)[0].alert
    assert not n.normalise(hot, temperature_alert=None)[0].alert
    flagged = event(reading_body(1, temperature=10.0), properties={"temperatureAlert": "TRUE"})
    assert n.normalise(flagged)[0].alert


def test_out_of_range_value_becomes_null_with_flag() -> None:
    """One out-of-range value is nulled and flagged; the reading is kept."""
    [r] = n.normalise(event(reading_body(1, temperature=120.0)))
    assert r.values["temperature"] is None
    assert "temperature_out_of_range" in r.flags


def test_every_value_invalid_is_rejected() -> None:
    """A legacy reading whose only values are out of range is dead-lettered."""
    with pytest.raises(RejectedMessageError, match="every value invalid"):
        n.normalise(event({"temperature": 500, "humidity": -3}, seq_no=1))


def test_values_rounded_to_table_decimals() -> None:
    """Values are rounded to the metrics table's decimals."""
    [r] = n.normalise(event(reading_body(1, temperature=21.23456)))
    assert r.values["temperature"] == 21.23


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty body"),
        (b'{"schema": 1', "invalid JSON"),
        (b'{"temperature": NaN}', "NaN is not JSON"),
        (b'{"temperature": -Infinity}', "-Infinity is not JSON"),
        (b'{"temperature": 1e999}', "overflows"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'"hello"', "JSON str"),
        (b"[]", "empty array"),
        (b'{"foo": 1}', "unrecognised schema"),
        (b'{"temperature": "21.5"}', "temperature must be a number"),
        (b'{"temperature": true}', "temperature must be a number"),
        (b'{"temperature": 20, "temperature": 21}', "duplicate key"),
        (b'{"temperature": 20, "Celsius": 21}', "both"),
        (b'{"temperature": 1' + b"0" * 30 + b"}", "20 digits"),
        (b'{"schema": 2}', "unsupported schema"),
        (b'{"schema": true}', "unsupported schema"),
        (json.dumps(reading_body(0)).encode(), "seq must be"),
        (json.dumps(reading_body(1, boot="XYZ")).encode(), "boot must be"),
        (json.dumps({**reading_body(1), "ts": "yesterday"}).encode(), "ts must be"),
        (json.dumps(reading_body(1, source="bme999")).encode(), "source must be"),
        (json.dumps(reading_body(1, flags=["<b>"])).encode(), "bad flag"),
        (json.dumps({**reading_body(1), "extra": 1}).encode(), "unknown field"),
        (json.dumps([reading_body(1), {"x": 1}]).encode(), "item 1"),
        (b"x" * (n.MAX_BODY_BYTES + 1), "bytes >"),
        (
            b'{"machine": {}, "ambient": {"temperature": 20},'
            b' "timeCreated": "0001-01-01T00:00:00+01:00"}',  # no UTC time: before year 1
            "timeCreated is not a valid time",
        ),
    ],
)
def test_rejections_have_reasons(raw: bytes, reason: str) -> None:
    """Each kind of bad body is refused with a specific reason."""
    with pytest.raises(RejectedMessageError) as info:
        n.normalise(event(raw, seq_no=1))
    assert reason in info.value.reason


def test_no_hub_device_id_is_rejected_even_with_a_body_device_id() -> None:
    """An event without the hub's device id is refused; the body's deviceId never stands in."""
    with pytest.raises(RejectedMessageError, match="iothub-connection-device-id"):
        n.normalise(event(reading_body(1), device=None))


@pytest.mark.parametrize("device", ["pi\x00a", "pi\nb", "pi\ud800c", "x" * 129])
def test_unusable_hub_device_id_is_rejected(device: str) -> None:
    """Control characters, a lone surrogate or an over-long hub id: refused with a reason."""
    with pytest.raises(RejectedMessageError, match="not a valid IoT Hub id"):
        n.normalise(event(reading_body(1), device=device))
    assert n.valid_hub_id(device) is None


def test_legacy_without_sequence_or_time_is_rejected() -> None:
    """A boot-less body with no hub sequence number, messageId nor enqueued time is refused."""
    ev = InboundEvent(body=b'{"temperature": 20}', device_id="d")
    with pytest.raises(RejectedMessageError, match="enqueued time"):
        n.normalise(ev)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    """Any bytes give readings or a RejectedMessageError, nothing else."""
    try:
        readings = n.normalise(event(raw, seq_no=1))
    except RejectedMessageError as exc:
        assert exc.reason
    else:
        assert readings and all(r.device_id == "pi-kitchen" for r in readings)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4)
    ),
    max_leaves=20,
)


@given(_json)
def test_arbitrary_json_never_crashes(doc: object) -> None:
    """Any JSON document gives readings in range or a RejectedMessageError."""
    try:
        readings = n.normalise(event(json.dumps(doc).encode(), seq_no=1))
    except RejectedMessageError as exc:
        assert exc.reason
    else:
        from enviromon_sink import metrics

        for r in readings:
            for key, value in r.values.items():
                assert value is None or metrics.by_key()[key].accepts(value)


@given(st.integers(min_value=1, max_value=2**40), st.floats(min_value=-40, max_value=85))
def test_schema_1_round_trip(seq: int, temperature: float) -> None:
    """Any valid schema-1 reading is accepted with its seq and rounded temperature."""
    [r] = n.normalise(event(reading_body(seq, temperature=temperature, ts=T0)))
    assert r.seq == seq
    assert r.values["temperature"] == round(temperature, 2)


_wrong_value = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=40)
    | st.lists(st.integers() | st.text(max_size=5), max_size=3)
    | st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)
)


@given(st.sampled_from(sorted(reading_body(1))), _wrong_value)
def test_schema_1_with_any_field_replaced_never_crashes(key: str, value: object) -> None:
    """A schema-1 body with one field set to anything: readings or a RejectedMessageError."""
    body = {**reading_body(1), key: value}
    try:
        raw = json.dumps(body, allow_nan=True).encode()
        readings = n.normalise(event(raw, seq_no=1))
    except RejectedMessageError as exc:
        assert exc.reason
    else:
        assert len(readings) == 1 and readings[0].seq is not None


def test_device_clock_is_bounded_by_the_hub_time() -> None:
    """ts ahead of the enqueued time by > 5 min, or behind by > 31 days: hub time, clock_skew."""
    hub = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
    cases = [
        (hub + timedelta(minutes=4), hub + timedelta(minutes=4), False),  # within tolerance
        (hub + timedelta(days=400), hub, True),  # a Pi whose clock ran ahead
        (hub - timedelta(days=3), hub - timedelta(days=3), False),  # buffered on the edge
        (datetime(1970, 1, 1, tzinfo=UTC), hub, True),  # no RTC, no NTP yet
    ]
    for ts, want, skewed in cases:
        [r] = n.normalise(event(reading_body(1, ts=ts), enqueued=hub))
        assert r.ts == want and (n.CLOCK_SKEW_FLAG in r.flags) == skewed, ts


@settings(deadline=None)
@given(
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=n.MAX_ID_CHARS).filter(
        str.isprintable
    )
)
def test_every_id_the_edge_accepts_is_a_label_and_an_identity(device_id: str) -> None:
    """The edge's check_device_id rule and the sink's agree: label kept, hub id accepted."""
    [r] = n.normalise(event(reading_body(1, label=device_id), device=device_id))
    assert r.label == device_id and r.device_id == device_id and r.flags == ()
