"""The seam between the processor and storage: small Protocols and plain data, no Azure types.

The processor loads the state of every stream a batch touches in one call, folds each
stream's readings, and hands back one :class:`StreamWrite` per stream; the store commits them
(conditionally: every state write carries the ETag it was loaded with, or creates a stream
never stored) and says per stream what happened. ``tables.TableStreamStore`` is the Azure
Tables implementation; a test may pass a fake of these Protocols.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from enviromon_sink.counting import DeviceState
from enviromon_sink.events import InboundEvent
from enviromon_sink.normalise import Reading


@dataclass(frozen=True, slots=True)
class Loaded:
    """A stream's stored state and its ETag (both None: never stored).

    ``error`` says why a stored state could not be read back (then ``state`` is None and
    the stream's part of the batch is dead-lettered: overwriting would lose its counts).
    """

    state: DeviceState | None
    etag: str | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class StreamWrite:
    """What one batch changes for one stream.

    Attributes:
        key: the stream key (``keys.stream_key``).
        state: the state to store.
        etag: the ETag ``state`` was folded from (If-Match), or None to create the stream.
        readings: the readings the fold newly counted: their history (and rollup) rows are
            committed with the state.
    """

    key: str
    state: DeviceState
    etag: str | None
    readings: Sequence[Reading] = ()


class Status(enum.Enum):
    """What became of one stream's write."""

    COMMITTED = "committed"
    #: Someone else wrote (or created, or deleted) the stream since it was loaded: reload.
    CONFLICT = "conflict"
    #: Not sent, or sent in a transaction that another stream's conflict failed: send again.
    NOT_SENT = "not_sent"
    #: Storage refused this stream's part for good (a non-transient error): dead-letter it.
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Outcome:
    """A stream's commit result: the new ETag when committed, the reason when refused."""

    status: Status
    etag: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One page of a device's history, oldest first, and the token for the next page."""

    readings: list[dict[str, Any]] = field(default_factory=list)
    continuation: str | None = None


class StreamStore(Protocol):
    """Counted state, history (and retention) of (device, module) streams."""

    def load(self, keys: Collection[str]) -> dict[str, Loaded]:
        """The stored state of each stream key (an entry for every key asked)."""
        ...

    def groups(self, keys: Collection[str]) -> list[list[str]]:
        """``keys`` cut into groups whose writes can share transactions (every key once).

        The processor loads and commits one group at a time.
        """
        ...

    def commit(self, writes: Sequence[StreamWrite]) -> dict[str, Outcome]:
        """Write each stream's state conditionally with its new history rows, atomically.

        Raises:
            TransientStoreError: storage failed in a way a re-run of the batch may fix.
        """
        ...

    def streams(self) -> list[DeviceState]:
        """Every stored stream's state."""
        ...

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
        """Readings with ``start <= ts < end``, oldest first, ``limit`` at most per page.

        ``all_modules``: every stream of the device, merged by time (``module_id`` ignored).

        Raises:
            ValueError: the continuation token is not one this store gave.
        """
        ...

    def every_history(
        self, start: datetime, end: datetime, *, limit: int, parallel: int = 8
    ) -> list[tuple[DeviceState, HistoryPage]]:
        """Every stream's readings in ``[start, end)``: a page of ``limit`` each, with a token."""
        ...

    def rollups(
        self, step: str, start: datetime, end: datetime, *, as_columns: bool = False
    ) -> list[dict[str, Any]]:
        """Every stream's rollup points of ``step`` in ``[start, end)`` (or as columns)."""
        ...

    def prune(self, key: str, before: datetime, *, max_rows: int) -> int:
        """Delete up to ``max_rows`` history rows of a stream older than ``before``."""
        ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event (or the part of one) the sink refused, and why."""

    event: InboundEvent
    reason: str


class DeadLetterStore(Protocol):
    """Where refused events go, whole, with a reason."""

    def write(self, letters: Sequence[DeadLetter]) -> int:
        """Store each letter (idempotent: a replayed event lands on its row again)."""
        ...
