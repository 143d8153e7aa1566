"""Dead letters: every event the sink could not accept, with the reason and the raw body.

One row per event. PartitionKey is the escaped hub device id (``~nodevice`` when the hub gave
none: no escaped id can equal it, as ``~`` is always followed by two hex digits). RowKey is the
enqueued time (so rows sort by time) and a hash of what identifies the event — its partition
sequence number, message id, enqueued time, device and body — so a replayed event lands on its
own row again instead of adding one.

A Table property holds at most 64 KiB (32 K UTF-16 characters), so the body is kept truncated:
as text when it is UTF-8 without control characters, else base64; ``BodyBytes`` is the original
size and ``BodyTruncated`` says whether anything was cut.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from azure.data.tables import TableClient

from enviromon_sink.events import InboundEvent
from enviromon_sink.history import time_key, upsert_rows
from enviromon_sink.keys import escape_key
from enviromon_sink.store import int64, translate_errors

NO_DEVICE_PARTITION: Final = "~nodevice"
#: Characters of a text body kept (≤ 16 K UTF-16 units even if all are astral).
MAX_BODY_CHARS: Final = 8000
#: Bytes of a binary body kept (base64: 8000 characters).
MAX_BODY_BYTES: Final = 6000
MAX_REASON_CHARS: Final = 1000
MAX_FIELD_CHARS: Final = 256
_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event the sink refused, and why."""

    event: InboundEvent
    reason: str


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
    if text is not None:
        row["Body"] = text[:MAX_BODY_CHARS]
        row["BodyTruncated"] = len(text) > MAX_BODY_CHARS
    else:
        row["BodyBase64"] = base64.b64encode(body[:MAX_BODY_BYTES]).decode("ascii")
        row["BodyTruncated"] = len(body) > MAX_BODY_BYTES
    return row


class DeadLetterStore:
    """The dead-letter table."""

    def __init__(self, *, table: TableClient) -> None:
        """Wrap ``table`` (it must exist)."""
        self._table = table

    def write(self, letters: Iterable[DeadLetter]) -> int:
        """Upsert one row per refused event (idempotent); returns transactions sent."""
        return upsert_rows(self._table, (to_row(x) for x in letters))

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
