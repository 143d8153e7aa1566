"""`enviromon pubsub serve`, run as a user would: a real process, stopped with Ctrl-C."""

from __future__ import annotations

import os
import select
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from enviromon_sim.webpubsub.cli import load_or_create_key
from websockets.sync.client import connect

START_TIMEOUT_S = 15.0
SERVE = [sys.executable, "-m", "enviromon_sim.cli", "pubsub", "serve"]


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError("no line on stdout in time")
    return proc.stdout.readline().strip()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    """`enviromon pubsub serve --port 0`, its first stdout line, and its key file."""
    key_file = tmp_path / "state" / "pubsub.key"
    proc = subprocess.Popen(
        [*SERVE, "--port", "0", "--key-file", str(key_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield proc, _readline(proc, START_TIMEOUT_S), key_file
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


def test_serve_prints_a_working_connection_string(
    serve: tuple[subprocess.Popen[str], str, Path],
) -> None:
    """The first stdout line is a connection string the SDK uses to reach a live client."""
    proc, conn, key_file = serve
    assert conn.startswith("Endpoint=http://127.0.0.1;Port=") and conn.endswith(";Version=1.0;")
    key = key_file.read_text().strip()
    assert f"AccessKey={key};" in conn
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    client = WebPubSubServiceClient.from_connection_string(conn, hub="enviromon")
    with connect(client.get_client_access_token()["url"], open_timeout=5) as ws:
        client.send_to_all({"ok": True})
        assert ws.recv(timeout=5) == '{"ok": true}'
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0


def test_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    """The first run generates a key; later runs reuse it."""
    path = tmp_path / ".enviromon" / "pubsub.key"
    first = load_or_create_key(path)
    assert len(first) == 44 and load_or_create_key(path) == first
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    """Serving on a port already taken exits 3 (EXIT_PORT_IN_USE) instead of hanging."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*SERVE, "--port", str(port), "--key-file", str(tmp_path / "k")],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 3
    assert result.stdout == "" and "cannot listen" in result.stderr


@pytest.mark.parametrize("args", [["--hub", "bad-hub!"], ["--port", "70000"]])
def test_bad_arguments_are_clear_errors(tmp_path: Path, args: list[str]) -> None:
    """A bad hub name or port exits 2 with the reason on stderr, not a traceback."""
    result = subprocess.run(
        [*SERVE, *args, "--key-file", str(tmp_path / "k")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert "Traceback" not in result.stderr and ("hub" in result.stderr or "port" in result.stderr)
