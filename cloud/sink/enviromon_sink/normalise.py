"""Turn one hub event into readings, whatever accepted schema its body uses.

Pure: bytes and hub metadata in, :class:`Reading` objects out, or a
:class:`~enviromon_sink.errors.RejectedMessageError` whose ``reason`` goes to the dead-letter table.

Accepted bodies (see docs/sink.md):

* ours, schema 1 (contract/telemetry-v1.schema.json), one reading or a packed array of them;
* the Raspberry Pi web simulator's ``{"messageId", "deviceId", "temperature", "humidity"}``;
* the original enviromon function's fields (``deviceId|DeviceId``,
  ``temperature|Temperature|Celsius``, ``humidity|Humidity``, ``pressure|Pressure|hPa|HPa``,
  ``light|Light``, ``messageId|Id``, ``geo``);
* IoT Edge's SimulatedTemperatureSensor ``{"machine": {...}, "ambient": {...}, "timeCreated"}``.

Identity always comes from the hub (``event.device_id``); a body's ``deviceId`` is kept only as a
label. Bodies without a boot and seq of their own (every schema but ours) get a *synthetic boot*:
``~hub`` with the event's partition sequence number as seq. The hub assigns that number when it
accepts the message, so a redelivery carries the same number (exactly-once holds) and a restarted
web simulator, whose ``messageId`` starts again at 1, is not mistaken for a replay. Only when the
host gives no sequence number does the body's ``messageId`` serve (boot ``~msg``), and failing
that the enqueued time in microseconds (boot ``~time``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from enviromon_sink import metrics
from enviromon_sink.errors import RejectedMessageError
from enviromon_sink.events import InboundEvent
from enviromon_sink.keys import stream_key

#: IoT Hub's largest message; anything bigger did not come through a hub.
MAX_BODY_BYTES: Final = 256 * 1024
#: Deepest JSON nesting any accepted schema needs is 3; leave room, refuse the rest unparsed.
MAX_DEPTH: Final = 8
#: The schema's ``maxItems`` for a packed array.
MAX_READINGS_PER_BODY: Final = 500
MAX_LABEL_CHARS: Final = 128
MAX_FLAGS: Final = 32
MAX_ID_CHARS: Final = 128
#: Table Storage Int64; seq beyond this cannot be stored.
MAX_SEQ: Final = 2**63 - 1
MAX_CALIBRATION: Final = 2**31 - 1
#: A reading stamped further ahead of the hub's enqueued time than this gets the enqueued
#: time instead (a Pi has no real-time clock) and the ``clock_skew`` flag.
CLOCK_AHEAD: Final = timedelta(minutes=5)
#: ...and likewise one stamped further behind (edge buffers hold readings for days, not this).
CLOCK_BEHIND: Final = timedelta(days=31)
CLOCK_SKEW_FLAG: Final = "clock_skew"
LABEL_DROPPED_FLAG: Final = "label_dropped"
UNKNOWN_FIELD_FLAG: Final = "unknown_field"

#: Synthetic boots start with ``~``, which a real (hex) boot never does.
SYNTHETIC_PREFIX: Final = "~"
BOOT_HUB: Final = "~hub"
BOOT_MESSAGE_ID: Final = "~msg"
BOOT_TIME: Final = "~time"

SOURCE_SIMULATED: Final = "simulated"
SOURCE_LEGACY: Final = "legacy"
WEB_SIMULATOR_LABEL: Final = "Raspberry Pi Web Client"

_BOOT_RE: Final = re.compile(r"[0-9a-f]{8,32}")
_FLAG_RE: Final = re.compile(r"[a-z][a-zA-Z0-9_]{0,63}")
_TS_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z")
# .NET writes 7 fractional digits and may give an offset (SimulatedTemperatureSensor).
_LOOSE_TS_RE: Final = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})"
)
_STRUCTURE_RE: Final = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)

_OUR_KEYS: Final = frozenset(
    {"schema", "deviceId", "boot", "seq", "ts", "source", "calibration", "flags"}
)
_OUR_SOURCES: Final = frozenset({"bme680", "bme280", "simulated"})
_LEGACY_ALIASES: Final[Mapping[str, tuple[str, ...]]] = {
    "label": ("deviceId", "DeviceId"),
    "temperature": ("temperature", "Temperature", "Celsius"),
    "humidity": ("humidity", "Humidity"),
    "pressure": ("pressure", "Pressure", "hPa", "HPa"),
    "light": ("light", "Light"),
    "messageId": ("messageId", "Id"),
    "geo": ("geo",),
}
_LEGACY_KEYS: Final = frozenset(k for names in _LEGACY_ALIASES.values() for k in names)
_SIM_SENSOR_KEYS: Final = frozenset({"machine", "ambient", "timeCreated"})


@dataclass(frozen=True, slots=True)
class Reading:
    """One accepted reading, in the sink's own shape.

    Attributes:
        device_id: the hub's device id (never the body's).
        module_id: the hub's module id, when a module sent it.
        label: the body's ``deviceId``, if any: shown, never trusted.
        boot: the sender's boot id, or a synthetic one (starts with ``~``).
        seq: position within the boot; None never occurs for accepted readings today but is
            allowed by the type for callers building readings by hand.
        ts: when the reading was taken (UTC); the enqueued time when the body has none.
        source: ``bme680``, ``simulated`` or ``legacy``.
        values: metric key → value (rounded to the table's decimals) or None.
        calibration: twin ``$version`` of the calibration applied; 0 = none.
        flags: the device's flags plus ``<key>_out_of_range`` for values the sink refused.
        alert: the ``temperatureAlert`` property said "true", or temperature ≥ the threshold.
        enqueued: when the hub accepted the event (None when the host did not say).
    """

    device_id: str
    module_id: str | None
    label: str | None
    boot: str
    seq: int | None
    ts: datetime
    source: str
    values: Mapping[str, float | None]
    calibration: int = 0
    flags: tuple[str, ...] = field(default=())
    alert: bool = False
    enqueued: datetime | None = None

    @property
    def synthetic_boot(self) -> bool:
        """Whether the boot was made up by the sink (seq gaps then mean nothing)."""
        return self.boot.startswith(SYNTHETIC_PREFIX)

    @property
    def stream_id(self) -> str:
        """The (device, module) stream's stable id (``keys.stream_key``)."""
        return stream_key(self.device_id, self.module_id)

    def to_json(self) -> dict[str, Any]:
        """The reading as the dashboard, the REST API and Web PubSub see it (JSON-ready).

        Metric values are top-level keys (``temperature``...), as in the telemetry message.
        """
        out: dict[str, Any] = {
            "streamId": self.stream_id,
            "deviceId": self.device_id,
            "moduleId": self.module_id,
            "label": self.label,
            "boot": self.boot,
            "seq": self.seq,
            "ts": iso(self.ts),
            "source": self.source,
        }
        out.update(self.values)
        out.update(
            {"calibration": self.calibration, "flags": list(self.flags), "alert": self.alert}
        )
        return out


def iso(ts: datetime) -> str:
    """``ts`` as ISO 8601 UTC with microseconds and ``Z``."""
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def normalise(event: InboundEvent, *, temperature_alert: float | None = None) -> list[Reading]:
    """Turn one event into its readings.

    Args:
        event: the event as a host adapter built it.
        temperature_alert: temperature (°C) at or above which a reading is an alert; None for
            no threshold (the ``temperatureAlert`` property still counts).

    Returns:
        One reading, or several for a packed array, in body order.

    Raises:
        RejectedMessageError: the event cannot be accepted; ``reason`` says why.
    """
    device_id = _hub_id(event.device_id, "iothub-connection-device-id")
    if device_id is None:
        raise RejectedMessageError("no iothub-connection-device-id: the body is never identity")
    module_id = _hub_id(event.module_id, "iothub-connection-module-id")
    doc = parse_body(event.body)
    context = _Context(
        device_id=device_id,
        module_id=module_id,
        event=event,
        property_alert=_property_text(event.properties.get("temperatureAlert")) == "true",
        threshold=temperature_alert,
    )
    if isinstance(doc, list):
        if not doc:
            raise RejectedMessageError("empty array")
        if len(doc) > MAX_READINGS_PER_BODY:
            raise RejectedMessageError(f"packed array of {len(doc)} > {MAX_READINGS_PER_BODY}")
        out = []
        for index, item in enumerate(doc):
            if not isinstance(item, dict) or "schema" not in item:
                raise RejectedMessageError(f"item {index}: not a schema-1 reading object")
            try:
                out.append(_ours(item, context))
            except RejectedMessageError as exc:
                raise RejectedMessageError(f"item {index}: {exc.reason}") from None
        return out
    if not isinstance(doc, dict):
        raise RejectedMessageError(f"body is a JSON {type(doc).__name__}, not an object or array")
    if "schema" in doc:
        return [_ours(doc, context)]
    if "ambient" in doc or "machine" in doc:
        return [_simulated_temperature_sensor(doc, context)]
    if doc.keys() & _LEGACY_KEYS:
        return [_legacy(doc, context)]
    raise RejectedMessageError("unrecognised schema: no 'schema', 'ambient' or known legacy field")


def parse_body(body: bytes) -> Any:
    """Parse a body as strict JSON with bounds, or raise RejectedMessageError.

    Refuses: more than 256 KiB, invalid UTF-8, nesting deeper than ``MAX_DEPTH``, ``NaN`` and
    ``Infinity`` literals, numbers that overflow a float, integers over 20 digits, duplicate
    keys in an object.
    """
    if not isinstance(body, bytes | bytearray | memoryview):
        raise RejectedMessageError(f"body is {type(body).__name__}, not bytes")
    raw = bytes(body)
    if len(raw) > MAX_BODY_BYTES:
        raise RejectedMessageError(f"body of {len(raw)} bytes > {MAX_BODY_BYTES}")
    if not raw.strip():
        raise RejectedMessageError("empty body")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RejectedMessageError(f"body is not UTF-8 (byte {exc.start})") from None
    depth = _depth(raw)
    if depth > MAX_DEPTH:
        raise RejectedMessageError(f"JSON nested deeper than {MAX_DEPTH}")
    try:
        return json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
            object_pairs_hook=_unique_keys,
        )
    except RejectedMessageError:
        raise
    except RecursionError:
        raise RejectedMessageError("JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise RejectedMessageError(f"invalid JSON: {_clip(str(exc), 120)}") from None


@dataclass(frozen=True, slots=True)
class _Context:
    device_id: str
    module_id: str | None
    event: InboundEvent
    property_alert: bool
    threshold: float | None

    def alert(self, values: Mapping[str, float | None]) -> bool:
        temperature = values.get("temperature")
        return self.property_alert or (
            self.threshold is not None and temperature is not None and temperature >= self.threshold
        )


def _ours(doc: dict[str, Any], ctx: _Context) -> Reading:
    schema = doc.get("schema")
    if type(schema) is not int or schema != 1:
        raise RejectedMessageError(f"unsupported schema {_show(schema)}")
    expected = _OUR_KEYS | set(metrics.keys_for_schema1())
    missing = sorted((_OUR_KEYS | set(metrics.required_for_schema1())) - doc.keys())
    if missing:
        raise RejectedMessageError(f"schema 1: missing {', '.join(missing)}")
    extra = sorted(doc.keys() - expected)
    if extra:
        raise RejectedMessageError(f"schema 1: unknown field {_show(extra[0])}")
    label = _label(doc["deviceId"])
    notes = () if label is not None else (LABEL_DROPPED_FLAG,)
    boot = doc["boot"]
    if not isinstance(boot, str) or not _BOOT_RE.fullmatch(boot):
        raise RejectedMessageError("boot must be 8-32 lowercase hex digits")
    seq = doc["seq"]
    if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
        raise RejectedMessageError(f"seq must be an integer ≥ 1, got {_show(seq)}")
    ts_raw = doc["ts"]
    if not isinstance(ts_raw, str) or not _TS_RE.fullmatch(ts_raw):
        raise RejectedMessageError("ts must be ISO 8601 UTC with Z")
    ts = _parse_ts(ts_raw)
    source = doc["source"]
    if not isinstance(source, str) or source not in _OUR_SOURCES:
        raise RejectedMessageError(
            f"source must be bme680, bme280 or simulated, got {_show(source)}"
        )
    calibration = doc["calibration"]
    if type(calibration) is not int or not 0 <= calibration <= MAX_CALIBRATION:
        raise RejectedMessageError(f"calibration must be an integer ≥ 0, got {_show(calibration)}")
    flags = _flags(doc["flags"])
    values, refused = _values({k: doc[k] for k in metrics.keys_for_schema1() if k in doc})
    return _reading(
        ctx, label, boot, seq, ts, str(source), values, refused, calibration, flags, notes
    )


def _legacy(doc: dict[str, Any], ctx: _Context) -> Reading:
    # A field we do not know is left out, and the reading says so: it never costs the reading.
    notes: tuple[str, ...] = (UNKNOWN_FIELD_FLAG,) if doc.keys() - _LEGACY_KEYS else ()
    picked: dict[str, Any] = {}
    for name, aliases in _LEGACY_ALIASES.items():
        present = [a for a in aliases if a in doc]
        if len(present) > 1:
            raise RejectedMessageError(f"legacy body: both {present[0]} and {present[1]}")
        if present:
            picked[name] = doc[present[0]]
    label = None
    if picked.get("label") is not None:
        label = _label(picked["label"])
        if label is None:
            notes += (LABEL_DROPPED_FLAG,)
    if "geo" in picked:
        _check_geo(picked["geo"])
    message_id = picked.get("messageId")
    if message_id is not None and (type(message_id) is not int or not 0 <= message_id <= MAX_SEQ):
        raise RejectedMessageError(f"messageId must be an integer ≥ 0, got {_show(message_id)}")
    raw_values = {k: picked.get(k) for k in ("temperature", "humidity", "pressure", "light")}
    if all(v is None for v in raw_values.values()):
        raise RejectedMessageError("legacy body: no temperature, humidity, pressure or light")
    values, refused = _values(raw_values)
    source = SOURCE_SIMULATED if label == WEB_SIMULATOR_LABEL else SOURCE_LEGACY
    boot, seq = _synthetic_identity(ctx.event, message_id)
    ts = _enqueued(ctx.event)
    return _reading(ctx, label, boot, seq, ts, source, values, refused, 0, (), notes)


def _simulated_temperature_sensor(doc: dict[str, Any], ctx: _Context) -> Reading:
    unknown = sorted(doc.keys() - _SIM_SENSOR_KEYS)
    if unknown:
        raise RejectedMessageError(f"SimulatedTemperatureSensor: unknown field {_show(unknown[0])}")
    missing = sorted(_SIM_SENSOR_KEYS - doc.keys())
    if missing:
        raise RejectedMessageError(f"SimulatedTemperatureSensor: missing {', '.join(missing)}")
    ambient, machine = doc["ambient"], doc["machine"]
    if not isinstance(ambient, dict) or not isinstance(machine, dict):
        raise RejectedMessageError("SimulatedTemperatureSensor: ambient, machine must be objects")
    if set(ambient) - {"temperature", "humidity"}:
        raise RejectedMessageError("SimulatedTemperatureSensor: ambient has unknown fields")
    # The machine's temperature and pressure describe a simulated machine, not the room: checked
    # for type only, and not kept.
    if len(machine) > 8 or not all(_is_number(v) for v in machine.values()):
        raise RejectedMessageError("SimulatedTemperatureSensor: machine must hold numbers")
    created = doc["timeCreated"]
    if not isinstance(created, str):
        raise RejectedMessageError("SimulatedTemperatureSensor: timeCreated must be a string")
    ts = _parse_loose_ts(created)
    raw_values = {"temperature": ambient.get("temperature"), "humidity": ambient.get("humidity")}
    if all(v is None for v in raw_values.values()):
        raise RejectedMessageError("SimulatedTemperatureSensor: ambient has no values")
    values, refused = _values(raw_values)
    boot, seq = _synthetic_identity(ctx.event, None)
    return _reading(ctx, None, boot, seq, ts, SOURCE_SIMULATED, values, refused, 0, ())


def _reading(
    ctx: _Context,
    label: str | None,
    boot: str,
    seq: int,
    ts: datetime,
    source: str,
    values: dict[str, float | None],
    refused: list[str],
    calibration: int,
    flags: tuple[str, ...],
    notes: tuple[str, ...] = (),
) -> Reading:
    if refused and all(v is None for v in values.values()):
        raise RejectedMessageError(f"every value invalid ({', '.join(refused)} out of range)")
    ts, skewed = _bounded_ts(ts, ctx.event)
    if skewed:
        notes += (CLOCK_SKEW_FLAG,)
    extra = tuple(f"{key}_out_of_range" for key in refused) + notes
    extra = tuple(dict.fromkeys(f for f in extra if f not in flags))
    return Reading(
        device_id=ctx.device_id,
        module_id=ctx.module_id,
        label=label,
        boot=boot,
        seq=seq,
        ts=ts,
        source=source,
        values=values,
        calibration=calibration,
        flags=flags + extra,
        alert=ctx.alert(values),
        enqueued=_enqueued(ctx.event) if ctx.event.enqueued_time is not None else None,
    )


def _bounded_ts(ts: datetime, event: InboundEvent) -> tuple[datetime, bool]:
    """``ts``, or the hub's enqueued time when ``ts`` is beyond the tolerances of it."""
    if event.enqueued_time is None:
        return ts, False
    hub = _enqueued(event)
    if ts - hub > CLOCK_AHEAD or hub - ts > CLOCK_BEHIND:
        return hub, True
    return ts, False


def _values(raw: Mapping[str, Any]) -> tuple[dict[str, float | None], list[str]]:
    """Check each value's type and range; out-of-range values become None and are listed."""
    table = metrics.by_key()
    out: dict[str, float | None] = {}
    refused: list[str] = []
    for key, value in raw.items():
        if value is None:
            out[key] = None
            continue
        if not _is_number(value):
            raise RejectedMessageError(f"{key} must be a number or null, got {_show(value)}")
        number = float(value)
        metric = table[key]
        if not math.isfinite(number) or not metric.accepts(number):
            out[key] = None
            refused.append(key)
            continue
        out[key] = round(number, metric.decimals)
    return out, refused


def _synthetic_identity(event: InboundEvent, message_id: int | None) -> tuple[str, int]:
    if event.sequence_number is not None:
        if type(event.sequence_number) is not int or not 0 <= event.sequence_number <= MAX_SEQ:
            raise RejectedMessageError("hub sequence number out of range")
        return BOOT_HUB, event.sequence_number
    if message_id is not None:
        return BOOT_MESSAGE_ID, message_id
    enqueued = _enqueued(event)
    micros = (enqueued - _EPOCH) // timedelta(microseconds=1)
    return BOOT_TIME, max(micros, 0)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _enqueued(event: InboundEvent) -> datetime:
    if event.enqueued_time is None:
        raise RejectedMessageError("body has no timestamp and the hub gave no enqueued time")
    ts = event.enqueued_time
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _label(value: Any) -> str | None:
    """The body's ``deviceId`` as a label, or None when it breaks the id rule (then dropped).

    A label is cosmetic (identity is the hub's), so a bad one never costs the reading.
    """
    return value if valid_id_text(value) else None


def valid_id_text(value: Any) -> bool:
    """The one rule for device ids and labels, the edge's (``message.check_device_id``) too.

    1-128 characters, all printable (no control, format or separator characters but the
    space), valid Unicode (no lone surrogates). ``Küche`` and ``lab/pi-1`` pass; the dashboard
    shows ids and labels as text, never as HTML.
    """
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_CHARS:
        return False
    if not value.isprintable():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _flags(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_FLAGS:
        raise RejectedMessageError(f"flags must be a list of at most {MAX_FLAGS} strings")
    for flag in value:
        if not isinstance(flag, str) or not _FLAG_RE.fullmatch(flag):
            raise RejectedMessageError(f"bad flag {_show(flag)}")
    if len(set(value)) != len(value):
        raise RejectedMessageError("flags repeat")
    return tuple(value)


def _check_geo(value: Any) -> None:
    """``geo`` is accepted (the original function had it) but not kept: check its shape only."""
    if (
        isinstance(value, dict)
        and len(value) <= 8
        and all(isinstance(k, str) and len(k) <= 16 and _is_number(v) for k, v in value.items())
    ):
        return
    raise RejectedMessageError("geo must be an object of at most 8 numbers")


def valid_hub_id(value: str | None) -> str | None:
    """``value`` if it is a usable hub device/module id, else None (never raises)."""
    try:
        return _hub_id(value, "id")
    except RejectedMessageError:
        return None


def _hub_id(value: str | None, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not valid_id_text(value):
        raise RejectedMessageError(f"{name} is not a valid IoT Hub id")
    return value


def _parse_ts(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, OverflowError):
        raise RejectedMessageError(f"ts is not a valid time: {_show(text)}") from None


def _parse_loose_ts(text: str) -> datetime:
    match = _LOOSE_TS_RE.fullmatch(text)
    if match is None:
        raise RejectedMessageError(f"timeCreated is not ISO 8601: {_show(text)}")
    base, fraction, zone = match.groups()
    micro = (fraction or ".")[1:7].ljust(6, "0") if fraction else "000000"
    zone = "+00:00" if zone == "Z" else zone
    try:
        return datetime.fromisoformat(f"{base}.{micro}{zone}").astimezone(UTC)
    except (ValueError, OverflowError):  # year 1 with a positive offset has no UTC time
        raise RejectedMessageError(f"timeCreated is not a valid time: {_show(text)}") from None


def _depth(raw: bytes) -> int:
    """Deepest bracket nesting, skipping string contents; cheap enough for 256 KiB.

    With at most MAX_DEPTH opening brackets in all, their count (a bound) is returned.
    """
    opening = raw.count(b"[") + raw.count(b"{")
    if opening <= MAX_DEPTH:  # so few brackets cannot nest deeper (the common case: 2)
        return opening
    depth = deepest = 0
    for match in _STRUCTURE_RE.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    return deepest
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> float:
    raise RejectedMessageError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    if len(text) > 64:
        raise RejectedMessageError("number literal too long")
    value = float(text)
    if not math.isfinite(value):
        raise RejectedMessageError(f"number {_clip(text, 24)} overflows")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 20:
        raise RejectedMessageError("integer literal over 20 digits")
    return int(text)


def _unique_keys(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise RejectedMessageError(f"duplicate key {_show(key)}")
        out[key] = value
    return out


def _property_text(value: Any) -> str:
    """An application property as lower-case text (adapters may hand over bytes)."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    return str(value).strip().lower() if value is not None else ""


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _show(value: Any) -> str:
    return _clip(repr(value), 40)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
