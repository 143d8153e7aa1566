"""The App loop over the durable buffer: outages, hangs, restarts, drain deadlines, readNow."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from enviro_sensor.airquality import AirQuality
from enviro_sensor.buffer import ReadingBuffer
from enviro_sensor.config import ModuleConfig
from enviro_sensor.message import MESSAGE_UNIT_BYTES, message_size
from enviro_sensor.pipeline import App, Pipeline
from enviro_sensor.sender import RetryPolicy, Sender
from enviro_sensor.sensors import SimulatedSensor

from .pipeline_doubles import FakeClock, RecordingPublisher, assert_valid, wait_for

FAST_RETRY = RetryPolicy(initial_s=0.001, max_s=0.01)


def make(
    *,
    buffer: ReadingBuffer | None = None,
    publisher: Any = None,
    config: ModuleConfig | None = None,
    boot: str = "00000000000000b1",
    seed: int = 3,
) -> tuple[App, Any]:
    clock = FakeClock()
    publisher = publisher if publisher is not None else RecordingPublisher()
    pipeline = Pipeline(
        device_id="pi-buffer-test",
        config=config or ModuleConfig(),
        air_quality=AirQuality(source="simulated", state_path=None, clock=clock.monotonic),
        clock=clock,
        boot=boot,
    )
    app = App(
        sensor=SimulatedSensor(seed=seed, device_id="pi-buffer-test", now=clock.now),
        publisher=publisher,
        pipeline=pipeline,
        clock=clock,
        buffer=buffer,
        retry=FAST_RETRY,
    )
    return app, publisher


def delivered(publisher: RecordingPublisher) -> list[tuple[str, int]]:
    return [(r["boot"], r["seq"]) for r in publisher.readings()]


def check_messages(publisher: RecordingPublisher, per_message: int = 1) -> None:
    """Every message: valid, one boot, id of its first reading, under 4 KB, right shape."""
    for body, message_id, props in publisher.sent:
        decoded = json.loads(body)
        assert_valid(decoded)
        readings = decoded if isinstance(decoded, list) else [decoded]
        assert isinstance(decoded, list) == (per_message > 1 or len(readings) > 1)
        assert message_id == f"{readings[0]['boot']}:{readings[0]['seq']}"
        assert {r["boot"] for r in readings} == {readings[0]["boot"]}
        assert props["source"] == readings[0]["source"]
        assert message_size(body, message_id=message_id, properties=props) <= MESSAGE_UNIT_BYTES


class OutagePublisher(RecordingPublisher):
    """Refuses every send while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = threading.Event()

    def send(self, body: bytes, *, message_id: str, properties: dict[str, str]) -> None:
        if self.down.is_set():
            with self._lock:
                self.attempts += 1
            raise TimeoutError("send timed out")
        super().send(body, message_id=message_id, properties=properties)


class HangingPublisher(RecordingPublisher):
    """Blocks inside send until ``release`` is set (the SDK's offline hang)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def send(self, body: bytes, *, message_id: str, properties: dict[str, str]) -> None:
        self.entered.set()
        self.release.wait()
        super().send(body, message_id=message_id, properties=properties)


def test_outage_keeps_reading_then_delivers_everything_once_in_order() -> None:
    """The hub down: all 300 reads happen anyway (nothing waits on it); back: every seq once,
    in order, packed (fewer messages than readings), each message under 4 KB."""
    publisher = OutagePublisher()
    publisher.down.set()
    app, _ = make(publisher=publisher)
    summary = app.run(count=300, interval=10.0)
    assert summary.readings == 300
    assert wait_for(lambda: publisher.attempts >= 3)
    assert publisher.sent == []
    reported = app.reported()
    assert reported["buffer"]["depth"] == 300
    assert reported["messages"]["failing"] is True
    publisher.down.clear()
    assert app.drain(timeout_s=20) == 0
    assert delivered(publisher) == [("00000000000000b1", n) for n in range(1, 301)]
    assert len(publisher.sent) <= 300 // 10
    check_messages(publisher)
    app.close()


def test_hanging_send_does_not_stop_reading() -> None:
    """A send that blocks: the loop still reads all 50, drain() returns at its deadline, and
    once the send returns everything goes, once each, in order."""
    publisher = HangingPublisher()
    app, _ = make(publisher=publisher)
    app.step()
    assert publisher.entered.wait(10)
    started = time.monotonic()
    summary = app.run(count=49, interval=10.0)
    assert summary.readings == 49
    assert time.monotonic() - started < 10  # 49 in-memory appends; the send still hangs
    started = time.monotonic()
    left = app.drain(timeout_s=0.3)
    waited = time.monotonic() - started
    assert left == 50
    assert 0.3 <= waited < 3.0
    publisher.release.set()
    assert app.drain(timeout_s=20) == 0
    assert [seq for _, seq in delivered(publisher)] == list(range(1, 51))
    check_messages(publisher)
    app.close()


class SlowPublisher(RecordingPublisher):
    """Takes ``delay`` seconds per send."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def send(self, body: bytes, *, message_id: str, properties: dict[str, str]) -> None:
        time.sleep(self.delay)
        super().send(body, message_id=message_id, properties=properties)


def test_drain_honours_its_deadline_and_leaves_the_rest_on_disk(tmp_path: Path) -> None:
    """drain(0.5) with a slow hub returns in about 0.5 s; what it did not send is on disk, and
    sent plus left is every reading, none twice."""
    path = tmp_path / "buffer.sqlite3"
    publisher = OutagePublisher()
    publisher.down.set()
    buffer = ReadingBuffer(path=path, max_readings=10_000, max_bytes=10**8)
    app, _ = make(buffer=buffer, publisher=publisher)
    app.run(count=400, interval=10.0)
    app.close()
    buffer.close()

    slow = SlowPublisher(0.2)  # ~27 messages: over 5 s to send them all
    buffer = ReadingBuffer(path=path, max_readings=10_000, max_bytes=10**8)
    app, _ = make(buffer=buffer, publisher=slow, boot="00000000000000b2")
    started = time.monotonic()
    left = app.drain(timeout_s=0.5)
    waited = time.monotonic() - started
    assert 0.5 <= waited < 2.5  # neither the send in flight nor the rest are waited for
    assert 0 < left < 400
    app.close()  # lets the send in flight finish and be acknowledged
    buffer.close()
    sent = [seq for _, seq in delivered(slow)]
    with ReadingBuffer(path=path, max_readings=10_000, max_bytes=10**8) as again:
        waiting = [e.seq for e in again.peek(10_000, hold=False)]
    assert sent + waiting == list(range(1, 401))


def test_restart_sends_the_old_boot_first_never_mixed(tmp_path: Path) -> None:
    """Readings left by a run whose hub was down go first after a restart, in order, and no
    message mixes the old boot with the new one."""
    path = tmp_path / "buffer.sqlite3"
    down = OutagePublisher()
    down.down.set()
    with ReadingBuffer(path=path) as buffer:
        app, _ = make(buffer=buffer, publisher=down, boot="00000000000000a1")
        app.run(count=20, interval=10.0)
        app.close()
    with ReadingBuffer(path=path) as buffer:
        app, publisher = make(buffer=buffer, boot="00000000000000a2")
        app.run(count=5, interval=10.0)
        assert app.drain(timeout_s=20) == 0
        app.close()
    old = [("00000000000000a1", n) for n in range(1, 21)]
    new = [("00000000000000a2", n) for n in range(1, 6)]
    assert delivered(publisher) == old + new
    check_messages(publisher)


def test_full_buffer_during_outage_drops_exactly_the_gap(tmp_path: Path) -> None:
    """A long outage past the bound: the dropped count equals the readings missing at the
    sink (gaps in seq), and it survives a restart."""
    path = tmp_path / "buffer.sqlite3"
    publisher = OutagePublisher()
    publisher.down.set()
    with ReadingBuffer(path=path, max_readings=50, max_bytes=10**8) as buffer:
        app, _ = make(buffer=buffer, publisher=publisher)
        app.run(count=200, interval=10.0)
        dropped = app.reported()["buffer"]["dropped"]
        app.close()
    with ReadingBuffer(path=path, max_readings=50, max_bytes=10**8) as buffer:
        publisher.down.clear()
        app, _ = make(buffer=buffer, publisher=publisher, boot="00000000000000b9")
        assert app.reported()["buffer"]["dropped"] == dropped
        assert app.drain(timeout_s=20) == 0
        app.close()
    seqs = [seq for _, seq in delivered(publisher)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[-1] == 200
    missing = 200 - len(seqs)  # what the sink counts as Missing: gaps up to the last seq
    assert dropped == missing and dropped >= 150 - 16  # only the message in flight is held


def test_packed_backlog_with_readings_per_message() -> None:
    """readingsPerMessage 4 with a backlog: arrays, at least 4 readings each (but the last),
    under 4 KB, all in order."""
    config = ModuleConfig().apply_patch({"readingsPerMessage": 4})
    publisher = OutagePublisher()
    publisher.down.set()
    app, _ = make(publisher=publisher, config=config)
    app.run(count=103, interval=10.0)
    publisher.down.clear()
    assert app.drain(timeout_s=20) == 0
    assert [seq for _, seq in delivered(publisher)] == list(range(1, 104))
    check_messages(publisher, per_message=4)
    sizes = [len(b) for b in publisher.bodies()]
    assert all(n >= 4 for n in sizes[:-1])
    app.close()


def test_read_now_flushes_a_short_pack() -> None:
    """step(flush=True) with readingsPerMessage 5 sends at once, as an array of what waits."""
    config = ModuleConfig().apply_patch({"readingsPerMessage": 5})
    app, publisher = make(config=config)
    app.step()
    app.step()
    assert not wait_for(lambda: bool(publisher.sent), timeout=0.1)
    reading = app.step(flush=True)
    assert reading is not None
    assert wait_for(lambda: len(publisher.sent) == 1)
    assert [r["seq"] for r in publisher.bodies()[0]] == [1, 2, 3]
    app.close()


def test_buffer_write_failure_is_counted_and_the_loop_goes_on(tmp_path: Path) -> None:
    """A buffer that cannot store (closed under the loop): the reading is counted lost, logged,
    step returns None, and the loop keeps running."""
    buffer = ReadingBuffer(path=tmp_path / "b.sqlite3")
    app, _ = make(buffer=buffer)
    buffer.close()
    assert app.step() is None
    summary = app.run(count=3, interval=10.0)
    assert summary.readings == 3
    reported = app.reported()["buffer"]
    assert reported["writeFailures"] == 4
    assert "closed" in reported["lastWriteError"]
    app.close()


def test_reported_has_buffer_state() -> None:
    """reported(): buffer depth, bytes, dropped, bounds, durability; JSON-ready."""
    app, publisher = make()
    publisher.fail_next = 10**9
    app.step()
    app.step()
    buffer = app.reported()["buffer"]
    assert (buffer["depth"], buffer["dropped"], buffer["durable"]) == (2, 0, False)
    assert buffer["bytes"] > 100 and buffer["maxReadings"] >= 10
    json.dumps(app.reported())
    app.close()


def test_drain_and_retry_arguments_checked() -> None:
    """drain() refuses a negative or NaN timeout; RetryPolicy refuses bad delays; the sender
    refuses a missing collaborator."""
    app, _ = make()
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError):
            app.drain(timeout_s=bad)
    with pytest.raises(ValueError):
        RetryPolicy(initial_s=0.0)
    with pytest.raises(ValueError):
        RetryPolicy(initial_s=10.0, max_s=1.0)
    with pytest.raises(TypeError):
        Sender(buffer=object(), publisher=RecordingPublisher(), readings_per_message=lambda: 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        App(
            sensor=SimulatedSensor(seed=1, device_id="x"),
            publisher=RecordingPublisher(),
            pipeline=app.pipeline,
            clock=FakeClock(),
            buffer="buffer.sqlite3",  # type: ignore[arg-type]
        )
    app.close()


def test_retry_delays_grow_jittered_and_capped() -> None:
    """Delays double from initial_s, are jittered to 50-100 %, and never exceed max_s."""
    import random

    policy = RetryPolicy(initial_s=0.2, max_s=5.0)
    rng = random.Random(1)
    delays = [policy.delay(n, rng) for n in range(1, 12)]
    for n, d in enumerate(delays, start=1):
        base = min(5.0, 0.2 * 2 ** (n - 1))
        assert base * 0.5 <= d <= base
    assert max(delays) <= 5.0
    assert len({round(d, 6) for d in delays}) == len(delays)


APP_CHILD = textwrap.dedent(
    """
    import os, sys
    from enviro_sensor.airquality import AirQuality
    from enviro_sensor.buffer import ReadingBuffer
    from enviro_sensor.config import ModuleConfig
    from enviro_sensor.pipeline import App, Pipeline, SystemClock
    from enviro_sensor.sender import RetryPolicy
    from enviro_sensor.sensors import SimulatedSensor

    class FilePublisher:
        # The "hub": a message is acknowledged once its body is on disk.
        def __init__(self, path):
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        def send(self, body, *, message_id, properties):
            os.write(self.fd, body + b"\\n")
            os.fsync(self.fd)

    clock = SystemClock()
    buffer = ReadingBuffer(path=sys.argv[1])
    pipeline = Pipeline(device_id="pi-kill", config=ModuleConfig(), clock=clock,
                        air_quality=AirQuality(source="simulated", state_path=None))
    app = App(sensor=SimulatedSensor(seed=1, device_id="pi-kill"),
              publisher=FilePublisher(sys.argv[2]), pipeline=pipeline, clock=clock,
              buffer=buffer, retry=RetryPolicy(initial_s=0.001, max_s=0.01))
    print(pipeline.boot, flush=True)
    app.run(count=0, interval=0.5 if sys.argv[3] == "slow" else 0.005)
    """
)


def test_sigkill_mid_run_and_mid_drain_loses_nothing(tmp_path: Path) -> None:
    """The App (reader + sender, file buffer) SIGKILLed at random moments, three starts: every
    reading of every boot reaches the "hub" with no gap, in order, and at most the message in
    flight at a kill is delivered twice."""
    import random
    import subprocess
    import sys

    buffer_path, hub_path = tmp_path / "buffer.sqlite3", tmp_path / "hub.jsonl"
    rng = random.Random(11)
    boots = []
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", APP_CHILD, str(buffer_path), str(hub_path), "fast"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        boots.append(proc.stdout.readline().strip())
        time.sleep(rng.uniform(0.3, 0.8))
        proc.kill()
        proc.wait(timeout=30)
    # A last start that only drains what is left (slow reads: the backlog goes first).
    proc = subprocess.Popen(
        [sys.executable, "-c", APP_CHILD, str(buffer_path), str(hub_path), "slow"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    last = proc.stdout.readline().strip()
    assert wait_for(lambda: _buffered(buffer_path) <= 1, timeout=30)
    proc.kill()
    proc.wait(timeout=30)
    got: list[tuple[str, int]] = []
    for line in hub_path.read_bytes().splitlines():
        decoded = json.loads(line)
        got.extend(
            (r["boot"], r["seq"]) for r in (decoded if isinstance(decoded, list) else [decoded])
        )
    for boot in boots:
        seqs = [seq for b, seq in got if b == boot]
        assert seqs, f"nothing of boot {boot} arrived"
        distinct = sorted(set(seqs))
        assert distinct == list(range(1, distinct[-1] + 1)), f"a gap in boot {boot}"
        assert len(seqs) - len(distinct) <= 64, "more resent than one message in flight"
        assert [s for i, s in enumerate(seqs) if s not in seqs[:i]] == distinct, "out of order"
    assert {b for b, _ in got} <= {*boots, last}


def _buffered(path: Path) -> int:
    with ReadingBuffer(path=path) as buffer:
        return len(buffer)
