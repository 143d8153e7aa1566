"""The built-in endpoint as a consumer sees it, and the hub when the log cannot be written."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from azure.iot.device import IoTHubDeviceClient, Message
from enviromon_sim.iothub.eventlog import EventLog, NewEvent
from enviromon_sim.iothub.hub import HubThread

from tests.support.hub import sdk_client


def _event(n: int) -> NewEvent:
    return NewEvent(
        {"iothub-connection-device-id": "pi-1", "message-id": str(n)}, {}, str(n).encode()
    )


def test_consumer_gets_a_batch_again_until_it_checkpoints(tmp_path: Path) -> None:
    """read_batch does not move the checkpoint; a consumer that stops early re-reads the batch."""
    with EventLog(tmp_path / "events.sqlite") as log:
        log.append_many([_event(n) for n in range(1, 6)])
        first = log.read_batch(max_events=3)
        assert [e.body for e in first] == [b"1", b"2", b"3"]
        assert log.read_batch(max_events=3) == first  # "crashed" before checkpointing
        log.checkpoint(first[-1].sequence_number)
        log.checkpoint(1)  # never moves backwards
        assert [e.body for e in log.read_batch(max_events=10)] == [b"4", b"5"]
        assert log.read_batch(consumer_group="other", max_events=1)[0].body == b"1"


def test_another_process_reads_while_the_hub_appends(tmp_path: Path) -> None:
    """A reader in a second process sees committed events in order (WAL mode)."""
    path = tmp_path / "events.sqlite"
    with EventLog(path) as log:
        log.append_many([_event(n) for n in range(1, 4)])
        assert _bodies_read_by_another_process(path) == "1,2,3"
        log.append(_event(4))
        assert _bodies_read_by_another_process(path) == "1,2,3,4"


def _bodies_read_by_another_process(path: Path) -> str:
    code = (
        "import sys; from enviromon_sim.iothub.eventlog import EventLog\n"
        "log = EventLog(sys.argv[1])\n"
        "print(','.join(e.body.decode() for e in log.read_after(0)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.strip()


def test_failed_log_write_is_not_acknowledged_and_the_sdk_resends(
    hub: HubThread, hub_device: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the event log write fails, the sender is dropped without a PUBACK; the SDK re-sends
    after reconnecting, and the message is stored once; the hub keeps serving."""
    dev = hub_device("pi-1")
    log = hub.event_log
    real = log.append_many
    calls = {"n": 0}

    def flaky(events: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise sqlite3.OperationalError("disk I/O error")
        return real(events)

    monkeypatch.setattr(log, "append_many", flaky)
    with sdk_client(dev, IoTHubDeviceClient) as client:
        client.connect()
        client.send_message(Message("precious", message_id="p:1"))
        client.send_message(Message("next", message_id="p:2"))
    assert [e.body for e in log.read_after(0)] == [b"precious", b"next"]
    assert hub.core.stats["event_log_errors"] == 1
    assert hub.core.connects["pi-1"] >= 2
