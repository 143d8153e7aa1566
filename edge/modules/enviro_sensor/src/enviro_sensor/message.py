"""The schema-1 telemetry envelope, its encoding, and packing several readings per message.

A reading::

    {"schema":1,"deviceId":"pi-kitchen","boot":"3f2a9c1e","seq":42,
     "ts":"2026-11-25T03:20:00.123Z","source":"bme680","temperature":21.4,"humidity":45.2,
     "pressure":1012.8,"gasResistance":152000,"iaq":87.5,"calibration":3,"flags":[]}

A message body is one reading or a JSON array of readings, compact UTF-8 JSON. The body is an
array whenever ``readingsPerMessage`` > 1, and whenever a backlog is drained (several readings
waiting); it is one object only for ``readingsPerMessage`` 1 and a message of one reading.
:func:`plan_message` keeps every message within one IoT Hub billing unit (4096 bytes: body and
properties, see :func:`message_size`); a reading that alone is over it goes alone.

``message_id`` is ``"<boot>:<seq>"``; for an array it is the boot and seq of its *first*
reading. A message never mixes boots or sources, so the id names the boot of every reading in
it, and it is unique per message: a seq is in one message only, and never repeats within a boot.
(The sink counts readings by their own boot and seq, not by the message id.) Application
properties: ``temperatureAlert`` ("true" when any reading in the message is at or above the alert
threshold, as the Raspberry Pi web simulator sends it) and ``source``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from .metrics import edge_metrics
from .reading import SourceKind

SCHEMA_VERSION = 1
CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"
MAX_DEVICE_ID_LENGTH = 128
MESSAGE_UNIT_BYTES = 4096  # IoT Hub meters messages in 4 KB units (S1/S2/S3)
HUB_PROPERTY_ALLOWANCE = 256  # room for the system properties the hub stamps on a message


def new_boot_id() -> str:
    """A random id for this module start: 16 lowercase hex digits (64 bits).

    64 bits keep two starts of one device from sharing an id (which would make the sink count
    the second start's readings as duplicates) even over millions of restarts; schema 1 allows
    8 to 32 hex digits.
    """
    return secrets.token_hex(8)


def format_ts(moment: datetime) -> str:
    """UTC ISO 8601 with milliseconds and ``Z``, e.g. ``2026-11-25T03:20:00.123Z``.

    Raises:
        ValueError: ``moment`` is naive (no timezone): its UTC time would be a guess.
    """
    if moment.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def check_device_id(device_id: str) -> str:
    """Return ``device_id`` if it can travel in a message; it is a label, not an identity.

    Raises:
        ValueError: empty, longer than 128 characters, or with control or unencodable characters.
    """
    if not isinstance(device_id, str) or not 1 <= len(device_id) <= MAX_DEVICE_ID_LENGTH:
        raise ValueError(f"device id must be 1..{MAX_DEVICE_ID_LENGTH} characters")
    if not device_id.isprintable():
        raise ValueError("device id must not contain control characters")
    try:
        device_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("device id is not valid Unicode text") from exc
    return device_id


@dataclass(frozen=True, slots=True)
class Reading:
    """One schema-1 reading, ready to encode, and whether it raised the temperature alert.

    Attributes:
        payload: the schema-1 object (JSON-ready).
        alert: temperature at or above ``alerts.temperatureHigh``.
    """

    payload: dict[str, Any]
    alert: bool

    @property
    def boot(self) -> str:
        """The boot id."""
        return str(self.payload["boot"])

    @property
    def seq(self) -> int:
        """The sequence number within the boot."""
        return int(self.payload["seq"])

    @property
    def source(self) -> str:
        """The source: bme680 or simulated."""
        return str(self.payload["source"])

    @property
    def body(self) -> bytes:
        """The reading's compact JSON (see :func:`encode`)."""
        return encode(self.payload)


def build_reading(
    *,
    device_id: str,
    boot: str,
    seq: int,
    ts: datetime,
    source: SourceKind,
    values: Mapping[str, float | int | None],
    calibration: int,
    flags: Sequence[str],
    alert: bool,
) -> Reading:
    """Assemble one reading in schema-1 key order.

    ``values`` must already be validated and rounded (see :mod:`enviro_sensor.validation`); the
    metrics table's required edge keys are always present, null when absent; optional ones only
    when they have a value. Duplicate flags are dropped,
    keeping their first position, because the schema wants unique items.
    """
    payload: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "deviceId": device_id,
        "boot": boot,
        "seq": seq,
        "ts": format_ts(ts),
        "source": source,
    }
    # The metrics table names the value keys, in its order (docs/contract.md's example's). An
    # optional one (light, pressureSeaLevel) is sent only when there is a value, so a BME680's
    # message is what it always was.
    for m in edge_metrics():
        value = values.get(m.key)
        if value is not None or not m.optional:
            payload[m.key] = value
    payload["calibration"] = calibration
    payload["flags"] = list(dict.fromkeys(flags))
    return Reading(payload=payload, alert=alert)


def encode(body: object) -> bytes:
    """Compact UTF-8 JSON. NaN/inf are refused (they are not JSON): validation nulls them first.

    Raises:
        ValueError: the body holds NaN or infinity.
    """
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


class Packable(Protocol):
    """One encoded reading as packing sees it (a :class:`Reading` or a buffer entry)."""

    @property
    def boot(self) -> str:
        """The boot id."""
        ...

    @property
    def seq(self) -> int:
        """The seq within the boot."""
        ...

    @property
    def source(self) -> str:
        """bme680 or simulated."""
        ...

    @property
    def alert(self) -> bool:
        """The reading raised the temperature alert."""
        ...

    @property
    def body(self) -> bytes:
        """The reading's compact JSON (one object)."""
        ...


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message ready for a Publisher.

    Attributes:
        body: the encoded body (one reading, or an array when packing).
        message_id: ``"<boot>:<seq>"`` of the first reading.
        properties: application properties: ``temperatureAlert`` and ``source``.
        readings: the readings inside, in order (:class:`Reading` objects or buffer entries).
    """

    body: bytes
    message_id: str
    properties: dict[str, str]
    readings: tuple[Packable, ...]

    @property
    def count(self) -> int:
        """Readings inside."""
        return len(self.readings)

    @property
    def size(self) -> int:
        """The bytes IoT Hub meters for this message (see :func:`message_size`)."""
        return message_size(self.body, message_id=self.message_id, properties=self.properties)


def message_size(body: bytes, *, message_id: str, properties: Mapping[str, str]) -> int:
    """What IoT Hub counts of a message: body + system property values + application properties.

    The hub meters the body, the values of the system properties and the names and values of the
    application properties (not a protocol's framing). Ours are the message id, content type and
    encoding; :data:`HUB_PROPERTY_ALLOWANCE` leaves room for the ones the hub stamps itself
    (connection device and module id, enqueued time, ...), whose exact accounting is not
    documented.
    """
    props = sum(len(k.encode()) + len(v.encode()) for k, v in properties.items())
    system = len(message_id.encode()) + len(CONTENT_TYPE) + len(CONTENT_ENCODING)
    return len(body) + props + system + HUB_PROPERTY_ALLOWANCE


def _properties(items: Sequence[Packable]) -> dict[str, str]:
    return {
        "temperatureAlert": "true" if any(r.alert for r in items) else "false",
        "source": items[0].source,
    }


def pack(readings: Sequence[Packable], *, as_array: bool) -> OutgoingMessage:
    """One message from one or more readings (no size check: see :func:`plan_message`).

    Args:
        readings: at least one reading, in seq order.
        as_array: send a JSON array even for one reading (``readingsPerMessage`` > 1); with
            False there must be exactly one reading and the body is that object.

    Raises:
        ValueError: no readings, or several without ``as_array``.
    """
    if not readings:
        raise ValueError("a message needs at least one reading")
    if not as_array and len(readings) != 1:
        raise ValueError("several readings must be packed as an array")
    first = readings[0]
    body = b"[" + b",".join(r.body for r in readings) + b"]" if as_array else first.body
    return OutgoingMessage(
        body=body,
        message_id=f"{first.boot}:{first.seq}",
        properties=_properties(readings),
        readings=tuple(readings),
    )


def plan_message(
    waiting: Sequence[Packable],
    *,
    readings_per_message: int,
    flush: bool,
    limit: int = MESSAGE_UNIT_BYTES,
) -> OutgoingMessage | None:
    """The next message from the oldest readings waiting, or None when it should wait for more.

    The rules:

    - A message holds readings of one boot and one source only (its id and ``source``
      property speak for all of them).
    - It takes as many of the oldest readings as fit in ``limit`` bytes (:func:`message_size`),
      so a backlog drains in packs; a reading that alone is over the limit goes alone.
    - The body is one object only with ``readingsPerMessage`` 1 and one reading in the message;
      otherwise it is an array (even of one).
    - It goes now when it has ``readings_per_message`` readings, or is full by size, or no
      later reading can join it (the next one waiting is of another boot or source), or
      ``flush`` (stopping, draining, ``readNow``); else None: wait for more readings.

    Raises:
        ValueError: ``readings_per_message`` < 1.
    """
    if readings_per_message < 1:
        raise ValueError(f"readings_per_message must be >= 1, got {readings_per_message}")
    if not waiting:
        return None
    first = waiting[0]
    run = 1
    while run < len(waiting) and (waiting[run].boot, waiting[run].source) == (
        first.boot,
        first.source,
    ):
        run += 1
    # The size with k readings: fixed + their bodies and commas + len("true"/"false").
    first_props = _properties([first])
    fixed = message_size(
        b"[]", message_id=f"{first.boot}:{first.seq}", properties=first_props
    ) - len(first_props["temperatureAlert"])
    alert = first.alert
    bodies = len(first.body)
    taken = 1
    while taken < run:
        nxt = waiting[taken]
        more_bodies = bodies + len(nxt.body) + 1  # and its comma
        more_alert = alert or nxt.alert
        if fixed + more_bodies + len("true" if more_alert else "false") > limit:
            break
        bodies, alert = more_bodies, more_alert
        taken += 1
    ready = (
        flush
        or taken >= readings_per_message
        or taken < run  # full by size
        or run < len(waiting)  # the next reading is of another boot or source
    )
    if not ready:
        return None
    items = waiting[:taken]
    return pack(items, as_array=readings_per_message > 1 or taken > 1)
