"""The sink's one entry point: a batch of hub events in, committed counts and new readings out.

Per batch (docs/sink.md has the why):

1. normalise every event; refused ones become dead letters (idempotent rows keyed by the event);
2. group readings by stream, a (device, module) pair, and the streams by the store's groups
   (Table buckets);
3. per group: load its streams' states, fold each stream's readings, commit them (the store
   packs many streams into one transaction, each state write conditional on its ETag, with
   its history rows);
4. a stream whose write lost a race is reloaded and folded again (jittered, growing delays,
   until a deadline); a stream whose part storage refused for good, or whose fold failed, is
   dead-lettered with the reason, and the rest of the batch commits.

Only a transient storage failure (5xx, 408, 429, connection) raises, so the host re-runs the
whole batch; the re-run counts what was committed zero times again.
"""

from __future__ import annotations

import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.pipeline.transport import HttpTransport
from azure.data.tables import TableServiceClient

from enviromon_sink.counting import DeviceState, fold_stream
from enviromon_sink.deadletter import DeadLetterTable
from enviromon_sink.errors import RejectedMessageError, StoreContentionError, TransientStoreError
from enviromon_sink.events import InboundEvent
from enviromon_sink.keys import split_stream_key, stream_key, table_name
from enviromon_sink.normalise import Reading, normalise, valid_hub_id
from enviromon_sink.rest import for_table
from enviromon_sink.storage import (
    DeadLetter,
    DeadLetterStore,
    HistoryPage,
    Loaded,
    Status,
    StreamStore,
    StreamWrite,
)
from enviromon_sink.streams import TableStreamStore
from enviromon_sink.tables import quiet_sdk_request_logs, translate_errors

_log = logging.getLogger(__name__)

DEFAULT_TEMPERATURE_ALERT = 30.0
#: A stream's newly counted readings, with their positions among its readings of the batch.
_Counted = list[tuple[int, Reading]]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one batch did, JSON-ready for Web PubSub and the logs.

    Attributes:
        readings: the batch's newly counted readings (not duplicates), in delivery order.
        devices: the committed state of each stream the batch touched, by stream id.
        dead_lettered: events (or streams' parts of a batch) refused and dead-lettered.
        duplicates: readings recognised as already counted.
        conflicts: writes that lost an ETag race and were folded again.
    """

    readings: list[dict[str, Any]] = field(default_factory=list)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    dead_lettered: int = 0
    duplicates: int = 0
    conflicts: int = 0

    def to_message(self) -> dict[str, Any]:
        """The Web PubSub message: ``{"type": "readings", "readings": [...], "devices": {...}}``."""
        return {"type": "readings", "readings": self.readings, "devices": self.devices}


@dataclass(slots=True)
class _Stream:
    """One stream's part of a batch."""

    key: str
    device_id: str
    module_id: str | None
    readings: list[Reading] = field(default_factory=list)
    #: each reading's position in the batch (delivery order)
    order: list[int] = field(default_factory=list)
    rejected: list[int | None] = field(default_factory=list)
    events: list[InboundEvent] = field(default_factory=list)


class Sink:
    """Normalise, dead-letter, count exactly once per stream, keep history."""

    def __init__(
        self,
        *,
        streams: StreamStore,
        dead_letters: DeadLetterStore,
        clock: Callable[[], datetime] = _utcnow,
        temperature_alert: float | None = DEFAULT_TEMPERATURE_ALERT,
        retention: timedelta | None = timedelta(days=30),
        prune_interval: timedelta = timedelta(hours=1),
        prune_devices_per_batch: int = 4,
        deadline_s: float = 30.0,
        backoff_base_s: float = 0.02,
        backoff_max_s: float = 1.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Build a sink over its stores.

        Args:
            streams: counted state and history of every stream.
            dead_letters: refused events.
            clock: now, in UTC (tests pass a fixed one).
            temperature_alert: °C at or above which a reading is an alert (None: property only).
            retention: history older than this is pruned (None: keep everything).
            prune_interval: how often, per worker, one stream's history is pruned at most.
            prune_devices_per_batch: bound on streams pruned per batch (bounded extra work).
            deadline_s: how long a stream may keep losing ETag races before the batch raises.
            backoff_base_s: first delay after a lost race; doubles, full jitter, capped.
            backoff_max_s: the cap.
            rng: randomness for the jitter.
            sleep: how to wait (tests pass a fake).
            monotonic: the clock for the deadline.
        """
        if retention is not None and retention <= timedelta(0):
            raise ValueError("retention must be positive or None")
        if prune_interval < timedelta(0) or prune_devices_per_batch < 0:
            raise ValueError("prune_interval and prune_devices_per_batch must be ≥ 0")
        if temperature_alert is not None and not -40.0 <= temperature_alert <= 85.0:
            raise ValueError("temperature_alert must be within -40..85 °C")
        if deadline_s <= 0 or backoff_base_s <= 0 or backoff_max_s < backoff_base_s:
            raise ValueError("need deadline_s > 0 and 0 < backoff_base_s <= backoff_max_s")
        self._streams = streams
        self._dead = dead_letters
        self._clock = clock
        self._alert = temperature_alert
        self._retention = retention
        self._prune_interval = prune_interval
        self._prune_per_batch = prune_devices_per_batch
        # stream key → when this worker last pruned it, oldest first; entries older than
        # prune_interval are dropped (such a stream is due again anyway), so the map holds
        # only the streams pruned within one interval, not every stream ever seen.
        self._pruned_at: OrderedDict[str, datetime] = OrderedDict()
        self._deadline_s = deadline_s
        self._base = backoff_base_s
        self._cap = backoff_max_s
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._sleep = sleep
        self._monotonic = monotonic
        #: ETag races lost so far (all batches): the concurrency tests check they happen.
        self.conflicts = 0

    @classmethod
    def from_connection_string(
        cls,
        conn: str,
        *,
        table_prefix: str = "enviromon",
        transport: HttpTransport[Any, Any] | None = None,
        create_tables: bool = True,
        retry_total: int = 3,
        storage_request_logs: bool = False,
        table_calls: str = "pipeline",
        **kw: Any,
    ) -> Sink:
        """A sink on the Table service of ``conn`` (Azure Storage or Azurite).

        Args:
            conn: a storage connection string.
            table_prefix: tables are ``<prefix>streams`` and ``<prefix>deadletter``.
            transport: an azure-core transport (tests inject failing or counting ones).
            create_tables: create the tables if missing.
            retry_total: the SDK's own retries of transient failures per request.
            storage_request_logs: keep the storage SDK's per-request INFO log lines.
            table_calls: ``pipeline`` (rest.py) or ``sdk``: how the hot path's transactions
                and state queries are sent.
            **kw: passed to :class:`Sink` (clock, temperature_alert, retention, deadline_s...).
        """
        quiet_sdk_request_logs(storage_request_logs)
        client_kw: dict[str, Any] = {"retry_total": retry_total, "retry_backoff_factor": 0.2}
        if transport is not None:
            client_kw["transport"] = transport
        service = TableServiceClient.from_connection_string(conn, **client_kw)
        names = {role: table_name(table_prefix, role) for role in ("streams", "deadletter")}
        if create_tables:
            with translate_errors():
                for name in names.values():
                    service.create_table_if_not_exists(name)
        streams = service.get_table_client(names["streams"])
        return cls(
            streams=TableStreamStore(
                table=streams,
                calls=for_table(
                    streams, transport=transport, retry_total=retry_total, kind=table_calls
                ),
            ),
            dead_letters=DeadLetterTable(table=service.get_table_client(names["deadletter"])),
            **kw,
        )

    def process(self, events: Sequence[InboundEvent]) -> BatchResult:
        """Handle one batch, in the order the hub delivered it.

        Raises:
            TransientStoreError: Table storage failed; re-run the whole batch (it is safe to).
        """
        started = time.perf_counter()
        streams, letters = self._group(events)
        committed, refused, conflicts = self._commit_all(streams)
        for key, reason in refused.items():
            letters.extend(DeadLetter(event, reason) for event in streams[key].events)
        if letters:
            self._dead.write(letters)

        ordered: list[tuple[int, Reading]] = []
        devices: dict[str, dict[str, Any]] = {}
        duplicates = 0
        for key, stream in streams.items():
            if key not in committed:
                continue
            state, counted = committed[key]
            devices[key] = state.to_json()
            duplicates += len(stream.readings) - len(counted)
            ordered.extend((stream.order[i], r) for i, r in counted)
        new_readings = [r.to_json() for _, r in sorted(ordered, key=lambda x: x[0])]
        self._prune([k for k in committed if streams[k].readings])
        result = BatchResult(
            readings=new_readings,
            devices=devices,
            dead_lettered=len(letters),
            duplicates=duplicates,
            conflicts=conflicts,
        )
        _log.info(
            "batch: %d events, %d counted, %d duplicates, %d dead letters, %d streams,"
            " %d conflicts, %.0f ms",
            len(events),
            len(new_readings),
            duplicates,
            len(letters),
            len(streams),
            conflicts,
            (time.perf_counter() - started) * 1000,
        )
        return result

    def _group(self, events: Sequence[InboundEvent]) -> tuple[dict[str, _Stream], list[DeadLetter]]:
        streams: dict[str, _Stream] = {}
        letters: list[DeadLetter] = []
        position = 0

        def stream(device: str, module: str | None) -> _Stream:
            key = stream_key(device, module)
            if key not in streams:
                streams[key] = _Stream(key, device, module)
            return streams[key]

        for event in events:
            try:
                readings = normalise(event, temperature_alert=self._alert)
            except RejectedMessageError as exc:
                letters.append(DeadLetter(event, exc.reason))
            except Exception as exc:  # a bug must cost one event, never the batch
                _log.exception("normalise failed unexpectedly")
                letters.append(DeadLetter(event, f"internal error: {type(exc).__name__}"))
            else:
                if readings:
                    part = stream(readings[0].device_id, readings[0].module_id)
                    part.readings.extend(readings)
                    part.order.extend(range(position, position + len(readings)))
                    position += len(readings)
                    part.events.append(event)
                continue
            device = valid_hub_id(event.device_id)
            if device is not None:
                part = stream(device, valid_hub_id(event.module_id))
                part.rejected.append(event.sequence_number)
        return streams, letters

    def _commit_all(
        self, streams: dict[str, _Stream]
    ) -> tuple[dict[str, tuple[DeviceState, _Counted]], dict[str, str], int]:
        """Fold and commit every stream; returns committed, refused (key → reason), conflicts."""
        committed: dict[str, tuple[DeviceState, _Counted]] = {}
        refused: dict[str, str] = {}
        deadline = self._monotonic() + self._deadline_s
        conflicts = 0
        # One group (a Table bucket) at a time, loaded just before it is committed: the time
        # between a stream's load and its conditional write is one group's, not the whole
        # batch's, so a worker racing on the same streams (a replay beside the next batch)
        # loses one group's race, falls behind, and then finds the others already written.
        for group in self._streams.groups(list(streams)):
            conflicts += self._commit_group(streams, group, deadline, committed, refused)
        return committed, refused, conflicts

    def _commit_group(
        self,
        streams: dict[str, _Stream],
        group: Sequence[str],
        deadline: float,
        committed: dict[str, tuple[DeviceState, _Counted]],
        refused: dict[str, str],
    ) -> int:
        """Load, fold and commit the streams of one group until done; returns lost races."""
        loaded = self._streams.load(group)
        pending = set(group)
        conflicts = 0
        attempt = 0
        while pending:
            writes: dict[str, tuple[StreamWrite, _Counted]] = {}
            for key in sorted(pending):
                if loaded[key].error is not None:
                    refused[key] = loaded[key].error or ""
                    pending.discard(key)
                    continue
                try:
                    writes[key] = self._fold(streams[key], loaded[key])
                except Exception as exc:  # a poison stream costs its own part, never the batch
                    _log.exception("folding stream %r failed", key)
                    refused[key] = f"internal error folding the stream: {type(exc).__name__}"
                    pending.discard(key)
            outcomes = self._streams.commit([w for w, _ in writes.values()])
            reload: list[str] = []
            for key, (write, counted) in writes.items():
                outcome = outcomes.get(key)
                if outcome is None or outcome.status is Status.NOT_SENT:
                    continue
                if outcome.status is Status.COMMITTED:
                    committed[key] = (write.state, counted)
                    loaded[key] = Loaded(write.state, outcome.etag)
                elif outcome.status is Status.REFUSED:
                    refused[key] = outcome.reason or "storage refused the stream's part"
                else:
                    reload.append(key)
                pending.discard(key)
            if reload:
                conflicts += len(reload)
                self.conflicts += len(reload)
                pending.update(reload)
                attempt += 1
                delay = self._rng.uniform(0, min(self._cap, self._base * 2**attempt))
                if self._monotonic() + delay > deadline:
                    raise StoreContentionError(
                        f"streams {sorted(reload)[:5]!r}: state changed under us {attempt} times"
                    )
                self._sleep(delay)
                loaded.update(self._streams.load(reload))
        return conflicts

    def _fold(self, stream: _Stream, loaded: Loaded) -> tuple[StreamWrite, _Counted]:
        done = fold_stream(
            loaded.state,
            stream.readings,
            device_id=stream.device_id,
            module_id=stream.module_id,
            rejected=stream.rejected,
        )
        counted: _Counted = []
        for i, (reading, outcome, extra) in enumerate(
            zip(stream.readings, done.outcomes, done.flags, strict=True)
        ):
            if outcome.counted:
                counted.append((i, _with_flags(reading, extra) if extra else reading))
        write = StreamWrite(stream.key, done.state, loaded.etag, [r for _, r in counted])
        return write, counted

    def list_devices(self) -> list[dict[str, Any]]:
        """The committed state of every stream, by device id then module id."""
        states = self._streams.streams()
        return [s.to_json() for s in sorted(states, key=lambda s: (s.device_id, s.module_id or ""))]

    def history(
        self,
        device_id: str,
        start: datetime,
        end: datetime,
        limit: int = 1000,
        *,
        module_id: str | None = None,
        all_modules: bool = True,
        continuation: str | None = None,
    ) -> HistoryPage:
        """A device's readings with ``start <= ts < end``, oldest first, a page of ``limit``.

        ``all_modules`` (the default) merges every stream of the device by time; otherwise only
        the stream of ``module_id`` (None: the device's plain stream).

        Raises:
            ValueError: a continuation token this sink did not give.
        """
        return self._streams.history(
            device_id,
            module_id,
            start,
            end,
            limit=limit,
            continuation=continuation,
            all_modules=all_modules,
        )

    def every_history(
        self, start: datetime, end: datetime, limit: int = 1000, *, parallel: int = 8
    ) -> list[dict[str, Any]]:
        """Every stream's readings with ``start <= ts < end``: one call for a page's raw tail.

        Per stream (by device id, then module id) at most ``limit`` readings, oldest first,
        and the stream's ``continuation`` token when more remain (the device history route
        takes it, with ``module``). The state listing brings every stream's newest readings;
        each stream's history rows are then one query, ``parallel`` at a time (a dashboard
        asking one stream at a time over HTTP paid a round trip per stream on top).
        """
        pages = self._streams.every_history(start, end, limit=limit, parallel=parallel)
        return [
            {
                "streamId": stream_key(state.device_id, state.module_id),
                "deviceId": state.device_id,
                "moduleId": state.module_id,
                "readings": page.readings,
                "continuation": page.continuation,
            }
            for state, page in sorted(pages, key=lambda p: (p[0].device_id, p[0].module_id or ""))
        ]

    def rollups(
        self, step: str, start: datetime, end: datetime, *, as_columns: bool = False
    ) -> list[dict[str, Any]]:
        """Every stream's min/mean/max per ``step`` (``1m``, ``15m``, ``1h``) in ``[start, end)``.

        Built only from counted readings, committed with the counts (rollups.py).
        ``as_columns``: each stream's ``ts`` and ``metrics`` lists instead of ``points``.
        """
        return self._streams.rollups(step, start, end, as_columns=as_columns)

    def device(self, device_id: str, module_id: str | None = None) -> dict[str, Any] | None:
        """One stream's committed state, or None if never seen."""
        key = stream_key(device_id, module_id)
        state = self._streams.load([key])[key].state
        return None if state is None else state.to_json()

    def _prune(self, keys: list[str]) -> None:
        if self._retention is None or self._prune_per_batch == 0:
            return
        now = self._clock()
        due = [
            k
            for k in keys
            if now - self._pruned_at.get(k, datetime.min.replace(tzinfo=UTC))
            >= self._prune_interval
        ][: self._prune_per_batch]
        for key in due:
            self._pruned_at[key] = now
            self._pruned_at.move_to_end(key)
        while self._pruned_at:
            oldest = next(iter(self._pruned_at))
            if now - self._pruned_at[oldest] < self._prune_interval:
                break
            del self._pruned_at[oldest]
        for key in due:
            try:
                deleted = self._streams.prune(key, now - self._retention, max_rows=100)
            except Exception as exc:
                # Housekeeping: the counts are committed; never fail (and re-run) the batch
                # for it. Also not for a 404: another worker pruning the same stream deleted a
                # row first, and the transaction failed as a whole. The next prune catches up.
                _log.warning("pruning history of %r failed: %s", split_stream_key(key), exc)
                continue
            if deleted:
                _log.info("pruned %d history rows of %r", deleted, split_stream_key(key))


def _with_flags(reading: Reading, extra: tuple[str, ...]) -> Reading:
    return replace(reading, flags=reading.flags + tuple(f for f in extra if f not in reading.flags))


__all__ = ["BatchResult", "Sink", "TransientStoreError"]
