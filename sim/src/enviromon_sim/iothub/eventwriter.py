"""Batched, ordered writes of accepted telemetry to the event log, off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from enviromon_sim.iothub.eventlog import Event, EventLog, NewEvent

logger = logging.getLogger(__name__)

MAX_UNWRITTEN = 10_000  # accepted events waiting for the event log before senders must wait
BATCH = 500  # events per SQLite transaction


class EventWriter:
    """Appends accepted telemetry to the event log in batches, in arrival order.

    One task owns the log's writes; each batch is one SQLite transaction, committed off the
    event loop, and only then are the senders' PUBACKs sent (a PUBACK means "durable"). If a
    write fails, the batch's senders get ``failed`` instead: the hub drops their connections
    unacknowledged, so the SDK re-sends after reconnecting. Nothing is acknowledged unwritten.
    """

    def __init__(self, *, log: EventLog) -> None:
        """Write to ``log``."""
        self._log = log
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._room = asyncio.Event()
        self._room.set()

    def start(self) -> None:
        """Start the writer task."""
        self._task = asyncio.create_task(self._run(), name="hub-event-writer")

    def submit(
        self, event: NewEvent, done: Callable[[Event], None], failed: Callable[[], None]
    ) -> None:
        """Queue ``event``: ``done(stored)`` once committed, ``failed()`` if the write fails."""
        self._pending.append(_Pending(event, done, failed))
        if len(self._pending) >= MAX_UNWRITTEN:
            self._room.clear()
        self._idle.clear()
        self._wake.set()

    async def wait_for_room(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait (at most ``timeout`` s) while too many events wait to be written.

        Connections call this before reading their next packet, so a flood of QoS 0
        messages slows its sender instead of filling the hub's memory. Returns whether it
        had to wait.
        """
        if self._room.is_set():
            return False
        await asyncio.wait_for(self._room.wait(), timeout)
        return True

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while self._pending:
                    batch, self._pending = self._pending[:BATCH], self._pending[BATCH:]
                    await self._write(batch)
                    if len(self._pending) < MAX_UNWRITTEN:
                        self._room.set()
            finally:
                if not self._pending:
                    self._idle.set()

    async def _write(self, batch: list[_Pending]) -> None:
        try:
            stored = await asyncio.to_thread(self._log.append_many, [p.event for p in batch])
        except Exception:
            logger.exception(
                "event log write failed; dropping %d senders unacknowledged", len(batch)
            )
            for item in batch:
                item.failed()
            return
        for item, event in zip(batch, stored, strict=True):
            try:
                item.done(event)
            except Exception:
                logger.exception("event callback failed")

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        await self._idle.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@dataclass(frozen=True, slots=True)
class _Pending:
    event: NewEvent
    done: Callable[[Event], None]
    failed: Callable[[], None]
