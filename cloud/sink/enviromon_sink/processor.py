"""The sink's one entry point: a batch of hub events in, committed counts and new readings out.

Order of writes, for crash safety (the host re-runs a batch that raised, and may re-run one
that did not, since checkpoints are at-least-once):

1. dead letters — idempotent upserts, keyed by the event;
2. per device: history rows of the readings the fold counts — idempotent upserts, keyed by
   (time, boot, seq) — then the one conditional state write. The state write is what makes a
   device's part of the batch "done": a crash before it leaves rows that the re-run writes
   again, unchanged, and counts that the re-run then commits once.

A refused event never stops the batch and never costs another event's readings. A Table
failure does stop it (raised as TransientStoreError), so the host re-runs the whole batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.transport import HttpTransport
from azure.data.tables import TableServiceClient

from enviromon_sink.counting import DeviceState, Outcome, fold
from enviromon_sink.deadletter import DeadLetter, DeadLetterStore
from enviromon_sink.errors import RejectedMessageError, TransientStoreError
from enviromon_sink.events import InboundEvent
from enviromon_sink.history import HistoryStore, reading_json, row_key
from enviromon_sink.keys import table_name
from enviromon_sink.normalise import Reading, normalise, valid_hub_id
from enviromon_sink.store import DeviceStateStore, translate_errors

_log = logging.getLogger(__name__)

DEFAULT_TEMPERATURE_ALERT = 30.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one batch did, JSON-ready for Web PubSub and the logs.

    Attributes:
        readings: the batch's newly counted readings (not duplicates), in delivery order.
        devices: the committed state of each device the batch touched, by device id.
        dead_lettered: events refused and written to the dead-letter table.
        duplicates: readings recognised as already counted.
    """

    readings: list[dict[str, Any]] = field(default_factory=list)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    dead_lettered: int = 0
    duplicates: int = 0

    def to_message(self) -> dict[str, Any]:
        """The Web PubSub message: ``{"type": "readings", "readings": [...], "devices": {...}}``."""
        return {"type": "readings", "readings": self.readings, "devices": self.devices}


class Sink:
    """Normalise, dead-letter, count exactly once, keep history."""

    def __init__(
        self,
        *,
        state: DeviceStateStore,
        history: HistoryStore,
        dead_letters: DeadLetterStore,
        clock: Callable[[], datetime] = _utcnow,
        temperature_alert: float | None = DEFAULT_TEMPERATURE_ALERT,
        retention: timedelta | None = timedelta(days=30),
        prune_interval: timedelta = timedelta(hours=1),
        prune_devices_per_batch: int = 4,
    ) -> None:
        """Build a sink over its three stores.

        Args:
            state: per-device counted state.
            history: one row per reading.
            dead_letters: refused events.
            clock: now, in UTC (tests pass a fixed one).
            temperature_alert: °C at or above which a reading is an alert (None: property only).
            retention: history older than this is pruned (None: keep everything).
            prune_interval: how often, per worker, one device's history is pruned at most.
            prune_devices_per_batch: bound on devices pruned per batch (bounded extra work).
        """
        if retention is not None and retention <= timedelta(0):
            raise ValueError("retention must be positive or None")
        if prune_interval < timedelta(0) or prune_devices_per_batch < 0:
            raise ValueError("prune_interval and prune_devices_per_batch must be ≥ 0")
        if temperature_alert is not None and not -40.0 <= temperature_alert <= 85.0:
            raise ValueError("temperature_alert must be within -40..85 °C")
        self._state = state
        self._history = history
        self._dead = dead_letters
        self._clock = clock
        self._alert = temperature_alert
        self._retention = retention
        self._prune_interval = prune_interval
        self._prune_per_batch = prune_devices_per_batch
        self._pruned_at: dict[str, datetime] = {}

    @classmethod
    def from_connection_string(
        cls,
        conn: str,
        *,
        table_prefix: str = "enviromon",
        transport: HttpTransport[Any, Any] | None = None,
        create_tables: bool = True,
        retry_total: int = 3,
        deadline_s: float = 30.0,
        **kw: Any,
    ) -> Sink:
        """A sink on the Table service of ``conn`` (Azure Storage or Azurite).

        Args:
            conn: a storage connection string.
            table_prefix: tables are ``<prefix>devices``, ``<prefix>history``,
                ``<prefix>deadletter``.
            transport: an azure-core transport (tests inject failing or counting ones).
            create_tables: create the tables if missing.
            retry_total: the SDK's own retries of transient failures per request.
            deadline_s: how long one device may keep losing ETag races before the batch raises.
            **kw: passed to :class:`Sink` (clock, temperature_alert, retention, ...).
        """
        client_kw: dict[str, Any] = {"retry_total": retry_total, "retry_backoff_factor": 0.2}
        if transport is not None:
            client_kw["transport"] = transport
        service = TableServiceClient.from_connection_string(conn, **client_kw)
        names = {
            role: table_name(table_prefix, role) for role in ("devices", "history", "deadletter")
        }
        if create_tables:
            with translate_errors():
                for name in names.values():
                    service.create_table_if_not_exists(name)
        return cls(
            state=DeviceStateStore(
                table=service.get_table_client(names["devices"]), deadline_s=deadline_s
            ),
            history=HistoryStore(table=service.get_table_client(names["history"])),
            dead_letters=DeadLetterStore(table=service.get_table_client(names["deadletter"])),
            **kw,
        )

    def process(self, events: Sequence[InboundEvent]) -> BatchResult:
        """Handle one batch, in the order the hub delivered it.

        Raises:
            TransientStoreError: Table storage failed; re-run the whole batch (it is safe to).
        """
        by_device: dict[str, list[Reading]] = {}
        rejected: dict[str, list[int | None]] = {}
        letters: list[DeadLetter] = []
        for event in events:
            try:
                readings = normalise(event, temperature_alert=self._alert)
            except RejectedMessageError as exc:
                letters.append(DeadLetter(event, exc.reason))
            except Exception as exc:  # a bug must cost one event, never the batch
                _log.exception("normalise failed unexpectedly")
                letters.append(DeadLetter(event, f"internal error: {type(exc).__name__}"))
            else:
                for reading in readings:
                    by_device.setdefault(reading.device_id, []).append(reading)
                continue
            device = valid_hub_id(event.device_id)
            if device is not None:
                rejected.setdefault(device, []).append(event.sequence_number)
        if letters:
            self._dead.write(letters)
            for letter in letters:
                _log.info("dead-lettered an event of %r: %s", letter.event.device_id, letter.reason)

        new_readings: list[dict[str, Any]] = []
        devices: dict[str, dict[str, Any]] = {}
        duplicates = 0
        for device in list(dict.fromkeys([*by_device, *rejected])):
            state, outcomes = self._commit(
                device, by_device.get(device, []), rejected.get(device, [])
            )
            devices[device] = state.to_json()
            for reading, outcome in zip(by_device.get(device, []), outcomes, strict=True):
                if outcome.counted:
                    new_readings.append(reading_json(reading))
                else:
                    duplicates += 1
        self._prune(list(by_device))
        return BatchResult(
            readings=new_readings,
            devices=devices,
            dead_lettered=len(letters),
            duplicates=duplicates,
        )

    def list_devices(self) -> list[dict[str, Any]]:
        """The committed state of every device, by device id."""
        return [s.to_json() for s in sorted(self._state.list(), key=lambda s: s.device_id)]

    def history(
        self, device_id: str, start: datetime, end: datetime, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """A device's readings with ``start <= ts < end``, oldest first, at most ``limit``."""
        return self._history.query(device_id, start, end, limit)

    def device(self, device_id: str) -> dict[str, Any] | None:
        """One device's committed state, or None if never seen."""
        state = self._state.get(device_id)
        return None if state is None else state.to_json()

    def _commit(
        self, device: str, readings: list[Reading], rejected: list[int | None]
    ) -> tuple[DeviceState, list[Outcome]]:
        written: set[str] = set()

        def change(state: DeviceState | None) -> tuple[DeviceState, list[Outcome]]:
            new, outcomes = fold(state, readings, device_id=device, rejected=rejected)
            # History before the state: rows are idempotent, the state write is the commit.
            fresh = [
                r
                for r, o in zip(readings, outcomes, strict=True)
                if o.counted and row_key(r) not in written
            ]
            if fresh:
                self._history.write(fresh)
                written.update(row_key(r) for r in fresh)
            return new, outcomes

        return self._state.commit(device, change)

    def _prune(self, devices: list[str]) -> None:
        if self._retention is None or self._prune_per_batch == 0:
            return
        now = self._clock()
        due = [
            d
            for d in devices
            if now - self._pruned_at.get(d, datetime.min.replace(tzinfo=UTC))
            >= self._prune_interval
        ][: self._prune_per_batch]
        for device in due:
            self._pruned_at[device] = now
            try:
                deleted = self._history.prune(device, now - self._retention)
            except (TransientStoreError, HttpResponseError) as exc:
                # Housekeeping: the counts are committed; never fail (and re-run) the batch
                # for it. Also not for a 404: another worker pruning the same device deleted a
                # row first, and the transaction failed as a whole. The next prune catches up.
                _log.warning("pruning history of %r failed: %s", device, exc)
                continue
            if deleted:
                _log.info("pruned %d history rows of %r", deleted, device)
