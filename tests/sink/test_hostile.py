"""Hostile input: hundreds of bad bodies, mixed with good readings, in real batches on Azurite.

Every bad body is dead-lettered with a reason, nothing crashes, and every good reading in the
same batches is counted.
"""

from __future__ import annotations

import json
import re
from typing import Any

from enviromon_sink.deadletter import body_of
from enviromon_sink.events import InboundEvent
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.sink.helpers import event, reading_body
from tests.sink.sinks import history_rows, make_sink, rows
from tests.support.azurite import unique_prefix

GOOD = reading_body(1)
GOOD_TEXT = json.dumps(GOOD)

HAND_PICKED: list[bytes] = [
    GOOD_TEXT[:40].encode(),  # truncated
    GOOD_TEXT[:-1].encode(),
    b"",
    b"   ",
    b"null",
    b"true",
    b"42",
    b'"a string"',
    b"[]",
    b"{}",
    b"[null]",
    b"[1, 2, 3]",
    b'[{"junk": true}, "x", 3]',
    b'{"temperature": NaN}',
    b'{"temperature": Infinity}',
    b'{"temperature": -Infinity, "humidity": 40}',
    json.dumps({**GOOD, "temperature": "NaN"}).encode(),
    b'{"temperature": 1e400}',
    b'{"temperature": 123456789012345678901234567890}',
    json.dumps({**GOOD, "seq": 2**64}).encode(),
    json.dumps({**GOOD, "seq": -1}).encode(),
    json.dumps({**GOOD, "seq": 1.5}).encode(),
    json.dumps({**GOOD, "seq": "1"}).encode(),
    json.dumps({**GOOD, "boot": None}).encode(),
    json.dumps({**GOOD, "schema": "1"}).encode(),
    json.dumps({**GOOD, "flags": "gas_unstable"}).encode(),
    json.dumps({**GOOD, "flags": [None]}).encode(),
    json.dumps({**GOOD, "calibration": -1}).encode(),
    json.dumps({**GOOD, "humidity": [45]}).encode(),
    json.dumps({**GOOD, "pressure": {"v": 1000}}).encode(),
    json.dumps({**GOOD, "source": "<b>bme680</b>"}).encode(),
    json.dumps({**GOOD, "ts": "2026-13-45T99:99:99Z"}).encode(),
    json.dumps({**GOOD, "ts": "<script>"}).encode(),
    json.dumps({**GOOD, "evil": "<script>alert(1)</script>"}).encode(),
    json.dumps({"temperature": 500, "humidity": 500}).encode(),
    json.dumps({"temperature": None}).encode(),
    json.dumps({"Temperature": 20, "Celsius": 21}).encode(),
    json.dumps({"temperature": 20, "geo": "<svg onload=alert(1)>"}).encode(),
    json.dumps({"temperature": 20, "geo": {"lat": {"deep": 1}}}).encode(),
    json.dumps({"messageId": "1; DROP TABLE", "temperature": 20}).encode(),
    json.dumps({"ambient": {"temperature": "hot"}, "machine": {}, "timeCreated": "now"}).encode(),
    json.dumps({"ambient": {}, "machine": {}, "timeCreated": "2026-11-25T03:20:00Z"}).encode(),
    b'{"temperature": 20, "temperature": 21}',
    b"[" * 10_000 + b"]" * 10_000,
    b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
    b"\xff\xfe\xfd",
    b'{"deviceId": "\xc3\x28", "temperature": 20}',
    b"\xed\xa0\x80",  # a UTF-8-encoded lone surrogate
    b"<html><body><script>alert(1)</script></body></html>",
    b'{"x": "' + b"a" * 10_000_000 + b'"}',  # 10 MB
    json.dumps([GOOD] * 501).encode(),  # too many packed readings
    json.dumps([GOOD, {**GOOD, "seq": "two"}]).encode(),  # one bad item spoils the message
    json.dumps({"schema": 1}).encode(),
    b"\x00" * 100,
]

_wrong = (
    st.text(max_size=30).filter(lambda t: not re.fullmatch(r"[0-9a-f]{8,32}", t))
    | st.lists(st.integers(), min_size=1, max_size=3)
    | st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)
    | st.booleans()
    | st.integers(min_value=10**21, max_value=10**30)
)
_mutated = st.builds(
    lambda key, value: json.dumps({**GOOD, key: value}).encode(),
    st.sampled_from(["schema", "seq", "boot", "ts", "source", "calibration", "flags"]),
    _wrong,
)
_truncated = st.integers(min_value=0, max_value=len(GOOD_TEXT) - 1).map(
    lambda n: GOOD_TEXT[:n].encode()
)
_deep = st.integers(min_value=9, max_value=3000).map(lambda d: b"[" * d + b"]" * d)
_junk = st.binary(min_size=1, max_size=200).filter(lambda b: not b.strip().startswith(b"{"))
_hostile = st.one_of(_mutated, _truncated, _deep, _junk)


def _run(conn: str, bodies: list[bytes]) -> None:
    """Interleave the hostile bodies with good readings; check both outcomes."""
    prefix = unique_prefix()
    sink = make_sink(conn, prefix)
    events: list[InboundEvent] = []
    good = 0
    for i, body in enumerate(bodies):
        events.append(event(body, device="pi-hostile", seq_no=2 * i + 1))
        if i % 3 == 0:
            good += 1
            events.append(event(reading_body(good), device="pi-good", seq_no=2 * i + 2))
    result = sink.process(events)
    assert result.dead_lettered == len(bodies)
    assert len(result.readings) == good and {r["deviceId"] for r in result.readings} == {"pi-good"}
    letters = rows(conn, prefix, "deadletter")
    assert len(letters) == len(bodies)
    assert all(row["Reason"] for row in letters)
    assert {int(row["SequenceNumber"]) for row in letters} == {
        2 * i + 1 for i in range(len(bodies))
    }
    for row in letters:  # the raw body is kept (text, or base64 when it is not clean UTF-8)
        raw = bodies[(int(row["SequenceNumber"]) - 1) // 2]
        kept = body_of(row)
        assert raw.startswith(kept) and int(row["BodyBytes"]) == len(raw)
        assert bool(row["BodyTruncated"]) == (len(kept) < len(raw))
    devices: dict[str, Any] = {d["deviceId"]: d for d in sink.list_devices()}
    assert devices["pi-good"]["count"] == good and devices["pi-good"]["missing"] == 0
    assert devices["pi-hostile"]["count"] == 0
    assert devices["pi-hostile"]["rejected"] == len(bodies)
    assert len(history_rows(conn, prefix)) == good


def test_hand_picked_hostile_bodies(azurite: str) -> None:
    """Hand-picked hostile bodies (10 MB, deep nesting, NaN, markup...) are all dead-lettered."""
    assert len(HAND_PICKED) >= 50
    _run(azurite, HAND_PICKED)


# Each example is a real batch on Azurite: no shrinking, so a failure costs seconds, not minutes
# (the pure parsing properties in test_normalise shrink freely).
@settings(
    max_examples=4,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(_hostile, min_size=50, max_size=50))
def test_generated_hostile_bodies(azurite: str, bodies: list[bytes]) -> None:
    """Hypothesis-made hostile bodies (4 × 50) are all dead-lettered; good readings all count."""
    _run(azurite, bodies)


def test_spoofed_body_device_id_counts_under_the_hub_id(azurite: str, table_prefix: str) -> None:
    """A body naming another device is counted under the hub's device id; the other is untouched."""
    sink = make_sink(azurite, table_prefix)
    sink.process([event(reading_body(1, label="pi-victim"), device="pi-attacker")])
    devices = {d["deviceId"]: d for d in sink.list_devices()}
    assert set(devices) == {"pi-attacker"}
    assert devices["pi-attacker"]["label"] == "pi-victim" and devices["pi-attacker"]["count"] == 1


COSMETIC = [
    ({**GOOD, "deviceId": "<script>alert(1)</script>"}, "<script>alert(1)</script>", ()),
    ({**GOOD, "deviceId": '"><img src=x onerror=alert(1)>'}, '"><img src=x onerror=alert(1)>', ()),
    ({**GOOD, "deviceId": "Küche"}, "Küche", ()),
    ({**GOOD, "deviceId": "lab/pi-1"}, "lab/pi-1", ()),
    ({**GOOD, "deviceId": "x" * 10_000}, None, ("label_dropped",)),
    ({**GOOD, "deviceId": 42}, None, ("label_dropped",)),
    ({"deviceId": "<script>", "temperature": 20}, "<script>", ()),
    ({"deviceId": "pi\u0000kitchen", "temperature": 20}, None, ("label_dropped",)),
    ({"temperature": 20, "Colour": "<b>red</b>", "extra": [1]}, None, ("unknown_field",)),
]


def test_cosmetic_fields_never_cost_a_reading(azurite: str) -> None:
    """Odd labels are kept as text (or dropped and flagged); unknown legacy fields are flagged."""
    sink = make_sink(azurite, unique_prefix())
    events = []
    for i, (body, _, _) in enumerate(COSMETIC):
        body = {**body, "seq": i + 1} if "schema" in body else body
        events.append(event(body, device=f"pi-{i}", seq_no=i + 1))
    result = sink.process(events)
    assert result.dead_lettered == 0 and len(result.readings) == len(COSMETIC)
    for reading, (body, label, flags) in zip(result.readings, COSMETIC, strict=True):
        assert reading["label"] == label, body
        assert set(flags) <= set(reading["flags"]) and reading["temperature"] is not None
        assert "Colour" not in reading and "extra" not in reading
