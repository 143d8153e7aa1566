"""What a sensor hands to the pipeline, and the small protocols the app loop sees.

The app loop never sees an SDK or a driver object: only these protocols.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

SourceKind = Literal["bme680", "bme280", "simulated"]


@dataclass(frozen=True, slots=True)
class RawReading:
    """One uncalibrated reading straight from a sensor.

    Attributes:
        temperature: °C as the sensor reports it (before CPU-heat compensation).
        humidity: %RH.
        pressure: hPa (station pressure).
        gas_resistance: Ω, or None when the sensor has no gas reading (a BME280 never has).
        heat_stable: whether the gas heater reached its target; gas is unusable when False.
            True for a sensor without a gas heater (nothing to wait for, nothing flagged).
        source: "bme680", "bme280" or "simulated"; carried into every message unchanged.
        light: lux from the Enviro board's LTR-559, None when there is no light sensor (or it
            failed this time: then ``flags`` says so).
        flags: what the driver noticed about this reading, e.g. ``light_unavailable``.
    """

    temperature: float
    humidity: float
    pressure: float
    gas_resistance: float | None
    heat_stable: bool
    source: SourceKind
    light: float | None = None
    flags: tuple[str, ...] = ()


class Sensor(Protocol):
    """A sensor reads. Raises enviro_sensor.errors.SensorError when it cannot."""

    @property
    def source(self) -> SourceKind:
        """The source of every reading: "bme680" or "simulated"."""
        ...

    def read(self) -> RawReading:
        """Take one reading."""
        ...


class Publisher(Protocol):
    """A publisher sends one encoded message body (a reading or a packed array).

    The sender thread calls it, one message at a time, in order; never the reading loop.
    """

    def send(self, body: bytes, *, message_id: str, properties: dict[str, str]) -> None:
        """Send one message and return only once the hub acknowledged it.

        Raise (any exception) on failure or on a timeout: the readings stay in the buffer and
        the same message is sent again after a delay. Returning means delivered: the readings
        are then deleted from the buffer, so a publisher must never return on a send it is not
        sure of. It should give up within some seconds (a timeout) rather than block forever;
        a send that blocks stalls only the sender, never the reading schedule.

        Args:
            body: compact UTF-8 JSON, one reading or an array.
            message_id: ``"<boot>:<seq>"`` of the first reading.
            properties: application properties ``temperatureAlert`` and ``source``; send them
                with ``content_type="application/json"`` and ``content_encoding="utf-8"``.
        """
        ...
