"""Azurite (Microsoft's Azure Storage emulator, from npm) for Tables, one per test session.

Started by the same code ``enviromon demo`` uses (``enviromon_sim.demo.azurite``: ``node
…/azurite/dist/src/table/main.js`` directly, never npx), in memory, on a free port on 127.0.0.1.
If ``AZURE_TABLES_CONNECTION_STRING`` is set, the same tests run against that account instead
and nothing is started.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from enviromon_sim.demo import azurite as _azurite
from enviromon_sim.demo.azurite import DEV_ACCOUNT, DEV_KEY, connection_string
from enviromon_sim.demo.children import Child, stop_all
from enviromon_sim.demo.errors import ServiceFailedError

ROOT = Path(__file__).resolve().parents[2]
AZURITE_TABLE = _azurite.table_main(ROOT)
START_TIMEOUT_S = 30.0

__all__ = ["DEV_ACCOUNT", "DEV_KEY", "Azurite", "connection_string", "free_port"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_LOCAL_ENDPOINT = re.compile(r"TableEndpoint=http://127\.0\.0\.1:(\d+)/")


def local_table_port(conn: str) -> int:
    """The port of a local (Azurite) Table endpoint, for tests that put a TCP proxy in front.

    Skips the test on any other account (``AZURE_TABLES_CONNECTION_STRING`` on Azure): a plain
    TCP proxy on 127.0.0.1 cannot stand in for a TLS endpoint with its own host name.
    """
    match = _LOCAL_ENDPOINT.search(conn)
    if match is None:
        pytest.skip("needs a local Azurite endpoint to put a TCP proxy in front of")
    return int(match.group(1))


def with_table_port(conn: str, port: int) -> str:
    """``conn`` with its local Table endpoint moved to ``port`` (a proxy in front of it)."""
    return _LOCAL_ENDPOINT.sub(f"TableEndpoint=http://127.0.0.1:{port}/", conn, count=1)


class Azurite:
    """A running Azurite Tables process (the demo's starter, with the same readiness check)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.child = Child(
            name="azurite",
            argv=_azurite.command(AZURITE_TABLE, port=self.port, location=None),
            log_path=workdir / "azurite.log",
            cwd=workdir,
        )
        self.child.start()
        try:
            self.child.wait_ready(
                lambda: _azurite.answers(self.port), timeout=START_TIMEOUT_S, what="answering HTTP"
            )
        except ServiceFailedError:
            self.stop()
            raise

    @property
    def connection_string(self) -> str:
        return connection_string(self.port)

    def stop(self) -> None:
        stop_all([self.child], grace=10)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Tables connection string: ``AZURE_TABLES_CONNECTION_STRING`` or a fresh Azurite."""
    external = os.environ.get("AZURE_TABLES_CONNECTION_STRING")
    if external:
        try:
            yield external
        finally:
            _delete_test_tables(external)
        return
    if not AZURITE_TABLE.exists():
        pytest.fail(f"Azurite is not installed ({AZURITE_TABLE} missing): run `npm ci`")
    server = Azurite(tmp_path_factory.mktemp("azurite"))
    try:
        yield server.connection_string
    finally:
        server.stop()


_PREFIXES: set[str] = set()


def unique_prefix() -> str:
    """A table-name prefix no other test (or run against a shared account) uses."""
    prefix = "t" + uuid.uuid4().hex[:12]
    _PREFIXES.add(prefix)
    return prefix


def _delete_test_tables(conn: str) -> None:
    """On a real account, delete the tables this session's tests made (Azurite forgets them)."""
    from azure.data.tables import TableServiceClient

    service = TableServiceClient.from_connection_string(conn)
    for table in list(service.list_tables()):
        if any(table.name.startswith(p) for p in _PREFIXES):
            service.delete_table(table.name)


@pytest.fixture
def table_prefix() -> str:
    """A fresh table-name prefix per test, so tests never see each other's rows."""
    return unique_prefix()


@pytest.fixture
def make_prefix() -> Callable[[], str]:
    """A factory of fresh table-name prefixes, for tests that need several."""
    return unique_prefix


# ----- Blob (the dashboard's static website, `enviromon dashboard publish`) -------------------

AZURITE_BLOB = ROOT / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"


def blob_connection_string(port: int) -> str:
    """The dev account's connection string on a local Azurite Blob port."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{DEV_ACCOUNT};"
    )


@pytest.fixture(scope="session")
def azurite_blob(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An in-memory Azurite Blob service on a free port, one per session; its connection string."""
    tmp_path = tmp_path_factory.mktemp("azurite-blob")
    if not AZURITE_BLOB.exists():
        pytest.fail(f"Azurite is not installed ({AZURITE_BLOB} missing): run `npm ci`")
    port = free_port()
    argv = ["node", str(AZURITE_BLOB), "--blobHost", "127.0.0.1", "--blobPort", str(port)]
    argv += ["--inMemoryPersistence", "--skipApiVersionCheck", "--disableProductStyleUrl"]
    argv += ["--disableTelemetry", "--silent"]
    child = Child(
        name="azurite-blob", argv=argv, log_path=tmp_path / "azurite-blob.log", cwd=tmp_path
    )
    child.start()
    try:
        child.wait_ready(
            lambda: _azurite.answers(port), timeout=START_TIMEOUT_S, what="answering HTTP"
        )
        yield blob_connection_string(port)
    finally:
        stop_all([child], grace=10)
