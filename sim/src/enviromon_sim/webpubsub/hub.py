"""Who is connected, to which hub, user and groups, and the fan-out of one message to many.

No I/O here: each connection has a bounded queue that a writer task (in `server`) drains
onto its WebSocket. Fan-out only puts pre-built frames on queues, so one slow client never
holds up the others or the REST caller, as with the real service's ``202 Accepted``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from enviromon_sim.webpubsub import protocol
from enviromon_sim.webpubsub.protocol import Message, Permissions

logger = logging.getLogger(__name__)

#: Frames, and bytes, a connection may have waiting before it is dropped as too slow.
SEND_QUEUE_FRAMES = 10_000
SEND_QUEUE_BYTES = 16 * 1024 * 1024
CLOSE_GOING_AWAY = 1001
CLOSE_NORMAL = 1000


@dataclass(frozen=True, slots=True)
class Close:
    """Queued after the last frame: close the socket with this code and reason."""

    code: int
    reason: str


Outgoing = str | bytes | Close


@dataclass(eq=False)
class Connection:
    """One client WebSocket, as the hub sees it."""

    hub: str
    user_id: str | None
    permissions: Permissions
    subprotocol: bool
    connection_id: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    groups: set[str] = field(default_factory=set)
    seen_ack_ids: set[int] = field(default_factory=set)
    queue: asyncio.Queue[Outgoing] = field(default_factory=asyncio.Queue)
    queued_bytes: int = 0
    closing: bool = False
    #: Drops the connection at once (the server sets it to abort the TCP transport).
    abort: Callable[[], None] | None = None

    def enqueue(self, frame: Outgoing) -> None:
        """Queue a frame; a client too slow to keep up is dropped rather than buffered forever."""
        if self.closing:
            return
        size = len(frame) if not isinstance(frame, Close) else 0
        if self.queue.qsize() >= SEND_QUEUE_FRAMES or self.queued_bytes + size > SEND_QUEUE_BYTES:
            # Its socket is backed up, so a close frame could not get through either.
            logger.warning("dropping connection %s: too slow, send queue full", self.connection_id)
            self.closing = True
            if self.abort is not None:
                self.abort()
            return
        self.queued_bytes += size
        self.queue.put_nowait(frame)

    def sent(self, frame: str | bytes) -> None:
        """The writer took ``frame`` off the queue."""
        self.queued_bytes -= len(frame)

    def close(self, code: int, reason: str) -> None:
        """Ask the writer to close the socket after the frames already queued."""
        if self.closing:
            return
        self.closing = True
        self.queue.put_nowait(Close(code, reason))


class _Frames:
    """The two encodings of one message, each built at most once per fan-out."""

    def __init__(self, message: Message, *, group: str | None, from_user_id: str | None):
        self._message = message
        self._group = group
        self._from_user_id = from_user_id
        self._plain: str | bytes | None = None
        self._json: str | None = None

    def for_connection(self, conn: Connection) -> str | bytes:
        if not conn.subprotocol:
            if self._plain is None:
                self._plain = protocol.plain_frame(self._message)
            return self._plain
        if self._json is None:
            if self._group is None:
                self._json = protocol.server_message_frame(self._message)
            else:
                self._json = protocol.group_message_frame(
                    self._message, group=self._group, from_user_id=self._from_user_id
                )
        return self._json


class Hubs:
    """Every connection of every hub, indexed by id, user and group."""

    def __init__(self) -> None:
        self._connections: dict[str, Connection] = {}
        self._by_user: dict[tuple[str, str], set[Connection]] = {}
        self._by_group: dict[tuple[str, str], set[Connection]] = {}

    def __len__(self) -> int:
        return len(self._connections)

    def add(self, conn: Connection, groups: Iterable[str] = ()) -> None:
        """Register a new connection and join it to ``groups`` (from its token)."""
        self._connections[conn.connection_id] = conn
        if conn.user_id is not None:
            self._by_user.setdefault((conn.hub, conn.user_id), set()).add(conn)
        for group in groups:
            self.join(conn, group)

    def remove(self, conn: Connection) -> None:
        """Forget a connection that has closed."""
        if self._connections.pop(conn.connection_id, None) is None:
            return
        if conn.user_id is not None:
            _discard(self._by_user, (conn.hub, conn.user_id), conn)
        for group in list(conn.groups):
            self.leave(conn, group)

    def join(self, conn: Connection, group: str) -> None:
        """Add a connection to a group (idempotent)."""
        conn.groups.add(group)
        self._by_group.setdefault((conn.hub, group), set()).add(conn)

    def leave(self, conn: Connection, group: str) -> None:
        """Remove a connection from a group (idempotent)."""
        conn.groups.discard(group)
        _discard(self._by_group, (conn.hub, group), conn)

    def connection(self, hub: str, connection_id: str) -> Connection | None:
        """The connection with this id in this hub, if it is connected."""
        conn = self._connections.get(connection_id)
        return conn if conn is not None and conn.hub == hub else None

    def in_hub(self, hub: str) -> list[Connection]:
        """Every connection of a hub."""
        return [c for c in self._connections.values() if c.hub == hub]

    def of_user(self, hub: str, user_id: str) -> list[Connection]:
        """The connections of one user in a hub."""
        return list(self._by_user.get((hub, user_id), ()))

    def in_group(self, hub: str, group: str) -> list[Connection]:
        """The connections in a group of a hub."""
        return list(self._by_group.get((hub, group), ()))

    def all(self) -> list[Connection]:
        """Every connection."""
        return list(self._connections.values())


def deliver(
    connections: Iterable[Connection],
    message: Message,
    *,
    excluded: Iterable[str] = (),
    group: str | None = None,
    from_user_id: str | None = None,
) -> int:
    """Queue ``message`` for each connection not in ``excluded``; return how many."""
    skip = set(excluded)
    frames = _Frames(message, group=group, from_user_id=from_user_id)
    count = 0
    for conn in connections:
        if conn.connection_id in skip or conn.closing:
            continue
        conn.enqueue(frames.for_connection(conn))
        count += 1
    return count


def _discard(
    index: dict[tuple[str, str], set[Connection]], key: tuple[str, str], conn: Connection
) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(conn)
        if not members:
            del index[key]
