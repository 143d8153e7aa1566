"""History in chunks: many readings of one stream per Table row; pure.

A stream's newly counted readings first go to its state row's ``Recent`` list (committed in the
same conditional write as the counts). When ``Recent`` holds :data:`FLUSH_AT` readings, spans
more than :data:`SPAN`, or grows past :data:`MAX_RECENT_CHARS`, :func:`plan` cuts it into
chunks — each at most :data:`SPAN` wide and :data:`MAX_CHUNK_CHARS` of JSON — that become
history rows in that same transaction. So in steady state a reading costs about one Table
operation (its share of the state write), not two, and a history read returns dozens of
readings per row.

Every reading is in exactly one place (``Recent`` or one chunk) because both change in one
atomic transaction; readers still drop repeats by :func:`sort_key` (rows written ahead of a
transaction that then lost a race, see streams.py, may repeat readings).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from enviromon_sink.keys import escape_key, stream_key
from enviromon_sink.normalise import Reading, iso
from enviromon_sink.tables import time_key

#: ``Recent`` is flushed into history rows at this many readings.
FLUSH_AT: Final = 32
#: The readings of one chunk lie within this much time (readers look back this far).
SPAN: Final = timedelta(hours=1)
#: ``Recent`` is flushed when its JSON would exceed this (a string property holds 32 K chars).
MAX_RECENT_CHARS: Final = 24_000
#: A chunk's JSON stays below this.
MAX_CHUNK_CHARS: Final = 30_000

Item = dict[str, Any]


def compact(reading: Reading) -> Item:
    """A counted reading as it is kept in ``Recent`` and in chunks (short keys)."""
    item: Item = {
        "b": reading.boot,
        "s": reading.seq if reading.seq is not None else -1,
        "t": iso(reading.ts),
        "src": reading.source,
        "v": dict(reading.values),
        "c": reading.calibration,
        "f": list(reading.flags),
        "a": reading.alert,
    }
    if reading.label is not None:
        item["l"] = reading.label
    return item


def expand(item: Item, device_id: str, module_id: str | None) -> dict[str, Any]:
    """A kept reading in the shape ``Reading.to_json`` gives (the REST API's)."""
    seq = int(item["s"])
    out: dict[str, Any] = {
        "streamId": stream_key(device_id, module_id),
        "deviceId": device_id,
        "moduleId": module_id,
        "label": item.get("l"),
        "boot": item["b"],
        "seq": seq if seq >= 0 else None,
        "ts": item["t"],
        "source": item["src"],
    }
    out.update(item["v"])
    out.update({"calibration": item["c"], "flags": list(item["f"]), "alert": bool(item["a"])})
    return out


def ts_of(item: Item) -> datetime:
    """The reading time of a kept reading."""
    return datetime.fromisoformat(str(item["t"]).replace("Z", "+00:00")).astimezone(UTC)


def sort_key(item: Item) -> str:
    """Time order within a stream, unique per (boot, seq): ``<time>_<boot>_<seq>``."""
    return f"{time_key(ts_of(item))}_{escape_key(str(item['b']))}_{int(item['s']):020d}"


def dumps(items: Iterable[Item]) -> str:
    """Items as compact JSON."""
    return json.dumps(list(items), separators=(",", ":"), ensure_ascii=False)


def loads(text: str | None) -> list[Item]:
    """Inverse of :func:`dumps` (empty for a missing property); ValueError on anything else."""
    if not text:
        return []
    items = json.loads(text)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ValueError("kept readings must be a JSON list of objects")
    return items


def plan(recent: Sequence[Item], new: Sequence[Item]) -> tuple[list[list[Item]], list[Item]]:
    """What a commit writes: the chunks to store as history rows, and the new ``Recent``."""
    cut, kept, _ = plan_dumped(recent, new)
    return cut, kept


def plan_dumped(
    recent: Sequence[Item], new: Sequence[Item]
) -> tuple[list[list[Item]], list[Item], str]:
    """:func:`plan`, and the new ``Recent`` as :func:`dumps` gives it (made once, not twice)."""
    items = [*recent, *new]
    if not items:
        return [], [], "[]"
    times = [ts_of(i) for i in items]
    if len(items) < FLUSH_AT and max(times) - min(times) <= SPAN:
        text = dumps(items)
        if len(text) <= MAX_RECENT_CHARS:
            return [], items, text
    return _cut(items), [], "[]"


def _cut(items: list[Item]) -> list[list[Item]]:
    ordered = sorted(items, key=sort_key)
    chunks: list[list[Item]] = []
    current: list[Item] = []
    first: datetime | None = None
    chars = 2
    for item in ordered:
        size = len(dumps([item]))
        when = ts_of(item)
        if current and (first is None or when - first > SPAN or chars + size > MAX_CHUNK_CHARS):
            chunks.append(current)
            current, chars = [], 2
        if not current:
            first = when
        current.append(item)
        chars += size
    if current:
        chunks.append(current)
    return chunks
