"""Test doubles for the edge pipeline: a scripted sensor, a fake clock, recorders."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import jsonschema
from enviro_sensor.errors import SensorError
from enviro_sensor.metrics import telemetry_schema
from enviro_sensor.reading import RawReading, SourceKind


def raw(
    temperature: float = 21.0,
    humidity: float = 45.0,
    pressure: float = 1010.0,
    gas: float | None = 150_000.0,
    *,
    heat_stable: bool = True,
    source: SourceKind = "bme680",
) -> RawReading:
    """A raw reading with plausible defaults."""
    return RawReading(
        temperature=temperature,
        humidity=humidity,
        pressure=pressure,
        gas_resistance=gas,
        heat_stable=heat_stable,
        source=source,
    )


class ScriptedSensor:
    """Returns the scripted readings in order; an exception in the script is raised instead."""

    def __init__(self, script: Iterable[RawReading | Exception], source: SourceKind = "bme680"):
        self._script = list(script)
        self._source: SourceKind = source
        self.reads = 0

    @property
    def source(self) -> SourceKind:
        return self._source

    def read(self) -> RawReading:
        item = self._script[self.reads % len(self._script)]
        self.reads += 1
        if isinstance(item, Exception):
            raise item
        return item


class FakeClock:
    """Monotonic and wall time that only move when waited on (or advanced)."""

    def __init__(self, start: datetime = datetime(2026, 11, 25, 3, 20, tzinfo=UTC)) -> None:
        self.t = 1000.0
        self.start_wall = start
        self.t0 = self.t
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return self.start_wall + timedelta(seconds=self.t - self.t0)

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        self.waits.append(seconds)
        self.t += max(0.0, seconds)
        return stop.is_set()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)
    return True


class RecordingPublisher:
    """Keeps every message sent; can be told to fail the next N sends (thread-safe: the sender
    thread sends while the test reads)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, str, dict[str, str]]] = []
        self.fail_next = 0
        self.attempts = 0
        self.on_send: Callable[[], None] | None = None
        self._lock = threading.Lock()

    def send(self, body: bytes, *, message_id: str, properties: dict[str, str]) -> None:
        with self._lock:
            self.attempts += 1
            if self.fail_next:
                self.fail_next -= 1
                raise ConnectionError("hub unreachable")
            self.sent.append((body, message_id, dict(properties)))
        if self.on_send is not None:
            self.on_send()

    def bodies(self) -> list[Any]:
        with self._lock:
            sent = list(self.sent)
        return [json.loads(body) for body, _, _ in sent]

    def readings(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for body in self.bodies():
            out.extend(body if isinstance(body, list) else [body])
        return out


class RecordingLed:
    """Records the LED calls the loop makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool | None]] = []
        self.error_state = False
        self.alert_state = False

    def reading_sent(self) -> None:
        self.calls.append(("sent", None))

    def error(self, active: bool) -> None:
        self.error_state = active
        self.calls.append(("error", active))

    def alert(self, active: bool) -> None:
        self.alert_state = active
        self.calls.append(("alert", active))


@cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = telemetry_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def assert_valid(body: Any) -> None:
    """The body validates against the schema-1 JSON Schema (Draft 2020-12)."""
    _validator().validate(body)


def read_error(message: str = "I2C read failed: [Errno 121] Remote I/O error") -> SensorError:
    """The error a sensor raises on a failed read."""
    return SensorError(message)
