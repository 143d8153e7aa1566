"""The hub's state directory: private to its owner, written atomically.

It holds device keys (``registry.json``), the TLS server key and the admin token
(``hub.json``), so the directory is 0700 and every secret file 0600 from the moment it exists.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def private_dir(path: str | Path) -> Path:
    """Create ``path`` (and its parents) if needed and make it owner-only (0700)."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    return directory


def write_file(path: Path, data: str | bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically; the file never exists with a wider mode.

    A temporary file in the same directory (created 0600 by ``mkstemp``) is written, given
    ``mode`` and renamed over ``path``: a reader sees the old or the new content, never half.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            os.fchmod(fh.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
