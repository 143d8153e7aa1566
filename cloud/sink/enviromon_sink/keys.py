r"""Table keys: device ids escaped safely and reversibly, and table names from a prefix.

A PartitionKey may not contain ``/ \ # ?`` or control characters, yet IoT Hub device ids may
hold ``#`` and ``?``. Everything outside ``[A-Za-z0-9_.-]`` is written as ``~`` and two hex
digits per UTF-8 byte (``~`` itself too, so the mapping is one-to-one and reversible), and a
typical id such as ``pi-kitchen`` stays readable.
"""

from __future__ import annotations

import re
import zlib
from typing import Final

_SAFE: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_ESCAPED_RE: Final = re.compile(r"(?:[A-Za-z0-9_.-]|~[0-9a-f]{2})*")
# Table names are 3-63 letters and digits starting with a letter; the longest role suffix
# ("deadletter") leaves room for a prefix of 40.
_PREFIX_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9]{0,39}")


def escape_key(text: str) -> str:
    """``text`` as a valid PartitionKey/RowKey, reversible with :func:`unescape_key`."""
    out: list[str] = []
    for ch in text:
        if ch in _SAFE:
            out.append(ch)
        else:
            out.extend(f"~{b:02x}" for b in ch.encode("utf-8", "surrogatepass"))
    return "".join(out)


def unescape_key(key: str) -> str:
    """Inverse of :func:`escape_key`; raises ValueError on a key it did not produce."""
    if not _ESCAPED_RE.fullmatch(key):
        raise ValueError(f"not an escaped key: {key!r}")
    raw = bytearray()
    i = 0
    while i < len(key):
        if key[i] == "~":
            raw.append(int(key[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.append(ord(key[i]))
            i += 1
    return raw.decode("utf-8", "surrogatepass")


def table_name(prefix: str, role: str) -> str:
    """The table for ``role`` (``devices``, ``history``, ``deadletter``) under ``prefix``.

    Raises:
        ValueError: the prefix would not make a valid table name (1-40 letters and digits,
            starting with a letter).
    """
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(
            f"table prefix must be 1-40 letters and digits, starting with a letter: {prefix!r}"
        )
    return f"{prefix}{role}"


#: Buckets (PartitionKeys) of the streams table. Fixed for the life of a table: changing it
#: would move every stream. 8 keeps a batch that spans a hundred devices at ~8 transactions.
BUCKETS: Final = 8
#: Between the escaped device and module ids of a stream key (never produced by escape_key).
MODULE_SEPARATOR: Final = "!"
#: Between a row kind, the stream key and the rest of a RowKey (never produced by escape_key).
FIELD_SEPARATOR: Final = "$"


def stream_key(device_id: str, module_id: str | None) -> str:
    """The stable id of a (device, module) stream: escaped device, ``!``, escaped module.

    A plain device (no module) is just its escaped id, so ``pi-kitchen`` stays readable.
    Neither separator can occur inside an escaped id, so the mapping is one-to-one.
    """
    key = escape_key(device_id)
    return f"{key}{MODULE_SEPARATOR}{escape_key(module_id)}" if module_id else key


def split_stream_key(key: str) -> tuple[str, str | None]:
    """Inverse of :func:`stream_key`; raises ValueError on a key it did not produce."""
    device, sep, module = key.partition(MODULE_SEPARATOR)
    if sep and not module:
        raise ValueError(f"not a stream key: {key!r}")
    return unescape_key(device), (unescape_key(module) if sep else None)


def bucket_of(key: str) -> str:
    """The PartitionKey holding a stream's rows: a stable hash of its escaped *device* id.

    By device, not by stream, so every module of a device shares one partition (its streams
    are then one RowKey range away from each other).
    """
    device = key.partition(MODULE_SEPARATOR)[0]
    # The salt does NOT make buckets independent of a partitioning by a plain CRC-32 of the
    # id: CRC is affine over GF(2), so for ids of one length crc32(b"bucket/" + id) is
    # crc32(id) XOR a constant, and mod 8 every such partition maps to one bucket. Harmless
    # for the service (IoT Hub partitions by its own hash), but a test or bench load must not
    # partition by CRC-32 (tests/sink/load.py uses SHA-256), or every batch hits one bucket.
    return f"b{zlib.crc32(b'bucket/' + device.encode('ascii')) % BUCKETS:02d}"


def buckets() -> list[str]:
    """Every PartitionKey of the streams table."""
    return [f"b{i:02d}" for i in range(BUCKETS)]


def row_prefix(kind: str, key: str = "") -> str:
    """``<kind>$`` or ``<kind>$<stream key>$``: RowKey prefixes of one kind of row."""
    return f"{kind}{FIELD_SEPARATOR}{key}{FIELD_SEPARATOR}" if key else f"{kind}{FIELD_SEPARATOR}"


def prefix_end(prefix: str) -> str:
    """The smallest string above every string that starts with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)
