"""The schema-1 telemetry envelope, its encoding, and packing several readings per message.

A reading::

    {"schema":1,"deviceId":"pi-kitchen","boot":"3f2a9c1e","seq":42,
     "ts":"2026-11-25T03:20:00.123Z","source":"bme680","temperature":21.4,"humidity":45.2,
     "pressure":1012.8,"gasResistance":152000,"iaq":87.5,"calibration":3,"flags":[]}

A message body is one reading (``readingsPerMessage`` = 1) or a JSON array of readings. The body
is compact UTF-8 JSON. ``message_id`` is ``"<boot>:<seq>"``; for a packed message it is the
boot and seq of its *first* reading (the sink counts readings by their own boot/seq, so this id
only has to be unique per message, which it is: seqs never repeat within a boot). Application
properties: ``temperatureAlert`` ("true" when any reading in the message is at or above the alert
threshold, as the Raspberry Pi web simulator sends it) and ``source``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .metrics import edge_metrics
from .reading import SourceKind

SCHEMA_VERSION = 1
CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"
MAX_DEVICE_ID_LENGTH = 128


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


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message ready for a Publisher.

    Attributes:
        body: the encoded body (one reading, or an array when packing).
        message_id: ``"<boot>:<seq>"`` of the first reading.
        properties: application properties: ``temperatureAlert`` and ``source``.
        readings: the readings inside, in order.
    """

    body: bytes
    message_id: str
    properties: dict[str, str]
    readings: tuple[Reading, ...]


def pack(readings: Sequence[Reading], *, as_array: bool) -> OutgoingMessage:
    """One message from one or more readings.

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
    body = encode([r.payload for r in readings] if as_array else first.payload)
    return OutgoingMessage(
        body=body,
        message_id=f"{first.boot}:{first.seq}",
        properties={
            "temperatureAlert": "true" if any(r.alert for r in readings) else "false",
            "source": first.source,
        },
        readings=tuple(readings),
    )
