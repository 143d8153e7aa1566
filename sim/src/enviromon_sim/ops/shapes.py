"""Message shapes the load generator sends: ours (schema 1) and the three others the sink accepts.

Pure: a device's id, boot, seq and random source in; body and application properties out.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

ALERT_AT = 30.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message: its JSON body, application properties and message id."""

    body: bytes
    properties: dict[str, str]
    message_id: str


@dataclass(frozen=True, slots=True)
class Room:
    """A plausible indoor climate that drifts a little each reading."""

    temperature: float
    humidity: float
    pressure: float

    @classmethod
    def pick(cls, rng: random.Random) -> Room:
        """A room somewhere between cool and warm."""
        return cls(rng.uniform(18, 25), rng.uniform(35, 60), rng.uniform(995, 1025))

    def sample(self, rng: random.Random) -> tuple[float, float, float]:
        """One noisy reading: °C, %RH, hPa."""
        return (
            round(self.temperature + rng.gauss(0, 0.2), 2),
            round(min(100.0, max(0.0, self.humidity + rng.gauss(0, 0.5))), 2),
            round(self.pressure + rng.gauss(0, 0.3), 2),
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _alert(temperature: float) -> str:
    return "true" if temperature >= ALERT_AT else "false"


def schema1(device_id: str, boot: str, seq: int, room: Room, rng: random.Random) -> Outgoing:
    """Ours: contract/telemetry-v1.schema.json, marked ``source: simulated``."""
    t, h, p = room.sample(rng)
    body = {
        "schema": 1,
        "deviceId": device_id,
        "boot": boot,
        "seq": seq,
        "ts": _now(),
        "source": "simulated",
        "temperature": t,
        "humidity": h,
        "pressure": p,
        "gasResistance": round(rng.uniform(50_000, 250_000)),
        "iaq": None,
        "calibration": 0,
        "flags": [],
    }
    return Outgoing(
        json.dumps(body).encode("utf-8"),
        {"temperatureAlert": _alert(t), "source": "simulated"},
        f"{boot}:{seq}",
    )


def websim(device_id: str, boot: str, seq: int, room: Room, rng: random.Random) -> Outgoing:
    """The Raspberry Pi web simulator's sample: no pressure, no time, a fixed deviceId label."""
    t, h, _ = room.sample(rng)
    body = {
        "messageId": seq,
        "deviceId": "Raspberry Pi Web Client",
        "temperature": t,
        "humidity": h,
    }
    return Outgoing(
        json.dumps(body).encode("utf-8"), {"temperatureAlert": _alert(t)}, f"{boot}:{seq}"
    )


def legacy(device_id: str, boot: str, seq: int, room: Room, rng: random.Random) -> Outgoing:
    """The original enviromon function's field names (``DeviceId``, ``Celsius``, ``hPa``...)."""
    t, h, p = room.sample(rng)
    body = {
        "DeviceId": device_id,
        "Id": seq,
        "Celsius": t,
        "Humidity": h,
        "hPa": p,
        "Light": round(rng.uniform(50, 400), 1),
        "geo": {"lat": 51.5, "lon": -0.12},
    }
    return Outgoing(json.dumps(body).encode("utf-8"), {}, f"{boot}:{seq}")


def simulated_temperature_sensor(
    device_id: str, boot: str, seq: int, room: Room, rng: random.Random
) -> Outgoing:
    """IoT Edge's SimulatedTemperatureSensor module: a machine and the ambient air."""
    t, h, _ = room.sample(rng)
    body = {
        "machine": {
            "temperature": round(rng.uniform(20, 100), 2),
            "pressure": round(rng.uniform(1, 10), 2),
        },
        "ambient": {"temperature": t, "humidity": round(h)},
        "timeCreated": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    return Outgoing(json.dumps(body).encode("utf-8"), {}, f"{boot}:{seq}")


Shape = Callable[[str, str, int, Room, random.Random], Outgoing]

SHAPES: dict[str, Shape] = {
    "schema1": schema1,
    "websim": websim,
    "legacy": legacy,
    "simtemp": simulated_temperature_sensor,
}
