"""Sensor health, as the twin's reported properties show it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from enviro_sensor.reading import SourceKind

HealthState = Literal["ok", "degraded", "failed", "simulated"]


@dataclass(frozen=True, kw_only=True, slots=True)
class SensorHealth:
    """A snapshot of a sensor's health.

    Attributes:
        state: "simulated" (no real sensor: never "ok", so nobody mistakes it for one),
            "ok" (the last read worked), "degraded" (the last few reads failed; the driver is
            retrying and re-initialising) or "failed" (many reads in a row failed; the driver
            still retries with long delays, as a loose cable may be pushed back in).
        kind: "bme680", "bme280" (the Enviro board) or "simulated".
        address: the I2C address in use, None for the simulated sensor.
        last_error: the most recent error, kept after recovery so the twin shows what happened.
        consecutive_failures: failed reads since the last good one.
        reinitialisations: successful re-initialisations of the chip since start-up.
    """

    state: HealthState
    kind: SourceKind
    address: int | None
    last_error: str | None
    consecutive_failures: int
    reinitialisations: int

    def to_reported(self) -> dict[str, str | int | None]:
        """The twin's reported form: JSON-ready, camelCase, address as "0x76"."""
        return {
            "state": self.state,
            "kind": self.kind,
            "address": None if self.address is None else f"{self.address:#04x}",
            "lastError": self.last_error,
            "consecutiveFailures": self.consecutive_failures,
            "reinitialisations": self.reinitialisations,
        }
