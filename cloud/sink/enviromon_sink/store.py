"""Device state in Azure Tables: one entity per device, written only conditionally.

Per batch and device the processor calls :meth:`DeviceStateStore.commit` with a pure-ish
``change`` (the counting fold, plus idempotent history writes). ``commit`` starts from the state
and ETag this worker wrote last (one request per device per batch when no other worker touched
the device), or reads the entity; applies ``change``; and writes the result with
``update_entity(REPLACE, etag=..., IfNotModified)`` or ``create_entity``. On 412 (someone else
wrote) or 409 (someone else created) it reads again and re-applies, with growing, jittered
delays, until a deadline; then it raises :class:`StoreContentionError` so the host re-runs the
batch. Counters are never written unconditionally.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import EdmType, EntityProperty, TableClient, UpdateMode

from enviromon_sink.counting import BootMark, DeviceState
from enviromon_sink.errors import CorruptStateError, StoreContentionError, TransientStoreError
from enviromon_sink.keys import escape_key

_log = logging.getLogger(__name__)

STATE_ROW: Final = "state"
TRANSIENT_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504})

T = TypeVar("T")


class DeviceStateStore:
    """Conditional read-modify-write of per-device state entities."""

    def __init__(
        self,
        *,
        table: TableClient,
        deadline_s: float = 30.0,
        backoff_base_s: float = 0.02,
        backoff_max_s: float = 1.0,
        cache_size: int = 10_000,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Wrap ``table`` (the devices table; it must exist).

        Args:
            table: the devices table.
            deadline_s: how long one device's commit may keep losing races before raising.
            backoff_base_s: first retry delay; doubles per retry, full jitter, capped.
            backoff_max_s: the cap.
            cache_size: devices whose last written state and ETag are kept (LRU).
            rng: randomness for the jitter.
            sleep: how to wait (tests pass a fake).
            monotonic: the clock for the deadline.
        """
        if deadline_s <= 0 or backoff_base_s <= 0 or backoff_max_s < backoff_base_s:
            raise ValueError("need deadline_s > 0 and 0 < backoff_base_s <= backoff_max_s")
        if cache_size < 0:
            raise ValueError("cache_size must be ≥ 0")
        self._table = table
        self._deadline_s = deadline_s
        self._base = backoff_base_s
        self._cap = backoff_max_s
        self._cache: OrderedDict[str, tuple[DeviceState, str]] = OrderedDict()
        # A Functions worker may run invocations on several threads; the cache is shared.
        self._lock = threading.Lock()
        self._cache_size = cache_size
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._sleep = sleep
        self._monotonic = monotonic
        self.conflicts = 0
        self._cache_score = 1.0

    def commit(
        self, device_id: str, change: Callable[[DeviceState | None], tuple[DeviceState, T]]
    ) -> tuple[DeviceState, T]:
        """Apply ``change`` to the device's state and write it conditionally.

        ``change`` may run more than once (after a lost race) and must give the same result for
        the same input state; side effects in it must be idempotent.

        Returns:
            The committed state and whatever ``change`` returned with it.

        Raises:
            StoreContentionError: still losing races at the deadline.
            TransientStoreError: Table storage unreachable or answering 5xx/429/408.
        """
        deadline = self._monotonic() + self._deadline_s
        cached = self._cache_get(device_id)
        if cached is not None and not self._cache_pays():
            # Another worker usually wrote since (batches of a device are not sticky to this
            # worker): read first rather than waste a write on a stale ETag.
            state, etag = self._read(device_id)
            self._learn(cached[1] == etag)
            cached = (state, etag) if state is not None and etag is not None else None
            from_cache = False
        else:
            from_cache = cached is not None
        attempt = 0
        while True:
            if cached is None:
                current, etag = self._read(device_id)
            else:
                current, etag = cached
            new, extra = change(current)
            entity = to_entity(new)
            try:
                with translate_errors():
                    if etag is None:
                        meta = self._table.create_entity(entity)
                    else:
                        meta = self._table.update_entity(
                            entity,
                            mode=UpdateMode.REPLACE,
                            etag=etag,
                            match_condition=MatchConditions.IfNotModified,
                        )
            except (ResourceModifiedError, ResourceExistsError, ResourceNotFoundError):
                # 412 / 409 / 404: another worker wrote (or deleted) it since we looked.
                self.conflicts += 1
                self._cache_drop(device_id)
                cached = None
                if from_cache:
                    # Our cached ETag was stale: not a race, re-read at once.
                    self._learn(False)
                    from_cache = False
                    continue
                attempt += 1
                delay = self._rng.uniform(0, min(self._cap, self._base * 2**attempt))
                if self._monotonic() + delay > deadline:
                    raise StoreContentionError(
                        f"device {device_id!r}: state changed under us {attempt} times"
                    ) from None
                self._sleep(delay)
                continue
            except TransientStoreError:
                # The write may or may not have landed: forget the cached ETag.
                self._cache_drop(device_id)
                raise
            if from_cache:
                self._learn(True)
            self._cache_put(device_id, new, str(meta["etag"]))
            return new, extra

    def _cache_pays(self) -> bool:
        """Whether cached ETags have mostly been current lately (then they save a read)."""
        return self._cache_score >= 0.5

    def _learn(self, cache_was_current: bool) -> None:
        # An exponential moving average over the last ~20 commits that had a cached entry.
        self._cache_score = 0.9 * self._cache_score + (0.1 if cache_was_current else 0.0)

    def get(self, device_id: str) -> DeviceState | None:
        """The device's committed state, read from the table (None if never written)."""
        state, _ = self._read(device_id)
        return state

    def list(self) -> Iterator[DeviceState]:
        """Every device's committed state."""
        with translate_errors():
            entities = list(
                self._table.query_entities("RowKey eq @rk", parameters={"rk": STATE_ROW})
            )
        for entity in entities:
            try:
                yield from_entity(entity)
            except (KeyError, ValueError, TypeError):
                _log.warning("skipping malformed state entity %r", entity.get("PartitionKey"))

    def forget(self, device_id: str | None = None) -> None:
        """Drop the cached ETag of one device (or all): the next commit reads first."""
        with self._lock:
            if device_id is None:
                self._cache.clear()
            else:
                self._cache.pop(device_id, None)

    def _read(self, device_id: str) -> tuple[DeviceState | None, str | None]:
        try:
            with translate_errors():
                entity = self._table.get_entity(escape_key(device_id), STATE_ROW)
        except ResourceNotFoundError:
            return None, None
        try:
            state = from_entity(entity)
        except (KeyError, ValueError, TypeError) as exc:
            raise CorruptStateError(
                f"device {device_id!r}: state entity unreadable ({type(exc).__name__}: {exc})"
            ) from exc
        return state, str(entity.metadata["etag"])

    def _cache_get(self, device_id: str) -> tuple[DeviceState, str] | None:
        with self._lock:
            hit = self._cache.get(device_id)
            if hit is not None:
                self._cache.move_to_end(device_id)
            return hit

    def _cache_drop(self, device_id: str) -> None:
        with self._lock:
            self._cache.pop(device_id, None)

    def _cache_put(self, device_id: str, state: DeviceState, etag: str) -> None:
        if self._cache_size == 0:
            return
        with self._lock:
            self._cache[device_id] = (state, etag)
            self._cache.move_to_end(device_id)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn transient Azure errors into TransientStoreError (``raise ... from exc``).

    Conflicts (409, 412) and not-found (404) pass through unchanged for the caller to handle.
    """
    try:
        yield
    except Exception as exc:
        if is_transient(exc):
            raise TransientStoreError(f"Table storage: {type(exc).__name__}: {exc}"[:500]) from exc
        raise


def is_transient(exc: BaseException) -> bool:
    """Whether a retry of the whole batch may fix ``exc``."""
    if isinstance(exc, ServiceRequestError | ServiceResponseError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, HttpResponseError):
        return exc.status_code in TRANSIENT_STATUS
    return isinstance(exc, AzureError) and not isinstance(exc, HttpResponseError)


def to_entity(state: DeviceState) -> dict[str, Any]:
    """The Table entity for ``state`` (PartitionKey = escaped device id, RowKey ``state``)."""
    entity: dict[str, Any] = {
        "PartitionKey": escape_key(state.device_id),
        "RowKey": STATE_ROW,
        "DeviceId": state.device_id,
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
        "ModuleId": state.module_id or "",
        "Label": state.label or "",
    }
    if state.rejected_seq is not None:
        entity["RejectedSeq"] = int64(state.rejected_seq)
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
    return DeviceState(
        device_id=str(entity["DeviceId"]),
        count=_int(entity["Count"]),
        duplicates=_int(entity["Duplicates"]),
        missing=_int(entity["Missing"]),
        rejected=_int(entity["Rejected"]),
        rejected_seq=None if rejected_seq is None else _int(rejected_seq),
        boots=boots,
        last_seen=last_seen if isinstance(last_seen, datetime) else None,
        values={str(k): (None if v is None else float(v)) for k, v in values.items()},
        source=entity.get("Source") or None,
        calibration=_int(entity.get("Calibration", 0)),
        alert=bool(entity.get("Alert", False)),
        flags=tuple(json.loads(entity.get("Flags", "[]"))),
        module_id=entity.get("ModuleId") or None,
        label=entity.get("Label") or None,
    )


def int64(value: int) -> EntityProperty:
    """An Int64 Table property: the SDK refuses a plain int beyond Int32's range."""
    return EntityProperty(int(value), EdmType.INT64)


def _int(value: Any) -> int:
    # The SDK gives Int64 properties back as EntityProperty(value, EdmType.INT64).
    raw = getattr(value, "value", value)
    return int(raw)
