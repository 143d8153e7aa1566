r"""Table keys: device ids escaped safely and reversibly, and table names from a prefix.

A PartitionKey may not contain ``/ \ # ?`` or control characters, yet IoT Hub device ids may
hold ``#`` and ``?``. Everything outside ``[A-Za-z0-9_.-]`` is written as ``~`` and two hex
digits per UTF-8 byte (``~`` itself too, so the mapping is one-to-one and reversible), and a
typical id such as ``pi-kitchen`` stays readable.
"""

from __future__ import annotations

import re
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
