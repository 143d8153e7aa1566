"""A durable FIFO of encoded readings in SQLite: nothing leaves it before the hub acknowledged.

The loop appends every reading here *before* anything is sent; the sender reads the oldest
rows, sends them, and only then deletes them (:meth:`ReadingBuffer.ack`). Each append and each
ack is one committed transaction, synced to disk (WAL journal + ``synchronous=FULL``), so a
reading whose append returned survives SIGKILL and power loss, and a reading is never deleted
unsent.

Bounds: at most ``max_readings`` rows and ``max_bytes`` bytes of reading bodies. An append that
goes past either bound deletes the oldest rows in the same transaction and adds them to a
``dropped`` counter kept in the same file (so it survives a restart and always agrees with the
rows). Rows the sender is sending at that moment (:meth:`peek` holds them until :meth:`ack`) are
never dropped: a reading is either delivered or counted as dropped, never both, so the dropped
count equals the gap in ``seq`` the sink counts as Missing. The newest reading is always kept,
even when alone it is over ``max_bytes``.

A file that SQLite reports as corrupt (or not a database, or of an unknown layout) is moved
aside to ``<name>.corrupt-<UTC time>`` with an error in the log, and a new, empty buffer is
started: an unattended device keeps measuring instead of failing at every restart. A file that
cannot be opened at all (a permission or a missing folder) is a :class:`BufferStoreError`.

``path=None`` keeps the buffer in memory: bounded the same way, but gone at exit (the
``enviro-sensor`` command uses it, so a wiring check prints only its own readings).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .errors import BufferStoreError, ConfigError
from .message import Packable

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_MAX_READINGS = 100_000  # 11.5 days at the default 10 s interval
DEFAULT_MAX_MB = 64
MAX_READINGS_RANGE = (10, 10_000_000)
MAX_MB_RANGE = (1, 10_000)
MAX_READINGS_ENV = "ENVIRO_BUFFER_MAX_READINGS"
MAX_MB_ENV = "ENVIRO_BUFFER_MAX_MB"
FILE_NAME = "buffer.sqlite3"
_MB = 1024 * 1024
_CORRUPT_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_COLUMNS = ("id", "boot", "seq", "source", "alert", "body")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    boot TEXT NOT NULL,
    seq INTEGER NOT NULL,
    source TEXT NOT NULL,
    alert INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters (name, value) VALUES ('dropped', 0);
"""


@dataclass(frozen=True, slots=True)
class BufferLimits:
    """The buffer's bounds.

    Attributes:
        max_readings: most readings kept.
        max_bytes: most bytes of reading bodies kept (the file is somewhat larger: SQLite's
            pages, the index and the WAL journal).
    """

    max_readings: int = DEFAULT_MAX_READINGS
    max_bytes: int = DEFAULT_MAX_MB * _MB

    def __post_init__(self) -> None:
        for name in ("max_readings", "max_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> BufferLimits:
        """Bounds from ``ENVIRO_BUFFER_MAX_READINGS`` and ``ENVIRO_BUFFER_MAX_MB`` (unset: default).

        Raises:
            ConfigError: a value is not a whole number or out of range; every bad variable is
                named in the one message.
        """
        problems: list[str] = []
        readings = _env_int(
            environ, MAX_READINGS_ENV, DEFAULT_MAX_READINGS, MAX_READINGS_RANGE, problems
        )
        mb = _env_int(environ, MAX_MB_ENV, DEFAULT_MAX_MB, MAX_MB_RANGE, problems)
        if problems:
            raise ConfigError("; ".join(problems), problems=problems)
        return cls(max_readings=readings, max_bytes=mb * _MB)


def _env_int(
    environ: Mapping[str, str],
    name: str,
    default: int,
    bounds: tuple[int, int],
    problems: list[str],
) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    low, high = bounds
    try:
        value = int(text, 10)
    except ValueError:
        problems.append(f"{name}: {text[:40]!r} is not a whole number ({low}..{high})")
        return default
    if not low <= value <= high:
        problems.append(f"{name}: must be {low}..{high}, got {value}")
        return default
    return value


@dataclass(frozen=True, slots=True)
class Entry:
    """One buffered reading.

    Attributes:
        id: its place in the buffer (grows with every append, never reused: FIFO order).
        boot: the reading's boot id.
        seq: the reading's seq within the boot.
        source: ``bme680`` or ``simulated``.
        alert: the reading raised the temperature alert.
        body: the reading's compact JSON (one object).
    """

    id: int
    boot: str
    seq: int
    source: str
    alert: bool
    body: bytes


@dataclass(frozen=True, slots=True)
class BufferStats:
    """What the buffer holds, for the twin's reported properties.

    Attributes:
        depth: readings waiting.
        bytes: bytes of their bodies.
        dropped: readings dropped because the buffer was full, ever (kept in the file).
    """

    depth: int
    bytes: int
    dropped: int


class ReadingBuffer:
    """The FIFO (thread-safe: the reading loop appends while the sender peeks and acks)."""

    def __init__(
        self,
        *,
        path: str | os.PathLike[str] | None,
        max_readings: int = DEFAULT_MAX_READINGS,
        max_bytes: int = DEFAULT_MAX_MB * _MB,
    ) -> None:
        """Open (or create) the buffer.

        Args:
            path: the SQLite file (its folder is created); None = in memory, not durable.
            max_readings: most readings kept (>= 1).
            max_bytes: most bytes of reading bodies kept (>= 1).

        Raises:
            ValueError: a bound is not a whole number >= 1, or ``path`` is not a path.
            BufferStoreError: the file cannot be opened or created.
        """
        limits = BufferLimits(max_readings=max_readings, max_bytes=max_bytes)
        if path is not None and not isinstance(path, str | os.PathLike):
            raise ValueError(f"path must be a path or None, got {type(path).__name__}")
        if isinstance(path, str) and path in ("", ":memory:"):
            raise ValueError("path must name a file (None keeps the buffer in memory)")
        self._path = None if path is None else Path(path)
        self._limits = limits
        self._lock = threading.Lock()
        self._held_upto = 0  # rows with id <= this are being sent: never dropped
        self._moved_aside: Path | None = None
        self._closed = False
        self._db = self._open()
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM readings")
        self._count, self._bytes = (int(v) for v in row.fetchone())
        self._dropped = self._counter("dropped")
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'")
        found = row.fetchone()
        self._last_id = int(found[0]) if found else 0
        if self._count:
            log.info(
                "buffer %s: %d readings waiting from an earlier run (%d dropped so far)",
                self._path,
                self._count,
                self._dropped,
            )

    @property
    def path(self) -> Path | None:
        """The file (None in memory)."""
        return self._path

    @property
    def limits(self) -> BufferLimits:
        """The bounds."""
        return self._limits

    @property
    def last_id(self) -> int:
        """The id of the newest reading ever appended (0 before the first); ids never repeat."""
        with self._lock:
            return self._last_id

    @property
    def moved_aside(self) -> Path | None:
        """Where an unusable file found at open was moved (None when it was fine)."""
        return self._moved_aside

    def stats(self) -> BufferStats:
        """Depth, bytes and dropped count."""
        with self._lock:
            return BufferStats(depth=self._count, bytes=self._bytes, dropped=self._dropped)

    def __len__(self) -> int:
        with self._lock:
            return self._count

    def append(self, body: bytes, *, boot: str, seq: int, source: str, alert: bool) -> int:
        """Add one reading at the end, durably (synced before this returns); drop past the bounds.

        Returns:
            How many of the oldest readings this append dropped (0 unless full).

        Raises:
            ValueError: ``body`` is empty or not bytes.
            BufferStoreError: the write failed (disk full, I/O error); the buffer is unchanged.
        """
        return self.append_many(
            [Entry(id=0, boot=boot, seq=seq, source=source, alert=alert, body=body)]
        )

    def append_many(self, readings: Sequence[Packable]) -> int:
        """Add several readings at the end in one synced transaction (a bulk load); as append.

        Raises:
            ValueError: no readings, or a body is empty or not bytes.
            BufferStoreError: the write failed; the buffer is unchanged.
        """
        if not readings:
            raise ValueError("nothing to append")
        rows = []
        for r in readings:
            body = r.body
            if not isinstance(body, bytes) or not body:
                raise ValueError("body must be non-empty bytes")
            rows.append((r.boot, r.seq, r.source, int(r.alert), body))
        with self._lock:
            self._check_open()
            try:
                with self._transaction():
                    new_id = self._last_id
                    for row in rows:
                        cur = self._db.execute(
                            "INSERT INTO readings (boot, seq, source, alert, body) "
                            "VALUES (?, ?, ?, ?, ?)",
                            row,
                        )
                        new_id = int(cur.lastrowid or 0)
                    count = self._count + len(rows)
                    size = self._bytes + sum(len(row[4]) for row in rows)
                    dropped, freed = self._trim(count, size, new_id)
                    if dropped:
                        self._db.execute(
                            "UPDATE counters SET value = value + ? WHERE name = 'dropped'",
                            (dropped,),
                        )
            except sqlite3.Error as exc:
                raise BufferStoreError(f"buffer {self._where()}: append failed: {exc}") from exc
            self._count, self._bytes = count - dropped, size - freed
            self._dropped += dropped
            self._last_id = new_id
        if dropped:
            log.warning(
                "buffer full (%d readings, %d bytes max): dropped the %d oldest (%d in all)",
                self._limits.max_readings,
                self._limits.max_bytes,
                dropped,
                self._dropped,
            )
        return dropped

    def peek(self, limit: int, *, hold: bool = True) -> list[Entry]:
        """The oldest ``limit`` readings; with ``hold`` they are never dropped until :meth:`ack`.

        The sender holds what it is about to send, so a reading is either delivered or counted
        as dropped, never both. ``hold=False`` only looks.

        Raises:
            ValueError: ``limit`` < 1.
            BufferStoreError: the read failed.
        """
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        with self._lock:
            self._check_open()
            try:
                rows = self._db.execute(
                    "SELECT id, boot, seq, source, alert, body FROM readings ORDER BY id LIMIT ?",
                    (limit,),
                ).fetchall()
            except sqlite3.Error as exc:
                raise BufferStoreError(f"buffer {self._where()}: read failed: {exc}") from exc
            entries = [
                Entry(id=r[0], boot=r[1], seq=r[2], source=r[3], alert=bool(r[4]), body=r[5])
                for r in rows
            ]
            if entries and hold:
                self._held_upto = max(self._held_upto, entries[-1].id)
            return entries

    def ack(self, upto_id: int) -> int:
        """The hub acknowledged every reading up to ``upto_id``: delete them, durably.

        Returns:
            How many readings left the buffer.

        Raises:
            BufferStoreError: the delete failed (the readings stay and are sent again).
        """
        with self._lock:
            self._check_open()
            try:
                with self._transaction():
                    got = self._db.execute(
                        "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM readings "
                        "WHERE id <= ?",
                        (upto_id,),
                    ).fetchone()
                    self._db.execute("DELETE FROM readings WHERE id <= ?", (upto_id,))
            except sqlite3.Error as exc:
                raise BufferStoreError(f"buffer {self._where()}: ack failed: {exc}") from exc
            removed, freed = int(got[0]), int(got[1])
            self._count -= removed
            self._bytes -= freed
            self._held_upto = 0
            return removed

    def hold(self, upto_id: int) -> None:
        """Hold only the readings up to ``upto_id`` (the message being sent) of what peek held."""
        with self._lock:
            self._held_upto = min(self._held_upto, upto_id)

    def release(self) -> None:
        """Stop holding what :meth:`peek` returned (nothing was sent); it may be dropped again."""
        with self._lock:
            self._held_upto = 0

    def close(self) -> None:
        """Close the file (idempotent); later calls raise BufferStoreError."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> ReadingBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------

    def _trim(self, count: int, size: int, new_id: int) -> tuple[int, int]:
        """Delete the oldest rows (not held, not the new one) until within the bounds."""
        limits = self._limits
        if count <= limits.max_readings and size <= limits.max_bytes:
            return 0, 0
        dropped = freed = 0
        last = self._held_upto
        while count - dropped > limits.max_readings or size - freed > limits.max_bytes:
            rows = self._db.execute(
                "SELECT id, LENGTH(body) FROM readings WHERE id > ? AND id < ? "
                "ORDER BY id LIMIT 256",
                (last, new_id),
            ).fetchall()
            if not rows:
                break  # only held rows and the new one are left: keep them
            for row_id, length in rows:
                if count - dropped <= limits.max_readings and size - freed <= limits.max_bytes:
                    break
                dropped += 1
                freed += int(length)
                last = int(row_id)
        if dropped:
            self._db.execute(
                "DELETE FROM readings WHERE id > ? AND id <= ?", (self._held_upto, last)
            )
        return dropped, freed

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def _where(self) -> str:
        return str(self._path) if self._path is not None else "(in memory)"

    def _check_open(self) -> None:
        if self._closed:
            raise BufferStoreError(f"buffer {self._where()} is closed")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _open(self) -> sqlite3.Connection:
        if self._path is None:
            return self._connect(":memory:")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BufferStoreError(f"buffer {self._path}: cannot create its folder: {exc}") from exc
        try:
            return self._connect(str(self._path))
        except _Unusable as exc:
            self._moved_aside = self._move_aside(exc.reason)
        return self._connect(str(self._path))

    def _connect(self, target: str) -> sqlite3.Connection:
        """Connect, set durability, check the file and create the tables."""
        try:
            db = sqlite3.connect(target, isolation_level=None, check_same_thread=False, timeout=10)
        except sqlite3.Error as exc:
            raise BufferStoreError(f"buffer {target}: cannot open: {exc}") from exc
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if target != ":memory:" and str(mode).lower() != "wal":
                # Some file systems cannot hold a WAL; a rollback journal with FULL sync is as safe.
                log.warning("buffer %s: journal mode %s (WAL not available here)", target, mode)
            db.execute("PRAGMA synchronous=FULL")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise _Unusable(f"integrity check failed: {check}")
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if version not in (0, SCHEMA_VERSION) or (version == 0 and tables):
                raise _Unusable(
                    f"not a buffer of this module (layout {version}, tables {sorted(tables)})"
                )
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            columns = [r[1] for r in db.execute("PRAGMA table_info(readings)")]
            if columns != list(_COLUMNS):
                raise _Unusable(f"unexpected columns {columns}")
        except _Unusable:
            db.close()
            raise
        except sqlite3.DatabaseError as exc:
            db.close()
            if getattr(exc, "sqlite_errorcode", None) in _CORRUPT_CODES:
                raise _Unusable(str(exc)) from exc
            raise BufferStoreError(f"buffer {target}: cannot use it: {exc}") from exc
        if target != ":memory:":
            _sync_folder(Path(target).parent)
        return db

    def _move_aside(self, reason: str) -> Path:
        assert self._path is not None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self._path.with_name(f"{self._path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self._path.with_name(f"{self._path.name}.corrupt-{stamp}-{n}")
        try:
            for suffix in ("-wal", "-shm", ""):
                src = Path(f"{self._path}{suffix}")
                if src.exists():
                    os.replace(src, Path(f"{target}{suffix}"))
        except OSError as exc:
            raise BufferStoreError(
                f"buffer {self._path} is unusable ({reason}) and could not be moved aside: {exc}"
            ) from exc
        log.error(
            "buffer %s is unusable (%s): moved it to %s and started an empty buffer; "
            "readings in it were not sent",
            self._path,
            reason,
            target,
        )
        return target


class _Unusable(Exception):
    """The file is there but is not a usable buffer (corrupt, not SQLite, unknown layout)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _sync_folder(folder: Path) -> None:
    """Sync the folder so a newly created database (and WAL) file survives power loss."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the files themselves are synced
    finally:
        os.close(fd)
