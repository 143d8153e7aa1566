"""The schema-1 envelope: key order, timestamps, ids, compact encoding, packing."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from enviro_sensor.message import (
    MESSAGE_UNIT_BYTES,
    Reading,
    build_reading,
    check_device_id,
    encode,
    format_ts,
    new_boot_id,
    pack,
    plan_message,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from .pipeline_doubles import assert_valid

TS = datetime(2026, 11, 25, 3, 20, 0, 123456, tzinfo=UTC)
VALUES = {
    "temperature": 21.4,
    "humidity": 45.2,
    "pressure": 1012.8,
    "gasResistance": 152000,
    "iaq": 87.5,
}


# The example message of docs/contract.md, kept with the contract.
CONTRACT_EXAMPLE = (
    Path(__file__).resolve().parents[2] / "contract/examples/reading-v1.json"
).read_text()


def reading(seq: int = 42, *, alert: bool = False, flags: list[str] | None = None) -> Reading:
    return build_reading(
        device_id="pi-kitchen",
        boot="3f2a9c1e",
        seq=seq,
        ts=TS,
        source="bme680",
        values=VALUES,
        calibration=3,
        flags=flags or [],
        alert=alert,
    )


def test_reading_is_design_example() -> None:
    """The envelope is docs/contract.md's example, key for key and in order, and it validates."""
    payload = reading().payload
    assert payload == json.loads(CONTRACT_EXAMPLE)
    # Key order too (dict equality ignores it): the encoded body is the example, compacted.
    assert list(payload) == list(json.loads(CONTRACT_EXAMPLE))
    assert encode(payload) == json.dumps(
        json.loads(CONTRACT_EXAMPLE), separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert_valid(payload)


def test_missing_values_are_null() -> None:
    """A value not given is null, and the message still validates."""
    r = build_reading(
        device_id="d",
        boot="abcdef01",
        seq=1,
        ts=TS,
        source="simulated",
        values={"temperature": 20.0},
        calibration=0,
        flags=["gas_unstable"],
        alert=False,
    )
    assert r.payload["gasResistance"] is None and r.payload["iaq"] is None
    assert_valid(r.payload)


def test_flags_deduplicated_in_order() -> None:
    """The schema wants unique flags: duplicates dropped, first position kept."""
    r = reading(flags=["gas_unstable", "humidity_out_of_range", "gas_unstable"])
    assert r.payload["flags"] == ["gas_unstable", "humidity_out_of_range"]


def test_ts_is_utc_with_milliseconds_and_z() -> None:
    """ts: UTC ISO 8601, milliseconds, Z; other zones converted; naive refused."""
    assert format_ts(TS) == "2026-11-25T03:20:00.123Z"
    plus_two = timezone(timedelta(hours=2))
    assert format_ts(datetime(2026, 1, 1, 2, 0, 0, tzinfo=plus_two)) == "2026-01-01T00:00:00.000Z"
    with pytest.raises(ValueError, match="timezone"):
        format_ts(datetime(2026, 1, 1))


def test_boot_ids_are_random_hex() -> None:
    """boot: 16 lowercase hex digits (64 bits), different per start, valid for schema 1."""
    ids = {new_boot_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    for boot in ids:  # schema 1 allows 8..32 hex digits
        payload = dict(reading().payload, boot=boot)
        assert_valid(payload)


def test_encode_is_compact_utf8_and_refuses_nan() -> None:
    """Compact JSON (no spaces), UTF-8, and NaN is never encoded."""
    body = encode({"deviceId": "küche", "v": [1, 2]})
    assert body == '{"deviceId":"küche","v":[1,2]}'.encode()
    with pytest.raises(ValueError):
        encode({"temperature": float("nan")})


def test_pack_single() -> None:
    """One reading per message: the body is the object; id boot:seq; properties."""
    message = pack([reading(alert=True)], as_array=False)
    assert json.loads(message.body) == reading().payload
    assert message.message_id == "3f2a9c1e:42"
    assert message.properties == {"temperatureAlert": "true", "source": "bme680"}
    assert_valid(json.loads(message.body))
    assert b" " not in message.body.replace(b"pi-kitchen", b"")


def test_pack_array_uses_first_reading_id() -> None:
    """Packed readings: a JSON array; message_id is the first reading's; alert if any alerts."""
    readings = [reading(1), reading(2, alert=True), reading(3)]
    message = pack(readings, as_array=True)
    body = json.loads(message.body)
    assert [r["seq"] for r in body] == [1, 2, 3]
    assert message.message_id == "3f2a9c1e:1"
    assert message.properties["temperatureAlert"] == "true"
    assert_valid(body)
    assert pack([reading(1)], as_array=True).properties["temperatureAlert"] == "false"
    assert json.loads(pack([reading(1)], as_array=True).body)[0]["seq"] == 1


def test_pack_refuses_nothing_or_unpacked_many() -> None:
    """No readings, or several without an array, is a programming error."""
    with pytest.raises(ValueError):
        pack([], as_array=True)
    with pytest.raises(ValueError):
        pack([reading(1), reading(2)], as_array=False)


@pytest.mark.parametrize("bad", ["", "x" * 129, "pi\nkitchen", "pi\x00", "\ud800"])
def test_bad_device_ids_refused(bad: str) -> None:
    """A device id that cannot travel in a message is refused up front."""
    with pytest.raises(ValueError):
        check_device_id(bad)


@settings(deadline=None)  # timing belongs in bench/, not in tests
@given(device_id=st.text(min_size=1, max_size=128).filter(lambda s: s.isprintable()))
def test_any_printable_device_id_encodes_and_validates(device_id: str) -> None:
    """Hostile but printable device ids (quotes, <script>, emoji) encode to valid JSON."""
    try:
        check_device_id(device_id)
    except ValueError:
        return  # surrogates
    r = build_reading(
        device_id=device_id,
        boot="abcdef01",
        seq=1,
        ts=TS,
        source="simulated",
        values=VALUES,
        calibration=0,
        flags=[],
        alert=False,
    )
    body = json.loads(pack([r], as_array=False).body)
    assert body["deviceId"] == device_id
    assert_valid(body)


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
flag_names = st.sampled_from(["gas_unstable", "humidity_out_of_range", "temperature_invalid"])


@st.composite
def waiting_readings(draw: st.DrawFn) -> list[Reading]:
    """A backlog: runs of boots and sources, random device ids, values and flags."""
    out: list[Reading] = []
    for b in range(draw(st.integers(min_value=1, max_value=3))):
        boot = f"{b:016x}"
        source = draw(st.sampled_from(["bme680", "simulated"]))
        device_id = draw(st.text(min_size=1, max_size=128).filter(str.isprintable))
        try:
            check_device_id(device_id)
        except ValueError:
            device_id = "pi"
        for seq in range(1, draw(st.integers(min_value=1, max_value=40)) + 1):
            out.append(
                build_reading(
                    device_id=device_id,
                    boot=boot,
                    seq=seq,
                    ts=TS,
                    source=source,  # type: ignore[arg-type]
                    values={k: draw(st.one_of(st.none(), finite)) for k in VALUES},
                    calibration=draw(st.integers(min_value=0, max_value=2**31)),
                    flags=draw(st.lists(flag_names, max_size=3)),
                    alert=draw(st.booleans()),
                )
            )
    return out


@settings(max_examples=40, deadline=None)
@given(waiting=waiting_readings(), per_message=st.integers(min_value=1, max_value=500))
def test_plan_message_packs_under_4kb_in_order(waiting: list[Reading], per_message: int) -> None:
    """Draining any backlog with any readingsPerMessage: every reading once and in order; each
    message within 4096 bytes (unless one reading alone is bigger), one boot and source each,
    an object only for readingsPerMessage 1 and a single reading; alert if any alerts."""
    left = list(waiting)
    sent: list[tuple[str, int]] = []
    while left:
        message = plan_message(left, readings_per_message=per_message, flush=True)
        assert message is not None
        assert message.size <= MESSAGE_UNIT_BYTES or message.count == 1
        decoded = json.loads(message.body)
        items = decoded if isinstance(decoded, list) else [decoded]
        assert isinstance(decoded, list) == (per_message > 1 or message.count > 1)
        assert len(items) == message.count
        assert len({(r["boot"], r["source"]) for r in items}) == 1
        assert message.message_id == f"{items[0]['boot']}:{items[0]['seq']}"
        assert message.properties["source"] == items[0]["source"]
        alert = any(r.alert for r in left[: message.count])
        assert message.properties["temperatureAlert"] == ("true" if alert else "false")
        if message.count < len(left) and left[message.count].boot == left[0].boot:
            # it stopped early only because the next reading would not fit
            bigger = pack(left[: message.count + 1], as_array=True)
            assert bigger.size > MESSAGE_UNIT_BYTES
        sent.extend((r["boot"], r["seq"]) for r in items)
        left = left[message.count :]
    assert sent == [(r.boot, r.seq) for r in waiting]


def test_plan_message_waits_for_a_full_pack() -> None:
    """Without flush, a pack shorter than readingsPerMessage waits, unless another boot
    follows (the run is closed) or the pack is full by size."""
    readings = [reading(seq) for seq in range(1, 4)]
    assert plan_message(readings, readings_per_message=5, flush=False) is None
    assert plan_message(readings, readings_per_message=3, flush=False) is not None
    other = dict(reading(1).payload, boot="00000000000000ff")
    closed = [*readings, Reading(payload=other, alert=False)]
    message = plan_message(closed, readings_per_message=5, flush=False)
    assert message is not None and message.count == 3
    many = [reading(seq) for seq in range(1, 40)]
    message = plan_message(many, readings_per_message=500, flush=False)
    assert message is not None and 10 < message.count < 39
    assert plan_message([], readings_per_message=1, flush=True) is None
    with pytest.raises(ValueError):
        plan_message(readings, readings_per_message=0, flush=True)


def test_single_reading_message_is_an_object() -> None:
    """readingsPerMessage 1 and one reading waiting: the body is the reading itself."""
    message = plan_message([reading(1)], readings_per_message=1, flush=False)
    assert message is not None
    assert json.loads(message.body) == reading(1).payload
