"""History: one Table row per reading, idempotent, bounded in time.

PartitionKey is the escaped device id; RowKey is ``<UTC time, fixed width>_<boot>_<seq>``, so
rows sort by time within a device, a range query is a RowKey range, and a replayed reading lands
on its own row again (upsert, REPLACE) instead of adding one. Writes go in transactions of at
most 100 entities (the service's limit; Azurite answers a larger one with a response the SDK
cannot parse), all in one partition.

Retention: :meth:`HistoryStore.prune` deletes at most ``max_rows`` of a device's rows older
than a cutoff per call; the processor calls it for each device it touches at most once per
``prune_interval`` per worker, so the work per batch stays bounded and a device that keeps
sending keeps its history trimmed.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

from azure.core.rest import HttpRequest
from azure.data.tables import EdmType, EntityProperty, TableClient, UpdateMode

from enviromon_sink.keys import escape_key, unescape_key
from enviromon_sink.normalise import Reading
from enviromon_sink.store import TRANSIENT_STATUS, int64, translate_errors

_log = logging.getLogger(__name__)

#: The service's limit on entities per transaction.
MAX_TRANSACTION: Final = 100
_TS_FORMAT: Final = "%m%dT%H%M%S%fZ"  # after the 4-digit year


def row_key(reading: Reading) -> str:
    """Sortable by time, unique per (boot, seq)."""
    seq = reading.seq if reading.seq is not None else 0
    return f"{time_key(reading.ts)}_{escape_key(reading.boot)}_{seq:020d}"


def time_key(ts: datetime) -> str:
    """The fixed-width time prefix of a RowKey (UTC, microseconds).

    The year is padded by hand: ``strftime("%Y")`` gives ``999``, not ``0999``, on glibc, which
    would sort a year-999 reading after every year-2026 one.
    """
    utc = ts.astimezone(UTC)
    return f"{utc.year:04d}{utc.strftime(_TS_FORMAT)}"


def to_row(reading: Reading) -> dict[str, Any]:
    """The history entity of one reading."""
    return {
        "PartitionKey": escape_key(reading.device_id),
        "RowKey": row_key(reading),
        "DeviceId": reading.device_id,
        "ModuleId": reading.module_id or "",
        "Label": reading.label or "",
        "Boot": reading.boot,
        "Seq": int64(reading.seq if reading.seq is not None else -1),
        "Ts": reading.ts,
        "Source": reading.source,
        "Values": json.dumps(dict(reading.values), separators=(",", ":")),
        "Calibration": reading.calibration,
        "Flags": json.dumps(list(reading.flags), separators=(",", ":")),
        "Alert": reading.alert,
    }


def reading_json(reading: Reading) -> dict[str, Any]:
    """A reading as the dashboard, the REST API and Web PubSub see it (JSON-ready).

    Metric values are top-level keys (``temperature``...), as in the telemetry message.
    """
    out: dict[str, Any] = {
        "deviceId": reading.device_id,
        "moduleId": reading.module_id,
        "label": reading.label,
        "boot": reading.boot,
        "seq": reading.seq,
        "ts": _iso(reading.ts),
        "source": reading.source,
    }
    out.update(reading.values)
    out.update(
        {"calibration": reading.calibration, "flags": list(reading.flags), "alert": reading.alert}
    )
    return out


def row_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored history row as :func:`reading_json` gives it."""
    ts = row["Ts"]
    seq = int(getattr(row["Seq"], "value", row["Seq"]))
    out: dict[str, Any] = {
        "deviceId": row.get("DeviceId") or unescape_key(str(row["PartitionKey"])),
        "moduleId": row.get("ModuleId") or None,
        "label": row.get("Label") or None,
        "boot": row["Boot"],
        "seq": seq if seq >= 0 else None,
        "ts": _iso(ts) if isinstance(ts, datetime) else str(ts),
        "source": row.get("Source"),
    }
    values = json.loads(row.get("Values", "{}"))
    if isinstance(values, dict):
        out.update(values)
    out.update(
        {
            "calibration": int(row.get("Calibration", 0)),
            "flags": json.loads(row.get("Flags", "[]")),
            "alert": bool(row.get("Alert", False)),
        }
    )
    return out


class HistoryStore:
    """The history table."""

    def __init__(self, *, table: TableClient) -> None:
        """Wrap ``table`` (it must exist)."""
        self._table = table

    def write(self, readings: Iterable[Reading]) -> int:
        """Upsert one row per reading; returns the number of transactions sent.

        Idempotent: the same reading always lands on the same row. Raises
        TransientStoreError on transient failures (the caller re-runs the batch).
        """
        return upsert_rows(self._table, (to_row(r) for r in readings))

    def query(
        self, device_id: str, start: datetime, end: datetime, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """The device's readings with ``start <= ts < end``, oldest first, at most ``limit``."""
        if limit <= 0:
            return []
        params = {
            "pk": escape_key(device_id),
            "lo": time_key(start),
            "hi": time_key(end),
        }
        out: list[dict[str, Any]] = []
        with translate_errors():
            pages = self._table.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                parameters=params,
                results_per_page=min(limit, 1000),
            )
            for row in pages:
                out.append(row_json(row))
                if len(out) >= limit:
                    break
        return out

    def prune(self, device_id: str, before: datetime, *, max_rows: int = MAX_TRANSACTION) -> int:
        """Delete up to ``max_rows`` of the device rows older than ``before``; return how many."""
        keys: list[str] = []
        with translate_errors():
            pages = self._table.query_entities(
                "PartitionKey eq @pk and RowKey lt @hi",
                parameters={"pk": escape_key(device_id), "hi": time_key(before)},
                select=["PartitionKey", "RowKey"],
                results_per_page=min(max_rows, 1000),
            )
            for row in pages:
                keys.append(str(row["RowKey"]))
                if len(keys) >= max_rows:
                    break
            pk = escape_key(device_id)
            for start in range(0, len(keys), MAX_TRANSACTION):
                chunk = keys[start : start + MAX_TRANSACTION]
                self._table.submit_transaction(
                    [("delete", {"PartitionKey": pk, "RowKey": rk}) for rk in chunk]
                )
        return len(keys)


def upsert_rows(table: TableClient, rows: Iterable[Mapping[str, Any]]) -> int:
    """Upsert (REPLACE) rows in per-partition transactions of ≤ 100; returns transactions sent.

    Rows with the same keys are collapsed first (a transaction may not touch a row twice);
    the last one wins.
    """
    by_partition: dict[str, dict[str, Mapping[str, Any]]] = {}
    for row in rows:
        by_partition.setdefault(str(row["PartitionKey"]), {})[str(row["RowKey"])] = row
    sent = 0
    with translate_errors():
        for partition in by_partition.values():
            batch: Sequence[Mapping[str, Any]] = list(partition.values())
            for start in range(0, len(batch), MAX_TRANSACTION):
                _write_chunk(table, batch[start : start + MAX_TRANSACTION])
                sent += 1
    return sent


# -- a lean entity-group transaction --------------------------------------------------------
#
# azure-data-tables 12.7 builds a transaction with the email package and applies its policies to
# every part on a fresh thread pool. Measured on this dev box against Azurite (docs/sink.md):
# 0.30 ms of client CPU per row in transactions of 100 (0.66 ms in transactions of 10), against
# 0.03 ms (0.12 ms) here; end to end, bench_sink's load (20,000 readings, each batch twice)
# ran at 1922-2145 readings/s with 8 workers and this writer, 1263-1298 with the SDK's (2
# workers: 2220-2415 against 1220-1255). Only with the 2 cores saturated by other work was
# Azurite the bottleneck and both level (~1100-1200). This writes the same documented wire
# format ("Performing entity group transactions": OData $batch, multipart/mixed, CRLF, one PUT
# per entity = insert-or-replace) and sends it through the same SDK pipeline (shared-key or SAS
# signing, retries, transport).
#
# Safety: only a 202 whose changeset answered 2xx for every row is taken as done. The service
# answers a failed changeset with 202 and ONE part (the failed operation's 4xx), so a failure
# can never pass for a success; anything else, including a response this cannot parse, is sent
# again through the SDK's submit_transaction (upserts are idempotent), whose errors are precise.
# If the SDK then succeeds where this writer was refused (a non-transient status, or an SDK
# whose private layout changed), the service or SDK does not take this format: the writer
# switches itself off for that endpoint, so the cost is one extra request, once.

_STATUS_RE: Final = re.compile(rb"^HTTP/1\.1 (\d{3}) ", re.MULTILINE)
_INT32: Final = range(-(2**31), 2**31)
#: Endpoints where the SDK succeeded after this writer was refused: the SDK's path only.
_LEAN_OFF: set[str] = set()
_LEAN_OFF_LOCK: Final = threading.Lock()
#: The writer could not be used at all (SDK layout, value type).
UNAVAILABLE: Final = -1


def _write_chunk(table: TableClient, rows: Sequence[Mapping[str, Any]]) -> None:
    endpoint = table.url.split("?", 1)[0].rstrip("/")
    refused: int | None = UNAVAILABLE
    if endpoint not in _LEAN_OFF:
        refused = lean_upsert(table, rows)
        if refused is None:
            return
    table.submit_transaction([("upsert", dict(row), {"mode": UpdateMode.REPLACE}) for row in rows])
    if refused not in TRANSIENT_STATUS and endpoint not in _LEAN_OFF:
        with _LEAN_OFF_LOCK:
            _LEAN_OFF.add(endpoint)
        _log.warning(
            "lean $batch writer refused (status %s) where the SDK succeeded: using the SDK's"
            " transactions for %s from now on",
            refused,
            endpoint,
        )


def lean_upsert(table: TableClient, rows: Sequence[Mapping[str, Any]]) -> int | None:
    """Send ``rows`` (one partition, ≤ 100) as one insert-or-replace transaction.

    Returns:
        None when the service answered 202 and 2xx for every row; otherwise the status that
        refused it (the batch's, the failed part's, 0 for a response that cannot be parsed,
        :data:`UNAVAILABLE` when the SDK's layout or a value type does not allow it).
    """
    try:
        client = table._client
        base = table.url.split("?", 1)[0].rstrip("/")
        name = table.table_name
        version = table.api_version
        bodies = [
            json.dumps(_odata(row), ensure_ascii=True, separators=(",", ":")).encode()
            for row in rows
        ]
    except (AttributeError, TypeError):  # a different SDK layout, or a type not handled here
        return UNAVAILABLE
    batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
    parts = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode()]
    for index, (row, body) in enumerate(zip(rows, bodies, strict=True)):
        keys = f"PartitionKey='{_key(row['PartitionKey'])}',RowKey='{_key(row['RowKey'])}'"
        parts.append(
            (
                f"--{changeset}\r\n"
                "Content-Type: application/http\r\n"
                "Content-Transfer-Encoding: binary\r\n"
                f"Content-ID: {index}\r\n\r\n"
                f"PUT {base}/{name}({keys}) HTTP/1.1\r\n"
                "Content-Type: application/json\r\n"
                "Accept: application/json;odata=nometadata\r\n"
                "DataServiceVersion: 3.0\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
            + b"\r\n"
        )
    parts.append(f"--{changeset}--\r\n\r\n--{batch}--\r\n".encode())
    request = HttpRequest(
        "POST",
        f"{base}/$batch",
        headers={
            # Without it the real service takes the request as its oldest version, which has
            # no JSON (Azurite does not care): the SDK's own $batch sends it too.
            "x-ms-version": version,
            "Content-Type": f"multipart/mixed; boundary={batch}",
            "Accept": "application/json",
            "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx",
        },
        content=b"".join(parts),
    )
    try:
        response = client.send_request(request, stream=True)
    except TypeError:  # send_request's signature changed
        return UNAVAILABLE
    body = response.read()  # all of it, so the connection goes back to the pool
    if response.status_code != 202:
        return int(response.status_code)
    return refused_status(body, len(rows))


def refused_status(body: bytes, rows: int) -> int | None:
    """None when a $batch response body holds exactly ``rows`` parts, all 2xx; else why not.

    Returns the first non-2xx part's status, or 0 when the count of parts is not ``rows``.
    """
    statuses = [int(m) for m in _STATUS_RE.findall(body)]
    failed = next((s for s in statuses if not 200 <= s < 300), None)
    if failed is not None:
        return failed
    return None if len(statuses) == rows else 0


def _key(value: Any) -> str:
    return quote(str(value).replace("'", "''"), safe="~")


def _odata(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as OData JSON with the type annotations the Table service needs."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        if value is None:
            continue
        if isinstance(value, EntityProperty):
            if value.edm_type != EdmType.INT64:
                raise TypeError(f"{name}: only Int64 EntityProperty supported here")
            out[name] = str(int(value.value))
            out[f"{name}@odata.type"] = "Edm.Int64"
        elif isinstance(value, bool | str):
            out[name] = value
        elif isinstance(value, int):
            if value in _INT32:
                out[name] = value
            else:
                out[name] = str(value)
                out[f"{name}@odata.type"] = "Edm.Int64"
        elif isinstance(value, float):
            out[name] = value
            out[f"{name}@odata.type"] = "Edm.Double"
        elif isinstance(value, datetime):
            out[name] = _iso(value)
            out[f"{name}@odata.type"] = "Edm.DateTime"
        else:
            raise TypeError(f"{name}: {type(value).__name__} is not a Table property type here")
    return out


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
