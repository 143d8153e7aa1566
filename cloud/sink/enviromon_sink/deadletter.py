"""Dead letters: every event the sink could not accept, with the reason and the raw body.

One row per event. PartitionKey is the escaped hub device id (``~nodevice`` when the hub gave
none: no escaped id can equal it, as ``~`` is always followed by two hex digits). RowKey is the
enqueued time (so rows sort by time) and a hash of what identifies the event — its partition
sequence number, message id, enqueued time, device and body — so a replayed event lands on its
own row again instead of adding one.

The whole body is kept, up to IoT Hub's 256 KiB: a text body (UTF-8 without control
characters) of at most :data:`MAX_TEXT_CHARS` characters as ``Body`` (readable in any table
browser), anything else as raw bytes split across binary properties ``Body0``, ``Body1``, … of
at most 64 KiB each (a property's limit; the entity holds 1 MiB). ``BodyParts`` says how many,
``BodyBytes`` is the original size, ``BodyTruncated`` is true only beyond 256 KiB.
Transactions are cut by size as well as count (a transaction carries at most 4 MiB).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

from azure.data.tables import EdmType, EntityProperty, TableClient, UpdateMode

from enviromon_sink.events import InboundEvent
from enviromon_sink.keys import escape_key
from enviromon_sink.storage import DeadLetter
from enviromon_sink.tables import (
    MAX_TRANSACTION,
    MAX_TRANSACTION_BYTES,
    int64,
    time_key,
    translate_errors,
)

__all__ = ["NO_DEVICE_PARTITION", "DeadLetter", "DeadLetterTable", "row_key", "to_row"]

NO_DEVICE_PARTITION: Final = "~nodevice"
#: A text body up to this many characters is kept as text (≤ 64 KiB even if all are astral).
MAX_TEXT_CHARS: Final = 16_000
#: The whole body is kept up to this many bytes (IoT Hub's largest message).
MAX_KEPT_BYTES: Final = 256 * 1024
#: Bytes per binary property (the service's limit for one property).
PART_BYTES: Final = 64 * 1024
MAX_REASON_CHARS: Final = 1000
MAX_FIELD_CHARS: Final = 256
_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def row_key(event: InboundEvent) -> str:
    """Sortable by enqueued time, the same for a replay of the same event."""
    digest = hashlib.sha256()
    for part in (
        str(event.sequence_number),
        event.message_id or "",
        event.enqueued_time.isoformat() if event.enqueued_time else "",
        event.device_id or "",
        event.module_id or "",
    ):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\x00")
    digest.update(bytes(event.body) if isinstance(event.body, bytes | bytearray) else b"")
    when = time_key(event.enqueued_time) if event.enqueued_time else "00000000T000000000000Z"
    return f"{when}_{digest.hexdigest()[:40]}"


def to_row(letter: DeadLetter) -> dict[str, Any]:
    """The dead-letter entity for one refused event."""
    event = letter.event
    body = bytes(event.body) if isinstance(event.body, bytes | bytearray) else b""
    seq_no = event.sequence_number
    row: dict[str, Any] = {
        "PartitionKey": escape_key(event.device_id) if event.device_id else NO_DEVICE_PARTITION,
        "RowKey": row_key(event),
        "Reason": _clip(_storable(letter.reason), MAX_REASON_CHARS),
        "DeviceId": _clip(_storable(event.device_id), MAX_FIELD_CHARS),
        "ModuleId": _clip(_storable(event.module_id), MAX_FIELD_CHARS),
        "MessageId": _clip(_storable(event.message_id), MAX_FIELD_CHARS),
        "SequenceNumber": int64(seq_no if isinstance(seq_no, int) else -1),
        "BodyBytes": len(body),
        "Properties": _clip(_properties(event), 2000),
    }
    if event.enqueued_time is not None:
        row["EnqueuedTime"] = event.enqueued_time
    text = _text(body)
    if text is not None and len(text) <= MAX_TEXT_CHARS:
        row["Body"] = text
        row["BodyParts"] = 0
    else:
        kept = body[:MAX_KEPT_BYTES]
        parts = [kept[i : i + PART_BYTES] for i in range(0, len(kept), PART_BYTES)]
        for i, part in enumerate(parts):
            row[f"Body{i}"] = EntityProperty(part, EdmType.BINARY)
        row["BodyParts"] = len(parts)
    row["BodyTruncated"] = len(body) > MAX_KEPT_BYTES
    return row


def body_of(row: dict[str, Any]) -> bytes:
    """The body a dead-letter row keeps, as bytes (text or the binary parts joined)."""
    if "Body" in row:
        return str(row["Body"]).encode("utf-8")
    parts = int(row.get("BodyParts", 0))
    return b"".join(bytes(getattr(row[f"Body{i}"], "value", row[f"Body{i}"])) for i in range(parts))


def _size(row: dict[str, Any]) -> int:
    """A row's rough size on the wire (binary goes as base64 in JSON)."""
    return 2048 + len(str(row.get("Body", ""))) * 2 + int(row["BodyBytes"]) * 4 // 3


class DeadLetterTable:
    """The dead-letter table."""

    def __init__(self, *, table: TableClient) -> None:
        """Wrap ``table`` (it must exist)."""
        self._table = table

    def write(self, letters: Iterable[DeadLetter]) -> int:
        """Upsert one row per refused event (idempotent); returns transactions sent."""
        by_partition: dict[str, dict[str, dict[str, Any]]] = {}
        for letter in letters:
            row = to_row(letter)
            by_partition.setdefault(row["PartitionKey"], {})[row["RowKey"]] = row
        sent = 0
        with translate_errors():
            for rows in by_partition.values():
                chunk: list[dict[str, Any]] = []
                size = 0
                for row in rows.values():
                    if chunk and (
                        len(chunk) >= MAX_TRANSACTION or size + _size(row) > MAX_TRANSACTION_BYTES
                    ):
                        self._submit(chunk)
                        sent += 1
                        chunk, size = [], 0
                    chunk.append(row)
                    size += _size(row)
                if chunk:
                    self._submit(chunk)
                    sent += 1
        return sent

    def _submit(self, rows: list[dict[str, Any]]) -> None:
        self._table.submit_transaction(
            [("upsert", row, {"mode": UpdateMode.REPLACE}) for row in rows]
        )

    def list(self, device_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Dead-lettered rows, of one device (or of events without a device id) or all."""
        out: list[dict[str, Any]] = []
        with translate_errors():
            if device_id is None:
                pages = self._table.list_entities(results_per_page=min(limit, 1000))
            else:
                pages = self._table.query_entities(
                    "PartitionKey eq @pk",
                    parameters={"pk": escape_key(device_id) if device_id else NO_DEVICE_PARTITION},
                )
            for row in pages:
                out.append(dict(row))
                if len(out) >= limit:
                    break
        return out


def _text(body: bytes) -> str | None:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if _CONTROL_RE.search(text) else text


def _properties(event: InboundEvent) -> str:
    try:
        pairs: Sequence[tuple[str, str]] = [
            (str(k)[:64], str(v)[:256]) for k, v in list(event.properties.items())[:32]
        ]
    except Exception:  # hostile mapping from an adapter: keep the dead letter anyway
        return "{}"
    return json.dumps(dict(pairs), ensure_ascii=True)


def _storable(text: str | None) -> str:
    """``text`` with lone surrogates (they have no UTF-8 form) as U+FFFD.

    A refused event must be storable whatever its ids hold: Azurite keeps such a string, but a
    row the real service refused as invalid text would fail the batch on every retry.
    """
    if not text:
        return ""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit]
