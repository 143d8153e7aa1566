"""The local hub's built-in endpoint: a durable, ordered event log in SQLite.

It plays the part of IoT Hub's Event Hubs-compatible endpoint: every accepted message is
appended with a sequence number, the enqueued time and the system properties the hub sets.
A consumer group reads batches after its checkpoint and checkpoints when it has processed
them, so delivery is at-least-once: a consumer that stops before its checkpoint gets the
same batch again, as the Functions IoT Hub trigger does after a failed or killed run.

The hub process appends; a sink in another process reads. WAL mode lets both at once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_CONSUMER_GROUP = "$Default"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    enqueued_time TEXT NOT NULL,
    system_properties TEXT NOT NULL,
    properties TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    consumer_group TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Event:
    """One event as a consumer of the built-in endpoint sees it.

    Attributes:
        sequence_number: 1, 2, 3... in the order the hub accepted the messages.
        enqueued_time: when the hub accepted it (UTC).
        system_properties: set by the hub, never by the device:
            ``iothub-connection-device-id``, ``iothub-connection-module-id`` (modules only),
            ``message-id``, ``content-type``, ``content-encoding`` and the like.
        properties: the application properties the sender set.
        body: the message body, byte for byte.
    """

    sequence_number: int
    enqueued_time: datetime
    system_properties: Mapping[str, str]
    properties: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class NewEvent:
    """What the hub appends: everything but the sequence number and time."""

    system_properties: Mapping[str, str]
    properties: Mapping[str, str]
    body: bytes


class EventLog:
    """A durable, ordered, at-least-once event log backed by one SQLite file.

    Safe to share between threads of one process; several processes may open the same file.
    """

    def __init__(self, path: str | Path) -> None:
        """Open (creating if needed) the log at ``path``."""
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self._path, check_same_thread=False, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash (not a power cut): enough for a stand-in,
        # and it keeps a commit well under a millisecond.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.commit()

    def append(self, event: NewEvent) -> Event:
        """Append one event and return it with its sequence number."""
        return self.append_many([event])[0]

    def append_many(self, events: Iterable[NewEvent]) -> list[Event]:
        """Append events in one transaction, in order."""
        now = datetime.now(UTC)
        stamp = now.isoformat()
        out: list[Event] = []
        with self._lock, self._db:
            for ev in events:
                cur = self._db.execute(
                    "INSERT INTO events (enqueued_time, system_properties, properties, body)"
                    " VALUES (?, ?, ?, ?)",
                    (
                        stamp,
                        json.dumps(dict(ev.system_properties)),
                        json.dumps(dict(ev.properties)),
                        bytes(ev.body),
                    ),
                )
                seq = cur.lastrowid
                assert seq is not None
                out.append(
                    Event(seq, now, dict(ev.system_properties), dict(ev.properties), ev.body)
                )
        return out

    def read_after(self, sequence_number: int, *, max_events: int = 100) -> list[Event]:
        """Events with a sequence number above ``sequence_number``, oldest first."""
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, enqueued_time, system_properties, properties, body FROM events"
                " WHERE seq > ? ORDER BY seq LIMIT ?",
                (sequence_number, max_events),
            ).fetchall()
        return [
            Event(
                sequence_number=row[0],
                enqueued_time=datetime.fromisoformat(row[1]),
                system_properties=json.loads(row[2]),
                properties=json.loads(row[3]),
                body=bytes(row[4]),
            )
            for row in rows
        ]

    def checkpoint_of(self, consumer_group: str = DEFAULT_CONSUMER_GROUP) -> int:
        """The last sequence number the group has checkpointed (0 = none)."""
        with self._lock:
            row = self._db.execute(
                "SELECT seq FROM checkpoints WHERE consumer_group = ?", (consumer_group,)
            ).fetchone()
        return int(row[0]) if row else 0

    def read_batch(
        self, *, consumer_group: str = DEFAULT_CONSUMER_GROUP, max_events: int = 100
    ) -> list[Event]:
        """The next batch after the group's checkpoint. Reading does not move the checkpoint."""
        return self.read_after(self.checkpoint_of(consumer_group), max_events=max_events)

    def checkpoint(
        self, sequence_number: int, *, consumer_group: str = DEFAULT_CONSUMER_GROUP
    ) -> None:
        """Record that the group has processed everything up to ``sequence_number``.

        A checkpoint never moves backwards.
        """
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO checkpoints (consumer_group, seq) VALUES (?, ?)"
                " ON CONFLICT(consumer_group) DO UPDATE SET seq = max(seq, excluded.seq)",
                (consumer_group, sequence_number),
            )

    def last_sequence_number(self) -> int:
        """The newest sequence number in the log (0 when empty)."""
        with self._lock:
            row = self._db.execute("SELECT max(seq) FROM events").fetchone()
        return int(row[0] or 0)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
