"""Streams in one Azure Table: state and history rows of many streams share a partition.

Layout of ``<prefix>streams`` (docs/sink.md has the why):

* PartitionKey = ``b00`` … ``b07``: a stable hash of the escaped device id
  (``keys.bucket_of``), so one transaction can commit several devices at once;
* state row of a stream: RowKey ``s$<stream key>``, with the counts and ``Recent``: the
  newest counted readings not yet in a history row (chunks.py);
* history row of a chunk of readings: RowKey ``h$<stream key>$<first reading's sort key>``
  (``<UTC time>_<boot>_<seq, 20 digits>``), holding up to an hour of the stream's readings.

``load`` reads the state rows a batch needs, per bucket, in queries of at most 13 keys (a
filter holds at most 15 comparisons; a RowKey lower bound keeps the scan in the state rows,
which sort last in a bucket). ``commit``
sends, per bucket, transactions of at most 100 operations: for each stream the history chunks
its ``Recent`` was cut into, if any, and its state row (``update`` with the loaded ETag,
``IfNotModified``, or ``create``). A transaction is atomic, so a stream's state is never
committed without its history rows; another stream's conflict fails the whole transaction,
and those streams are simply sent again.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Final

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from enviromon_sink import chunks, rollups
from enviromon_sink.counting import BootMark, DeviceState
from enviromon_sink.errors import CorruptStateError
from enviromon_sink.keys import (
    bucket_of,
    buckets,
    escape_key,
    prefix_end,
    row_prefix,
    split_stream_key,
    stream_key,
)
from enviromon_sink.rest import SdkCalls, TableCalls
from enviromon_sink.storage import HistoryPage, Loaded, Outcome, Status, StreamWrite
from enviromon_sink.tables import (
    MAX_TRANSACTION,
    as_int,
    int64,
    time_key,
    translate_errors,
)

_log = logging.getLogger(__name__)

#: What a stream's state row keeps besides its counts: Recent readings, open rollup buckets,
#: and ``HistoryFrom``: the time key of its oldest history row ("" none, None unknown).
_Kept = tuple[list[chunks.Item], rollups.Open, str | None]

STATE: Final = "s"
HISTORY: Final = "h"
ROLLUP: Final = "r"
#: Streams whose oldest history row (as this worker last saw it, or as a prune left it) is kept.
PRUNE_MEMORY: Final = 10_000
#: Keys per load query: PartitionKey eq + RowKey ge + 13 RowKey eq = 15 comparisons, the
#: service's limit. A lower bound is enough: state rows (``s$``) sort after every history
#: (``h$``) and rollup (``r$``) row of a bucket, so the scan from it stays in state rows.
KEYS_PER_QUERY: Final = 13
#: Above this many wanted keys in one bucket, one range read of the bucket's state rows.
RANGE_LOAD_AT: Final = 4 * KEYS_PER_QUERY
#: The columns of a state row that hold the counts (``Recent``, ``Rollup`` are the rest).
STATE_COLUMNS: Final = (
    "RowKey",
    "DeviceId",
    "ModuleId",
    "Count",
    "Duplicates",
    "Missing",
    "Rejected",
    "RejectedSeq",
    "Boot",
    "LastSeq",
    "Boots",
    "ForgottenUs",
    "LastSeen",
    "Values",
    "Source",
    "Calibration",
    "Alert",
    "Flags",
    "Label",
)
#: Statuses that say "this operation's entity is unacceptable": confined to its stream.
_STREAM_FAULTS: Final = frozenset({400, 413})
_CONFLICT_CODES: Final = frozenset(
    {"UpdateConditionNotSatisfied", "ConditionNotMet", "EntityAlreadyExists", "ResourceNotFound"}
)


def state_row_key(key: str) -> str:
    """RowKey of a stream's state row."""
    return row_prefix(STATE) + key


def chunk_row_key(key: str, chunk: Sequence[chunks.Item]) -> str:
    """RowKey of a history chunk: the stream's prefix and its first reading's sort key."""
    return row_prefix(HISTORY, key) + chunks.sort_key(chunk[0])


class TableStreamStore:
    """:class:`storage.StreamStore` on one Azure Table (or Azurite)."""

    def __init__(
        self,
        *,
        table: TableClient,
        calls: TableCalls | None = None,
        cache_size: int = 50_000,
    ) -> None:
        """Wrap ``table`` (the streams table; it must exist).

        ``calls``: how the hot path's transactions and state queries are sent
        (``rest.for_table``); by default the SDK's own calls.
        ``cache_size``: streams whose loaded ``Recent`` is kept between ``load`` and ``commit``.
        """
        if cache_size < 1:
            raise ValueError("cache_size must be ≥ 1")
        self._table = table
        self._calls = calls or SdkCalls(table=table)
        # (stream key, ETag) → the Recent readings and open rollup buckets of that version.
        self._recent: OrderedDict[tuple[str, str], _Kept] = OrderedDict()
        self._cache_size = cache_size
        # stream key → HistoryFrom of the newest version of its state row seen here.
        self._history_from: OrderedDict[str, str | None] = OrderedDict()
        # stream key → a cutoff below which a prune here left none of its history rows.
        self._pruned_to: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def _remember(self, key: str, etag: str, recent: _Kept) -> None:
        with self._lock:
            self._recent[(key, etag)] = recent
            self._recent.move_to_end((key, etag))
            while len(self._recent) > self._cache_size:
                self._recent.popitem(last=False)
            _put(self._history_from, key, recent[2])

    def _recalled(self, key: str, etag: str) -> _Kept | None:
        with self._lock:
            return self._recent.get((key, etag))

    # -- state --------------------------------------------------------------------------

    def groups(self, keys: Collection[str]) -> list[list[str]]:
        """``keys`` by bucket (one partition: transactions can hold them).

        Buckets in the order of their first key, keys sorted: every worker goes through the
        same streams in the same order.
        """
        by_bucket: dict[str, list[str]] = {}
        for key in sorted(set(keys)):
            by_bucket.setdefault(bucket_of(key), []).append(key)
        return list(by_bucket.values())

    def load(self, keys: Collection[str]) -> dict[str, Loaded]:
        """The stored state of each stream key; a request per bucket per 13 keys."""
        out = {key: Loaded(None, None) for key in keys}
        with translate_errors():
            for wanted in self.groups(keys):
                for entity, etag in self._query_states(bucket_of(wanted[0]), wanted):
                    key = str(entity["RowKey"])[len(row_prefix(STATE)) :]
                    if key in out:
                        out[key] = loaded = _loaded(entity, etag)
                        if loaded.error is None and loaded.etag is not None:
                            self._remember(
                                key,
                                loaded.etag,
                                (
                                    _recent_of(entity),
                                    rollups.load_open(entity.get("Rollup")),
                                    _history_from_of(entity),
                                ),
                            )
        return out

    def _query_states(self, bucket: str, wanted: list[str]) -> list[tuple[dict[str, Any], str]]:
        if len(wanted) > RANGE_LOAD_AT:
            # Many keys of one bucket: one range read (pages of 1,000) beats many queries.
            return self._calls.query(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey le @hi",
                {"pk": bucket, "lo": state_row_key(wanted[0]), "hi": state_row_key(wanted[-1])},
            )
        found: list[tuple[dict[str, Any], str]] = []
        for start in range(0, len(wanted), KEYS_PER_QUERY):
            chunk = wanted[start : start + KEYS_PER_QUERY]
            params = {"pk": bucket, "lo": state_row_key(chunk[0])}
            ors = []
            for i, key in enumerate(chunk):
                params[f"k{i}"] = state_row_key(key)
                ors.append(f"RowKey eq @k{i}")
            found.extend(
                self._calls.query(
                    f"PartitionKey eq @pk and RowKey ge @lo and ( {' or '.join(ors)} )", params
                )
            )
        return found

    def commit(self, writes: Sequence[StreamWrite]) -> dict[str, Outcome]:
        """Commit each stream's state with its history rows, per bucket, atomically per stream.

        Raises:
            TransientStoreError: 5xx, 408, 429 or a connection failure (after the SDK's retries).
        """
        out: dict[str, Outcome] = {}
        by_bucket: dict[str, list[StreamWrite]] = {}
        for write in writes:
            by_bucket.setdefault(bucket_of(write.key), []).append(write)
        for bucket, group in by_bucket.items():
            parts = []
            for write in group:
                ops = self._stream_ops(write)
                if ops is None:  # its Recent is unknown here: load it again
                    out[write.key] = Outcome(Status.CONFLICT)
                    continue
                history, state_op, recent = ops
                # Chunks that do not fit beside the state (a stream with thousands of new
                # readings in one batch) go first, in transactions of their own; readers drop
                # the readings such a row repeats if the state write then loses a race.
                head = len(history) - (MAX_TRANSACTION - 1)
                if head > 0 and not self._send_rows(bucket, write.key, history[:head], out):
                    continue
                parts.append((write.key, [*history[max(head, 0) :], state_op], recent))
            for transaction in _pack(bucket, parts):
                out.update(self._send(transaction, isolate=True))
        return out

    def _stream_ops(
        self, write: StreamWrite
    ) -> tuple[list[tuple[Any, ...]], tuple[Any, ...], _Kept] | None:
        history_from: str | None
        if write.etag is None:
            recent: list[chunks.Item] = []
            opened: rollups.Open = {}
            history_from = ""  # a new stream has no history rows yet
        else:
            known = self._recalled(write.key, write.etag)
            if known is None:
                return None
            recent, opened, history_from = known
        new = [chunks.compact(r) for r in write.readings]
        cut, kept, kept_text = chunks.plan_dumped(recent, new)
        if cut and history_from is not None:  # unknown (a legacy row) stays unknown
            oldest = min(time_key(chunks.ts_of(chunk[0])) for chunk in cut)
            history_from = min(history_from, oldest) if history_from else oldest
        opened, closed = rollups.add(opened, write.readings)
        history = [
            ("upsert", chunk_row(write.state, chunk), {"mode": UpdateMode.REPLACE}) for chunk in cut
        ]
        if closed:
            # Unique per commit: named after the first reading this commit counted.
            suffix = chunks.sort_key(new[0])
            history.extend(
                (
                    "upsert",
                    rollup_row(write.state, step, first, entries, suffix),
                    {"mode": UpdateMode.REPLACE},
                )
                for step, first, entries in rollups.rows_of(closed)
            )
        return (
            history,
            _state_op(write, kept_text, opened, history_from),
            (kept, opened, history_from),
        )

    def _send_rows(
        self, bucket: str, key: str, ops: list[tuple[Any, ...]], out: dict[str, Outcome]
    ) -> bool:
        for start in range(0, len(ops), MAX_TRANSACTION):
            try:
                with translate_errors():
                    self._calls.submit(ops[start : start + MAX_TRANSACTION])
            except HttpResponseError as exc:
                code = getattr(exc, "error_code", "") or ""
                out[key] = Outcome(
                    Status.REFUSED,
                    reason=f"storage refused the stream's history rows: {exc.status_code} {code}",
                )
                return False
        return True

    def _send(self, transaction: _Transaction, *, isolate: bool) -> dict[str, Outcome]:
        try:
            with translate_errors():
                metas = self._calls.submit(transaction.operations)
        except HttpResponseError as exc:
            return self._failed(transaction, exc, isolate=isolate)
        out: dict[str, Outcome] = {}
        for key, index in transaction.state_ops.items():
            etag = metas[index].get("etag") if index < len(metas) else None
            out[key] = Outcome(Status.COMMITTED, etag=None if etag is None else str(etag))
            if etag is not None:
                self._remember(key, str(etag), transaction.recent[key])
        return out

    def _failed(
        self, transaction: _Transaction, exc: HttpResponseError, *, isolate: bool
    ) -> dict[str, Outcome]:
        code = str(getattr(exc, "error_code", "") or "")
        status = exc.status_code
        if code in _CONFLICT_CODES or status in (404, 409, 412):
            # Every stream of the transaction is reloaded: the service names the failed
            # operation, but not every server does so reliably (Azurite), and a stream sent
            # again with a stale ETag would fail the transaction forever.
            return {key: Outcome(Status.CONFLICT) for key in transaction.state_ops}
        if status not in _STREAM_FAULTS:
            # Not about one stream's rows (a wrong key, a read-only SAS, a deleted table):
            # raise, so the batch waits for the fix instead of dead-lettering everything.
            raise exc
        reason = f"storage refused the stream's part: {status} {code}".strip()
        if len(transaction.state_ops) == 1 or not isolate:
            return {key: Outcome(Status.REFUSED, reason=reason) for key in transaction.state_ops}
        # Which stream broke it is not certain from every service: send each stream alone.
        _log.warning("transaction refused (%s %s): retrying its streams one by one", status, code)
        out = {}
        for single in transaction.split():
            out.update(self._send(single, isolate=False))
        return out

    def streams(self) -> list[DeviceState]:
        """Every stored stream's state (one range read per bucket)."""
        # Not Recent/Rollup: up to ~24 KB a stream that the list never shows.
        return [state for state, _ in self._listed(STATE_COLUMNS)]

    def _listed(self, columns: Sequence[str]) -> list[tuple[DeviceState, Mapping[str, Any]]]:
        """Every stored stream's state and its row's ``columns`` (one range read per bucket)."""
        out: list[tuple[DeviceState, Mapping[str, Any]]] = []
        lo = row_prefix(STATE)
        with translate_errors():
            for bucket in buckets():
                for entity in self._table.query_entities(
                    "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                    parameters={"pk": bucket, "lo": lo, "hi": prefix_end(lo)},
                    select=list(columns),
                ):
                    try:
                        out.append((from_entity(entity), entity))
                    except (KeyError, ValueError, TypeError):
                        _log.warning("skipping malformed state row %r", entity.get("RowKey"))
        return out

    def every_history(
        self, start: datetime, end: datetime, *, limit: int, parallel: int = 8
    ) -> list[tuple[DeviceState, HistoryPage]]:
        """Every stream's readings with ``start <= ts < end``: at most ``limit`` each, a token.

        For an overview's raw tail. The state listing brings each stream's ``Recent`` along
        (a request per bucket), so a stream then costs one query of its history rows, not two;
        those queries run ``parallel`` at a time.
        """
        if parallel < 1:
            raise ValueError("parallel must be >= 1")
        listed = self._listed((*STATE_COLUMNS, "Recent"))

        def one(item: tuple[DeviceState, Mapping[str, Any]]) -> tuple[DeviceState, HistoryPage]:
            state, entity = item
            key = stream_key(state.device_id, state.module_id)
            with translate_errors():
                found, more = self._stream_page(
                    key, start, end, limit, None, recent=_recent_of(entity)
                )
            return state, _single_page(key, found, more)

        if not listed or limit <= 0:
            return [(state, HistoryPage()) for state, _ in listed]
        with ThreadPoolExecutor(min(parallel, len(listed))) as pool:
            return list(pool.map(one, listed))

    def device_streams(self, device_id: str) -> list[str]:
        """Stream keys of a device's stored streams (its plain stream and its modules)."""
        device = escape_key(device_id)
        lo = state_row_key(device)
        # "!" separates the module; the next character after it ends the device's range.
        hi = state_row_key(device + '"')
        keys: list[str] = []
        with translate_errors():
            for entity in self._table.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                parameters={"pk": bucket_of(device), "lo": lo, "hi": hi},
                select=["RowKey"],
            ):
                key = str(entity["RowKey"])[len(row_prefix(STATE)) :]
                if key == device or key.startswith(device + "!"):
                    keys.append(key)
        return keys

    # -- history ------------------------------------------------------------------------

    def history(
        self,
        device_id: str,
        module_id: str | None,
        start: datetime,
        end: datetime,
        *,
        limit: int,
        continuation: str | None = None,
        all_modules: bool = False,
    ) -> HistoryPage:
        """Readings with ``start <= ts < end``, oldest first; at most ``limit``, then a token.

        With ``all_modules``, every stream of the device merged by time. The token holds, per
        stream, the sort key of the last reading served: the next page starts after it.

        Raises:
            ValueError: a continuation token this store did not give.
        """
        if limit <= 0:
            return HistoryPage()
        cursors = _decode_token(continuation) if continuation else {}
        keys = self.device_streams(device_id) if all_modules else [stream_key(device_id, module_id)]
        heads: list[tuple[str, int, str, dict[str, Any]]] = []
        more: dict[str, bool] = {}
        with translate_errors():
            for n, key in enumerate(keys):
                found, more[key] = self._stream_page(key, start, end, limit, cursors.get(key))
                heads.extend((sk, n, key, item) for sk, item in found)
        merged = heapq.nsmallest(limit, heads, key=lambda h: (h[0], h[1]))
        taken = dict.fromkeys(keys, 0)
        new_cursors = dict(cursors)
        for sk, _, key, _ in merged:
            taken[key] += 1
            new_cursors[key] = sk
        total = {key: sum(1 for h in heads if h[2] == key) for key in keys}
        pending = any(more[k] or taken[k] < total[k] for k in keys)
        return HistoryPage(
            readings=[h[3] for h in merged],
            continuation=_encode_token(new_cursors) if pending else None,
        )

    def _stream_page(
        self,
        key: str,
        start: datetime,
        end: datetime,
        limit: int,
        after: str | None,
        *,
        recent: list[chunks.Item] | None = None,
    ) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        """Up to ``limit`` of a stream's readings in range past ``after``; and whether more.

        ``Recent`` is read *before* the history rows (or passed in as ``recent``, read
        earlier by the caller): a commit that cuts readings from ``Recent`` into a row
        between the two reads then shows them in both places (taken once), never in neither.
        """
        device, module = split_stream_key(key)
        prefix = row_prefix(HISTORY, key)
        try:
            lo = start - chunks.SPAN  # a chunk holds an hour from its first reading
        except OverflowError:
            lo = start
        if after is not None:
            lo = max(lo, _time_of(after) - chunks.SPAN)
        lo_key, hi_key, end_key = time_key(lo), time_key(start), time_key(end)
        found: dict[str, chunks.Item] = {}

        def take(items: list[chunks.Item]) -> None:
            for item in items:
                sk = chunks.sort_key(item)
                if hi_key <= sk < end_key and (after is None or sk > after):
                    found[sk] = item  # the same reading twice (see chunks.py): once

        if recent is None:
            try:
                recent = _recent_of(
                    self._table.get_entity(bucket_of(key), state_row_key(key), select=["Recent"])
                )
            except ResourceNotFoundError:
                recent = []
        take(recent)
        stopped = False
        for row in self._table.query_entities(
            "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
            parameters={"pk": bucket_of(key), "lo": prefix + lo_key, "hi": prefix + end_key},
            results_per_page=100,
        ):
            first = str(row["RowKey"])[len(prefix) :]
            # Every later row starts at or after `first`: readings before it are complete.
            if sum(1 for sk in found if sk < first) > limit:
                stopped = True
                break
            take(_chunk_items(row))
        ordered = sorted(found.items())
        page = [(sk, chunks.expand(item, device, module)) for sk, item in ordered[:limit]]
        return page, stopped or len(ordered) > limit

    def rollups(
        self, step: str, start: datetime, end: datetime, *, as_columns: bool = False
    ) -> list[dict[str, Any]]:
        """Every stream's ``step`` rollup points in ``[start, end)`` (or columns: rollups.py).

        Two queries per bucket: the closed buckets' rows (time-major keys), the open ones.
        """
        width = rollups.STEPS[step]
        try:
            lo = start - width * rollups.BUCKETS_PER_ROW  # a row spans at most that
        except OverflowError:
            lo = start
        prefix = row_prefix(ROLLUP, step)
        found: dict[str, list[tuple[str, Any]]] = {}
        ids: dict[str, tuple[str, str | None]] = {}
        with translate_errors():
            for bucket in buckets():
                for row in self._table.query_entities(
                    "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                    parameters={
                        "pk": bucket,
                        "lo": prefix + time_key(lo),
                        "hi": prefix + time_key(end),
                    },
                ):
                    key = str(row.get("StreamId", ""))
                    try:
                        entries = json.loads(row.get("Buckets") or "[]")
                    except ValueError:
                        continue
                    found.setdefault(key, []).extend((str(t), m) for t, m in entries)
                    ids[key] = (str(row["DeviceId"]), row.get("ModuleId") or None)
                lo_s = row_prefix(STATE)
                for row in self._table.query_entities(
                    "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                    parameters={"pk": bucket, "lo": lo_s, "hi": prefix_end(lo_s)},
                    select=["RowKey", "DeviceId", "ModuleId", "Rollup"],
                ):
                    key = str(row["RowKey"])[len(lo_s) :]
                    opened = rollups.load_open(row.get("Rollup"))
                    found.setdefault(key, []).extend(rollups.open_buckets(opened, step))
                    ids[key] = (str(row["DeviceId"]), row.get("ModuleId") or None)
        out = []
        for key in sorted(found):
            device, module = ids[key]
            head = {"streamId": key, "deviceId": device, "moduleId": module}
            if as_columns:
                cols = rollups.columns(found[key], start, end)
                if cols["ts"]:
                    out.append({**head, **cols})
            else:
                pts = rollups.points(found[key], start, end)
                if pts:
                    out.append({**head, "points": pts})
        return out

    def prune(self, key: str, before: datetime, *, max_rows: int = MAX_TRANSACTION) -> int:
        """Delete up to ``max_rows`` history chunks of a stream wholly older than ``before``.

        No request at all when this worker knows there is nothing to delete: the state row's
        ``HistoryFrom`` (its oldest history row, as last loaded or committed here) or an
        earlier prune here that left nothing below its cutoff is at or past this cutoff.
        """
        prefix = row_prefix(HISTORY, key)
        pk = bucket_of(key)
        cutoff = time_key(before - chunks.SPAN)
        with self._lock:
            history_from = self._history_from.get(key)
            pruned_to = self._pruned_to.get(key)
        if history_from == "":  # no history rows at all
            return 0
        bound = max(filter(None, (history_from, pruned_to)), default=None)
        if bound is not None and bound >= cutoff:
            return 0
        found: list[str] = []
        with translate_errors():
            for row in self._table.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                parameters={"pk": pk, "lo": prefix, "hi": prefix + cutoff},
                select=["RowKey"],
                results_per_page=min(max_rows, 1000),
            ):
                found.append(str(row["RowKey"]))
                if len(found) >= max_rows:
                    break
            for start in range(0, len(found), MAX_TRANSACTION):
                chunk = found[start : start + MAX_TRANSACTION]
                self._calls.submit([("delete", {"PartitionKey": pk, "RowKey": rk}) for rk in chunk])
        if len(found) < max_rows:  # every row below the cutoff is gone
            with self._lock:
                _put(self._pruned_to, key, max(cutoff, self._pruned_to.get(key, "")))
        return len(found)


class _Transaction:
    """Operations of one transaction, and which operation index is whose."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.operations: list[tuple[Any, ...]] = []
        self.owners: list[str] = []
        #: stream key → index of its state operation (the commit of its part).
        self.state_ops: dict[str, int] = {}
        self.parts: dict[str, list[tuple[Any, ...]]] = {}
        #: stream key → the Recent (and open rollups) its state op writes.
        self.recent: dict[str, _Kept] = {}

    def add(self, key: str, operations: list[tuple[Any, ...]], recent: _Kept) -> None:
        self.parts[key] = operations
        self.recent[key] = recent
        self.operations.extend(operations)
        self.owners.extend([key] * len(operations))
        self.state_ops[key] = len(self.operations) - 1

    def owner(self, index: int | None) -> str | None:
        if index is None or not 0 <= index < len(self.owners):
            return None
        return self.owners[index]

    def split(self) -> list[_Transaction]:
        out = []
        for key, operations in self.parts.items():
            single = _Transaction(self.bucket)
            single.add(key, operations, self.recent[key])
            out.append(single)
        return out


def _pack(
    bucket: str, parts: Sequence[tuple[str, list[tuple[Any, ...]], _Kept]]
) -> list[_Transaction]:
    """Streams' parts (≤ 99 history chunks + the state op) into transactions of ≤ 100."""
    out: list[_Transaction] = []
    current = _Transaction(bucket)
    for key, ops, recent in parts:
        if len(current.operations) + len(ops) > MAX_TRANSACTION:
            out.append(current)
            current = _Transaction(bucket)
        current.add(key, ops, recent)
    if current.operations:
        out.append(current)
    return out


def _state_op(
    write: StreamWrite, recent_text: str, opened: rollups.Open, history_from: str | None
) -> tuple[Any, ...]:
    entity = to_entity(write.state)
    entity["Recent"] = recent_text
    entity["Rollup"] = rollups.dumps(opened)
    if history_from is not None:
        entity["HistoryFrom"] = history_from
    if write.etag is None:
        return ("create", entity)
    return (
        "update",
        entity,
        {
            "mode": UpdateMode.REPLACE,
            "etag": write.etag,
            "match_condition": MatchConditions.IfNotModified,
        },
    )


def _recent_of(entity: Mapping[str, Any]) -> list[chunks.Item]:
    try:
        return chunks.loads(entity.get("Recent"))
    except ValueError:
        _log.warning("state row %r: unreadable Recent readings dropped", entity.get("RowKey"))
        return []


def _history_from_of(entity: Mapping[str, Any]) -> str | None:
    """A state row's ``HistoryFrom``; None (unknown) when absent (a row older than the column)."""
    value = entity.get("HistoryFrom")
    return value if isinstance(value, str) else None


def _put(memory: OrderedDict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` in a bounded LRU dict of :data:`PRUNE_MEMORY` keys."""
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > PRUNE_MEMORY:
        memory.popitem(last=False)


def _loaded(entity: Mapping[str, Any], etag: str) -> Loaded:
    """A state row as loaded; an unreadable one is reported, never overwritten."""
    try:
        return Loaded(from_entity(entity), etag)
    except (KeyError, ValueError, TypeError) as exc:
        error = CorruptStateError(f"stored state unreadable ({type(exc).__name__}: {exc})"[:500])
        return Loaded(None, etag, error=str(error))


def to_entity(state: DeviceState) -> dict[str, Any]:
    """The state row of a stream."""
    key = state.stream_id
    entity: dict[str, Any] = {
        "PartitionKey": bucket_of(key),
        "RowKey": state_row_key(key),
        "DeviceId": state.device_id,
        "ModuleId": state.module_id or "",
        "Count": int64(state.count),
        "Duplicates": int64(state.duplicates),
        "Missing": int64(state.missing),
        "Rejected": int64(state.rejected),
        "Boot": state.boot or "",
        "LastSeq": int64(state.last_seq if state.last_seq is not None else -1),
        "Boots": json.dumps([m.to_json() for m in state.boots], separators=(",", ":")),
        "Values": json.dumps(dict(state.values), separators=(",", ":")),
        "Source": state.source or "",
        "Calibration": state.calibration,
        "Alert": state.alert,
        "Flags": json.dumps(list(state.flags), separators=(",", ":")),
        "Label": state.label or "",
    }
    if state.rejected_seq is not None:
        entity["RejectedSeq"] = int64(state.rejected_seq)
    if state.forgotten_us is not None:
        entity["ForgottenUs"] = int64(state.forgotten_us)
    if state.last_seen is not None:
        entity["LastSeen"] = state.last_seen
    return entity


def from_entity(entity: Mapping[str, Any]) -> DeviceState:
    """Inverse of :func:`to_entity`."""
    boots = tuple(BootMark.from_json(raw) for raw in json.loads(entity["Boots"]))
    values = json.loads(entity["Values"])
    if not isinstance(values, dict):
        raise ValueError("Values must be a JSON object")
    last_seen = entity.get("LastSeen")
    if isinstance(last_seen, datetime):
        last_seen = last_seen.astimezone(UTC)
    rejected_seq = entity.get("RejectedSeq")
    forgotten = entity.get("ForgottenUs")
    return DeviceState(
        device_id=str(entity["DeviceId"]),
        module_id=entity.get("ModuleId") or None,
        count=as_int(entity["Count"]),
        duplicates=as_int(entity["Duplicates"]),
        missing=as_int(entity["Missing"]),
        rejected=as_int(entity["Rejected"]),
        rejected_seq=None if rejected_seq is None else as_int(rejected_seq),
        boots=boots,
        last_seen=last_seen if isinstance(last_seen, datetime) else None,
        values={str(k): (None if v is None else float(v)) for k, v in values.items()},
        source=entity.get("Source") or None,
        calibration=as_int(entity.get("Calibration", 0)),
        alert=bool(entity.get("Alert", False)),
        flags=tuple(json.loads(entity.get("Flags", "[]"))),
        label=entity.get("Label") or None,
        forgotten_us=None if forgotten is None else as_int(forgotten),
    )


def rollup_row(
    state: DeviceState, step: str, first: datetime, entries: list[list[Any]], suffix: str
) -> dict[str, Any]:
    """A row of closed rollup buckets of one stream and step (time-major RowKey)."""
    key = state.stream_id
    return {
        "PartitionKey": bucket_of(key),
        "RowKey": f"{row_prefix(ROLLUP, step)}{time_key(first)}${key}${suffix}",
        "StreamId": key,
        "DeviceId": state.device_id,
        "ModuleId": state.module_id or "",
        "Buckets": rollups.dumps(entries),
    }


def chunk_row(state: DeviceState, chunk: Sequence[chunks.Item]) -> dict[str, Any]:
    """The history row of one chunk of a stream's readings."""
    key = state.stream_id
    return {
        "PartitionKey": bucket_of(key),
        "RowKey": chunk_row_key(key, chunk),
        "DeviceId": state.device_id,
        "ModuleId": state.module_id or "",
        "Readings": chunks.dumps(chunk),
        "Count": len(chunk),
        "First": chunks.ts_of(chunk[0]),
    }


def _chunk_items(row: Mapping[str, Any]) -> list[chunks.Item]:
    try:
        return chunks.loads(row.get("Readings"))
    except ValueError:
        _log.warning("history row %r unreadable: skipped", row.get("RowKey"))
        return []


def _time_of(sort_key: str) -> datetime:
    """The time prefix of a sort key (``YYYYMMDDTHHMMSSffffffZ_…``); ValueError if none."""
    try:
        return datetime.strptime(sort_key[:22], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError("not a continuation token this API gave") from None


def _single_page(key: str, found: list[tuple[str, dict[str, Any]]], more: bool) -> HistoryPage:
    """One stream's page, with the token ``history`` takes (for that stream) when ``more``."""
    token = _encode_token({key: found[-1][0]}) if more and found else None
    return HistoryPage(readings=[item for _, item in found], continuation=token)


def _encode_token(cursors: Mapping[str, str]) -> str:
    raw = json.dumps(dict(sorted(cursors.items())), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_token(token: str) -> dict[str, str]:
    """Inverse of :func:`_encode_token`; ValueError for anything else."""
    if len(token) > 8192:
        raise ValueError("continuation token too long")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        cursors = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValueError("not a continuation token this API gave") from None
    if not isinstance(cursors, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in cursors.items()
    ):
        raise ValueError("not a continuation token this API gave")
    return cursors
