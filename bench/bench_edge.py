"""Edge module figures: CPU per reading, start to first reading, resident memory.

Printed as ``name=value`` lines, each with its goal as ``name.goal=value`` (issue 2). No ratio is
printed, so there is no baseline to name.

- edge.cpu_ms_per_reading: CPU time (time.process_time) of one pass of the pipeline on readings
  from the simulated sensor: calibrate (CPU-heat compensation on) + validate + air quality (past
  burn-in) + envelope + compact JSON encoding. The simulated sensor's own read is measured apart
  as edge.cpu_ms_per_simulated_read.
- edge.cpu_ms_per_reading.enviro: the same pass for Enviro-board readings (source bme280, light,
  no gas: the air-quality step has nothing to score), CPU-heat compensation on (temperature and
  the Magnus humidity recomputation), altitude set (sea-level pressure). The readings are the
  simulated sensor's values in the BME280's shape; the driver's own I2C work is not in it.
- edge.start_to_first_reading_s: wall time from spawning
  ``enviro-sensor --sensor simulated --count 1 --print`` to its first stdout line (median of 5;
  the max is printed too).
- edge.rss_mb: resident memory of a running ``enviro-sensor --sensor simulated --count 0`` (no
  Azure SDK is imported by the command), after 10 readings.
- edge.buffer_write_ms: one durable append of a real reading to the on-disk buffer (SQLite WAL,
  synchronous=FULL: committed and fsync'd before it returns), median of 300 (p95 printed too),
  in a temporary folder on the machine's disk.
- edge.messages_per_reading_drain: a backlog of 10,000 readings (device id "pi-kitchen") drained
  by the module's Sender, readingsPerMessage 1, to an in-process publisher that returns at once:
  messages sent / readings (each message within 4096 bytes, checked).
- edge.drain_readings_per_s.local: readings per second of that drain (each message's ack is a
  synced delete from the buffer). The figure to the local IoT Hub is the hub bench's.
"""

from __future__ import annotations

import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
from enviro_sensor.airquality import AirQuality
from enviro_sensor.buffer import ReadingBuffer
from enviro_sensor.calibration import CpuTemperature
from enviro_sensor.config import ModuleConfig
from enviro_sensor.message import MESSAGE_UNIT_BYTES, message_size, pack
from enviro_sensor.pipeline import Pipeline
from enviro_sensor.sender import Sender
from enviro_sensor.sensors import SimulatedSensor

SCRIPT = Path(sys.executable).parent / "enviro-sensor"
PASSES = 20_000
STARTS = 5
TIMEOUT = 60.0
WRITES = 300
BACKLOG = 10_000


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0
        self.wall = datetime(2026, 11, 25, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return self.wall + timedelta(seconds=self.t)

    def wait(self, seconds: float, stop: object) -> bool:
        self.t += seconds
        return False


def cpu_ms_per_reading() -> tuple[float, float]:
    clock = _Clock()
    sensor = SimulatedSensor(seed=42, device_id="bench", now=clock.now, unstable_reads=0)
    config = ModuleConfig().apply_patch(
        {
            "calibration": {
                "temperature": {"slope": 1.01, "intercept": -0.4},
                "humidity": {"slope": 0.99, "intercept": 1.0},
                "cpuCompensation": {"enabled": True, "factor": 2.25},
            },
            "$version": 3,
        }
    )
    pipeline = Pipeline(
        device_id="bench",
        config=config,
        air_quality=AirQuality(
            source="simulated", state_path=None, clock=clock.monotonic, burn_in_seconds=0.0
        ),
        clock=clock,
        cpu_temperature=CpuTemperature(source=lambda: 55.0),
        boot="0123abcd",
    )
    start = time.process_time()
    raws = []
    for _ in range(PASSES):
        clock.t += 10.0
        raws.append(sensor.read())
    read_ms = (time.process_time() - start) * 1000.0 / PASSES
    for raw in raws[:50]:  # past the air-quality minimum burn-in, so iaq is really computed
        pipeline.process(raw)
    start = time.process_time()
    for raw in raws:
        pack([pipeline.process(raw)], as_array=False)
    pass_ms = (time.process_time() - start) * 1000.0 / PASSES
    return pass_ms, read_ms


def cpu_ms_per_enviro_reading() -> float:
    clock = _Clock()
    sensor = SimulatedSensor(seed=7, device_id="bench-enviro", now=clock.now, unstable_reads=0)
    config = ModuleConfig().apply_patch(
        {
            "altitude": 230.0,
            "calibration": {
                "temperature": {"slope": 1.01, "intercept": -0.4},
                "humidity": {"slope": 0.99, "intercept": 1.0},
                "cpuCompensation": {"enabled": True, "factor": 2.25},
            },
            "$version": 3,
        }
    )
    pipeline = Pipeline(
        device_id="bench-enviro",
        config=config,
        air_quality=AirQuality(source="bme280", state_path=None, clock=clock.monotonic),
        clock=clock,
        cpu_temperature=CpuTemperature(source=lambda: 55.0),
        boot="0123abcd",
    )
    raws = []
    for i in range(PASSES):
        clock.t += 10.0
        r = sensor.read()
        raws.append(replace(r, gas_resistance=None, source="bme280", light=120.0 + (i % 500) * 1.7))
    start = time.process_time()
    for raw in raws:
        pack([pipeline.process(raw)], as_array=False)
    return (time.process_time() - start) * 1000.0 / PASSES


def _readings(n: int, device_id: str = "pi-kitchen") -> list[Any]:
    clock = _Clock()
    sensor = SimulatedSensor(seed=5, device_id=device_id, now=clock.now)
    pipeline = Pipeline(
        device_id=device_id,
        config=ModuleConfig(),
        air_quality=AirQuality(
            source="simulated", state_path=None, clock=clock.monotonic, burn_in_seconds=0.0
        ),
        clock=clock,
    )
    out = []
    for _ in range(n):
        clock.t += 10.0
        out.append(pipeline.process(sensor.read()))
    return out


def buffer_write_ms(folder: str) -> tuple[float, float]:
    readings = _readings(WRITES)
    with ReadingBuffer(path=Path(folder) / "write.sqlite3") as buffer:
        times = []
        for r in readings:
            start = time.perf_counter()
            buffer.append(r.body, boot=r.boot, seq=r.seq, source=r.source, alert=r.alert)
            times.append(time.perf_counter() - start)
    times.sort()
    return statistics.median(times) * 1000.0, times[int(len(times) * 0.95)] * 1000.0


class _FastPublisher:
    def __init__(self) -> None:
        self.messages = 0
        self.readings = 0
        self.biggest = 0

    def send(self, body: bytes, *, message_id: str, properties: dict[str, str]) -> None:
        self.messages += 1
        self.readings += body.count(b'"schema":')
        size = message_size(body, message_id=message_id, properties=properties)
        self.biggest = max(self.biggest, size)


def drain(folder: str) -> tuple[float, float]:
    """(messages per reading, readings per second) draining a backlog through the Sender."""
    with ReadingBuffer(path=Path(folder) / "drain.sqlite3") as buffer:
        buffer.append_many(_readings(BACKLOG))
        publisher = _FastPublisher()
        sender = Sender(buffer=buffer, publisher=publisher, readings_per_message=lambda: 1)
        start = time.perf_counter()
        left = sender.drain(timeout_s=600.0)
        elapsed = time.perf_counter() - start
        sender.close()
    if left or publisher.readings != BACKLOG:
        raise RuntimeError(f"drain left {left}, sent {publisher.readings} of {BACKLOG}")
    if publisher.biggest > MESSAGE_UNIT_BYTES:
        raise RuntimeError(f"a message of {publisher.biggest} bytes")
    return publisher.messages / BACKLOG, BACKLOG / elapsed


def _command(*args: str) -> list[str]:
    if SCRIPT.exists():
        return [str(SCRIPT), *args]
    return [sys.executable, "-m", "enviro_sensor.cli", *args]


def _env(state: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENVIRO_")}
    env["ENVIRO_STATE_DIR"] = state
    env["ENVIRO_LOG_LEVEL"] = "WARNING"
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=TIMEOUT)


def _line_reader(proc: subprocess.Popen[bytes]) -> Callable[[], bytes]:
    """A readline for proc's stdout that gives up after TIMEOUT (b"" at end of output)."""
    lines: queue.Queue[bytes] = queue.Queue()
    stdout = proc.stdout
    assert stdout is not None

    def pump() -> None:
        for line in stdout:
            lines.put(line)
        lines.put(b"")

    threading.Thread(target=pump, daemon=True).start()

    def readline() -> bytes:
        try:
            return lines.get(timeout=TIMEOUT)
        except queue.Empty:
            raise RuntimeError(f"enviro-sensor printed nothing for {TIMEOUT:g} s") from None

    return readline


def start_to_first_reading(state: str) -> list[float]:
    times = []
    for _ in range(STARTS):
        start = time.perf_counter()
        proc = subprocess.Popen(
            _command("--sensor", "simulated", "--count", "1", "--print"),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_env(state),
        )
        try:
            line = _line_reader(proc)()
            elapsed = time.perf_counter() - start
            if not line.startswith(b"{"):
                raise RuntimeError(f"enviro-sensor printed no reading: {line!r}")
            times.append(elapsed)
        finally:
            _stop(proc)
    return times


def rss_mb(state: str) -> float:
    proc = subprocess.Popen(
        _command("--sensor", "simulated", "--count", "0", "--interval", "0.5", "--print"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=_env(state),
    )
    try:
        readline = _line_reader(proc)
        for _ in range(10):
            if not readline():
                raise RuntimeError("enviro-sensor stopped printing readings")
        rss: int = psutil.Process(proc.pid).memory_info().rss
    finally:
        _stop(proc)
    return rss / (1024 * 1024)


def main() -> None:
    pass_ms, read_ms = cpu_ms_per_reading()
    print(f"edge.cpu_ms_per_reading={pass_ms:.4f}")
    print("edge.cpu_ms_per_reading.goal=0.5")
    print(f"edge.cpu_ms_per_simulated_read={read_ms:.4f}")
    print(f"edge.cpu_ms_per_reading.enviro={cpu_ms_per_enviro_reading():.4f}")
    print("edge.cpu_ms_per_reading.enviro.goal=0.5")
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as state:
        times = start_to_first_reading(state)
        print(f"edge.start_to_first_reading_s={statistics.median(times):.3f}")
        print(f"edge.start_to_first_reading_s.max={max(times):.3f}")
        print("edge.start_to_first_reading_s.goal=1.0")
        print(f"edge.rss_mb={rss_mb(state):.1f}")
        print("edge.rss_mb.goal=40")
        median, p95 = buffer_write_ms(state)
        print(f"edge.buffer_write_ms={median:.2f}")
        print(f"edge.buffer_write_ms.p95={p95:.2f}")
        print("edge.buffer_write_ms.goal=5")
        per_reading, rate = drain(state)
        print(f"edge.messages_per_reading_drain={per_reading:.4f}")
        print("edge.messages_per_reading_drain.goal=0.07")
        print(f"edge.drain_readings_per_s.local={rate:.0f}")


if __name__ == "__main__":
    main()
