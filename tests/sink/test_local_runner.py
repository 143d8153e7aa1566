"""Local runner: event log → sink → checkpoint (at-least-once, counted once), and its HTTP API."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from enviromon_sim.iothub.eventlog import EventLog, NewEvent
from enviromon_sink.local_runner import ApiServer, Backoff, BatchLoop, route
from enviromon_sink.processor import Sink
from enviromon_sink.publisher import NullPublisher, WebPubSubPublisher
from enviromon_sink.storage import HistoryPage

from tests.sink.functions_host import telemetry_body
from tests.sink.tcp_proxy import TcpProxy
from tests.support.azurite import local_table_port, with_table_port
from tests.support.pubsub import open_client, recv_json

WAIT_S = 30.0
BOOT = "0000c0de"
POLL = 0.02


def wait_for(check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def append(log: EventLog, device: str, seqs: range) -> int:
    events = log.append_many(
        NewEvent(
            {"iothub-connection-device-id": device, "message-id": f"{BOOT}:{s}"},
            {"temperatureAlert": "false"},
            telemetry_body(device, s, boot=BOOT),
        )
        for s in seqs
    )
    return events[-1].sequence_number


def counts(sink: Sink) -> dict[str, tuple[int, int]]:
    """(count, duplicates) per device."""
    return {d["deviceId"]: (d["count"], d["duplicates"]) for d in sink.list_devices()}


@contextlib.contextmanager
def running(loop: BatchLoop) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=WAIT_S)
        assert not thread.is_alive()


class CrashBeforeCheckpoint(EventLog):
    """The real log, but the first ``crashes`` checkpoints fail, as if the runner died there."""

    def __init__(self, path: Path, crashes: int) -> None:
        super().__init__(path)
        self.crashes = crashes

    def checkpoint(self, sequence_number: int, *, consumer_group: str = "$Default") -> None:
        if self.crashes > 0:
            self.crashes -= 1
            raise RuntimeError("killed before the checkpoint")
        super().checkpoint(sequence_number, consumer_group=consumer_group)


@pytest.fixture
def sink(azurite: str, table_prefix: str) -> Sink:
    return Sink.from_connection_string(azurite, table_prefix=table_prefix)


def test_events_are_processed_and_checkpointed(tmp_path: Path, sink: Sink) -> None:
    """Appended events are counted, and the group's checkpoint reaches the last one."""
    with EventLog(tmp_path / "events.db") as log:
        loop = BatchLoop(
            source=log, sink=sink, publisher=NullPublisher(), max_events=7, poll_interval=POLL
        )
        with running(loop):
            append(log, "pi-a", range(1, 16))
            last = append(log, "pi-b", range(1, 6))
            wait_for(lambda: log.checkpoint_of() == last, "checkpoint")
        assert counts(sink) == {"pi-a": (15, 0), "pi-b": (5, 0)}
        assert loop.batches == 3  # 20 events, 7 at a time
        assert loop.failures == 0


def test_killed_before_checkpoint_is_redelivered_and_counted_once(
    tmp_path: Path, sink: Sink
) -> None:
    """A batch processed but not checkpointed comes again; the counts do not move."""
    with CrashBeforeCheckpoint(tmp_path / "events.db", crashes=2) as log:
        last = append(log, "pi-a", range(1, 11))
        loop = BatchLoop(
            source=log,
            sink=sink,
            publisher=NullPublisher(),
            backoff=Backoff(base=0.01, cap=0.05),
            poll_interval=POLL,
        )
        with running(loop):
            wait_for(lambda: log.checkpoint_of() == last, "checkpoint after redelivery")
        assert loop.failures == 2
        # Processed three times, counted once; the two replays were seen as duplicates.
        assert counts(sink) == {"pi-a": (10, 20)}


def test_tables_down_is_retried_without_checkpoint(
    tmp_path: Path, azurite: str, table_prefix: str
) -> None:
    """Storage unreachable: no checkpoint, backoff, retry; back up, everything counted once."""
    proxy = TcpProxy(local_table_port(azurite))
    try:
        via_proxy = with_table_port(azurite, proxy.port)
        sink = Sink.from_connection_string(via_proxy, table_prefix=table_prefix, retry_total=0)
        with EventLog(tmp_path / "events.db") as log:
            loop = BatchLoop(
                source=log,
                sink=sink,
                publisher=NullPublisher(),
                backoff=Backoff(base=0.05, cap=0.2),
                poll_interval=POLL,
            )
            with running(loop):
                first = append(log, "pi-a", range(1, 4))
                wait_for(lambda: log.checkpoint_of() == first, "first checkpoint")
                proxy.down()
                last = append(log, "pi-a", range(4, 9))
                wait_for(lambda: loop.failures >= 2, "failed attempts while down")
                assert log.checkpoint_of() == first
                proxy.up()
                wait_for(lambda: log.checkpoint_of() == last, "checkpoint after recovery")
            assert counts(sink)["pi-a"][0] == 8
    finally:
        proxy.close()


def test_batches_are_published(tmp_path: Path, sink: Sink, pubsub: Any) -> None:
    """The loop publishes each processed batch to Web PubSub."""
    publisher = WebPubSubPublisher.from_connection_string(pubsub.connection_string, hub="enviromon")
    ws = open_client(pubsub)
    try:
        with EventLog(tmp_path / "events.db") as log:
            loop = BatchLoop(source=log, sink=sink, publisher=publisher, poll_interval=POLL)
            with running(loop):
                append(log, "pi-a", range(1, 4))
                frame = recv_json(ws, timeout=WAIT_S)
    finally:
        ws.close()
    assert [r["seq"] for r in frame["data"]["readings"]] == [1, 2, 3]


def test_backoff_grows_with_jitter_and_caps() -> None:
    """Delays grow ×2 up to the cap, each in the upper half of its step, and reset."""
    backoff = Backoff(base=0.5, cap=4.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule
    backoff.reset()
    assert backoff.next_delay() <= 0.5


@pytest.mark.parametrize(
    "kwargs",
    [{"negotiate_minutes": 0}, {"negotiate_minutes": 61}, {"port": -1}, {"port": 65536}],
)
def test_api_server_refuses_bad_arguments(kwargs: dict[str, int]) -> None:
    """A token lifetime outside 1..60 minutes or an impossible port is refused at once."""
    args: dict[str, Any] = {
        "store": None,
        "tokens": None,
        "negotiate_minutes": 60,
        "allowed_origin": lambda origin: None,
        **kwargs,
    }
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ApiServer(**args)


def test_routes_match_function_app() -> None:
    """Unknown paths are 404, other methods 405, ids are percent-decoded."""

    class Store:
        def __init__(self) -> None:
            self.asked: list[str] = []

        def list_devices(self) -> list[dict[str, Any]]:
            return []

        def history(self, device_id: str, start: Any, end: Any, limit: int = 0, **kw: Any) -> Any:
            self.asked.append(device_id)
            return HistoryPage()

        def rollups(self, step: str, start: Any, end: Any, **kw: Any) -> list[dict[str, Any]]:
            self.asked.append(step)
            return []

        def every_history(self, start: Any, end: Any, limit: int = 0) -> list[dict[str, Any]]:
            self.asked.append(f"every:{limit}")
            return []

    store = Store()
    kw: dict[str, Any] = {"store": store, "tokens": None, "negotiate_minutes": 60}
    assert route("GET", "/api/nope", **kw).status == 404
    assert route("POST", "/api/devices", **kw).status == 405
    assert route("GET", "/api/negotiate", **kw).status == 503  # no Web PubSub configured
    assert route("GET", "/api/devices", **kw).json() == {"devices": []}
    assert route("GET", f"/api/devices/{quote('pi #1', safe='')}/telemetry", **kw).status == 200
    assert store.asked == ["pi #1"]
    every = route("GET", "/api/telemetry?limit=7", **kw)
    assert every.json()["streams"] == [] and store.asked[-1] == "every:7"


# --- the real command, as a process ---------------------------------------------------------


def spawn(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """``python -m enviromon_sink.local_runner`` on a free port, stderr to runner.log."""
    with (tmp_path / "runner.log").open("a") as stderr:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "enviromon_sink.local_runner",
                "--eventlog",
                str(tmp_path / "events.db"),
                "--port",
                "0",
                "--batch-size",
                "10",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )


def api_url(proc: subprocess.Popen[str], tmp_path: Path) -> str:
    """The API base URL from the runner's ready line (fails after WAIT_S)."""
    stdout = proc.stdout
    assert stdout is not None
    ready: list[str] = []
    reader = threading.Thread(target=lambda: ready.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=WAIT_S)
    if not ready or "http://" not in ready[0]:
        proc.kill()
        raise AssertionError(f"runner did not start: {(tmp_path / 'runner.log').read_text()}")
    return ready[0].split(" on ", 1)[1].strip()


def start_runner(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = spawn(tmp_path, env)
    return proc, api_url(proc, tmp_path)


def http(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            return response.status, dict(response.headers), json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, dict(exc.headers), json.loads(body) if body else None


def test_command_serves_the_api_and_survives_a_kill(
    tmp_path: Path, azurite: str, table_prefix: str, pubsub: Any
) -> None:
    """The CLI counts, serves devices/history/negotiate with CORS, and a SIGKILL loses nothing."""
    env = {
        **os.environ,
        "AZURE_TABLES_CONNECTION_STRING": azurite,
        "WEBPUBSUB_CONNECTION_STRING": pubsub.connection_string,
        "ENVIROMON_TABLE_PREFIX": table_prefix,
        "ENVIROMON_CORS_ORIGINS": "http://127.0.0.1:8080",
    }
    with EventLog(tmp_path / "events.db") as log:
        append(log, "pi-a", range(1, 31))
        proc, api = start_runner(tmp_path, env)
        try:

            def count_a() -> int:
                status, _, body = http(f"{api}/devices")
                return (
                    {d["deviceId"]: d["count"] for d in body["devices"]}.get("pi-a", 0)
                    if status == 200
                    else -1
                )

            wait_for(lambda: count_a() >= 10, "first batches")
            proc.send_signal(signal.SIGKILL)  # mid-run, wherever it is
            proc.wait(timeout=WAIT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
        last = append(log, "pi-a", range(31, 41))
        proc, api = start_runner(tmp_path, env)
        try:
            wait_for(lambda: log.checkpoint_of() == last, "checkpoint after restart")
            status, headers, body = http(
                f"{api}/devices", headers={"Origin": "http://127.0.0.1:8080"}
            )
            assert status == 200
            assert headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:8080"
            assert headers["Cache-Control"] == "no-store"
            [state] = body["devices"]
            assert state["count"] == 40
            status, _, body = http(f"{api}/devices/pi-a/telemetry?limit=100")
            assert status == 200
            assert [r["seq"] for r in body["readings"]] == list(range(1, 41))
            status, _, body = http(f"{api}/devices/pi-a/telemetry?from=tomorrow")
            assert status == 400
            assert "'from'" in body["error"]
            status, headers, _ = http(
                f"{api}/devices", method="OPTIONS", headers={"Origin": "http://127.0.0.1:8080"}
            )
            assert status == 204
            assert "GET" in headers["Access-Control-Allow-Methods"]
            status, _, body = http(f"{api}/negotiate")
            assert status == 200
            assert body["url"].startswith("ws://127.0.0.1:")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=WAIT_S) == 0


def test_command_bad_settings_exit_2(tmp_path: Path) -> None:
    """No Tables connection: exit status 2 and a message naming the setting."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("AZURE_TABLES_CONNECTION_STRING", "AzureWebJobsStorage")
    }
    proc = spawn(tmp_path, env)
    assert proc.wait(timeout=WAIT_S) == 2
    assert "AZURE_TABLES_CONNECTION_STRING" in (tmp_path / "runner.log").read_text()


def test_command_waits_for_tables(tmp_path: Path, azurite: str, table_prefix: str) -> None:
    """Started before storage is reachable, it retries, then serves once storage is up."""
    proxy = TcpProxy(local_table_port(azurite))
    proxy.down()
    env = {
        **os.environ,
        "AZURE_TABLES_CONNECTION_STRING": with_table_port(azurite, proxy.port),
        "ENVIROMON_TABLE_PREFIX": table_prefix,
    }
    proc = spawn(tmp_path, env)
    try:
        log_file = tmp_path / "runner.log"
        wait_for(lambda: "unreachable" in log_file.read_text(), "a retry while storage is down")
        assert proc.poll() is None
        proxy.up()
        api = api_url(proc, tmp_path)
        status, _, body = http(f"{api}/devices")
        assert (status, body) == (200, {"devices": []})
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT_S) == 0
        proxy.close()


def test_real_device_sdk_to_dashboard(
    hub: Any, hub_device: Any, azurite: str, table_prefix: str, pubsub: Any
) -> None:
    """The whole local pipeline: azure-iot-device → local hub → runner → Azurite → Web PubSub."""
    from azure.iot.device import IoTHubModuleClient, Message

    dev = hub_device("pi-e2e/enviro_sensor")
    sink = Sink.from_connection_string(azurite, table_prefix=table_prefix)
    publisher = WebPubSubPublisher.from_connection_string(pubsub.connection_string, hub="enviromon")
    ws = open_client(pubsub)
    client = IoTHubModuleClient.create_from_connection_string(
        dev.connection_string, **dev.client_kwargs()
    )
    try:
        loop = BatchLoop(
            source=hub.hub.event_log, sink=sink, publisher=publisher, poll_interval=POLL
        )
        with running(loop):
            client.connect()
            for seq in range(1, 4):
                # The body claims another device: identity must come from the hub.
                msg = Message(  # type: ignore[no-untyped-call]
                    telemetry_body("pi-someone-else", seq, boot=BOOT, temperature=31.0),
                    message_id=f"{BOOT}:{seq}",
                    content_type="application/json",
                    content_encoding="utf-8",
                )
                msg.custom_properties["temperatureAlert"] = "true"
                client.send_message_to_output(msg, "telemetry")  # as the edge module does
            received: list[dict[str, Any]] = []
            while len(received) < 3:
                received += recv_json(ws, timeout=WAIT_S)["data"]["readings"]
    finally:
        client.shutdown()
        ws.close()
    assert [(r["deviceId"], r["moduleId"], r["seq"]) for r in received] == [
        ("pi-e2e", "enviro_sensor", s) for s in (1, 2, 3)
    ]
    assert all(r["alert"] for r in received)
    [state] = sink.list_devices()
    assert (state["deviceId"], state["count"], state["alert"]) == ("pi-e2e", 3, True)
