"""Azurite (Microsoft's Azure Storage emulator, from npm) for Tables, one per test session.

Started as ``node node_modules/azurite/dist/src/table/main.js`` directly (npx would orphan the
child on SIGTERM), in memory, on a free port on 127.0.0.1. If ``AZURE_TABLES_CONNECTION_STRING``
is set, the same tests run against that account instead and nothing is started.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AZURITE_TABLE = ROOT / "node_modules" / "azurite" / "dist" / "src" / "table" / "main.js"
# Azurite's documented, public development account: not a secret.
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connection_string(port: int) -> str:
    """The connection string of the dev account on a local Azurite Tables port."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
        f"TableEndpoint=http://127.0.0.1:{port}/{DEV_ACCOUNT};"
    )


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
    """A running Azurite Tables process."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.log = (workdir / "azurite.log").open("wb")
        self.proc = subprocess.Popen(
            [
                "node",
                str(AZURITE_TABLE),
                "--tableHost",
                "127.0.0.1",
                "--tablePort",
                str(self.port),
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--disableProductStyleUrl",
                "--disableTelemetry",
                "--silent",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        self._wait_ready()

    @property
    def connection_string(self) -> str:
        return connection_string(self.port)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise RuntimeError(f"azurite exited with {code}; see {self.log.name}")
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1.0)
            try:
                conn.request("GET", f"/{DEV_ACCOUNT}/Tables")
                conn.getresponse().read()  # any HTTP answer (403 unsigned) means it is up
                return
            except OSError:
                time.sleep(0.1)
            finally:
                conn.close()
        self.stop()
        raise RuntimeError(f"azurite did not listen on {self.port} within {START_TIMEOUT_S}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


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
