"""Choosing the sensor: auto | bme680 | simulated.

"auto" falls back to the simulated sensor only here, at start-up, when no chip answers, and says
so loudly. Once a real sensor is open it stays the sensor: when it fails mid-run, its reads raise
SensorError and its health shows it; simulated values never take its place.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from enviro_sensor.errors import SensorNotFoundError
from enviro_sensor.reading import Sensor
from enviro_sensor.sensors.bme680 import Bme680Sensor, I2CDevice
from enviro_sensor.sensors.health import SensorHealth
from enviro_sensor.sensors.settings import SensorSettings
from enviro_sensor.sensors.simulated import SimulatedSensor

logger = logging.getLogger(__name__)


class MonitoredSensor(Sensor, Protocol):
    """A Sensor that also reports its health and can be closed (both sensors here are)."""

    @property
    def health(self) -> SensorHealth:
        """The sensor's health right now."""
        ...

    def close(self) -> None:
        """Release the bus, if any."""
        ...


def open_sensor(
    settings: SensorSettings,
    *,
    device_id: str,
    i2c_device: I2CDevice | None = None,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
    now: Callable[[], datetime] | None = None,
) -> MonitoredSensor:
    """Open the sensor the settings ask for.

    Args:
        settings: kind, address, heater, oversampling, retries, seed.
        device_id: seeds the simulated sensor when settings.simulated_seed is None.
        i2c_device: an smbus-like bus for the BME680 (tests); None opens /dev/i2c-N.
        sleep: BME680 retry sleep (tests).
        monotonic: BME680 back-off clock (tests).
        rng: BME680 back-off jitter (tests).
        now: the simulated sensor's clock (tests, demos); None is the UTC wall clock.

    Raises:
        SensorNotFoundError: kind "bme680" and no bus or no chip answered.
        SensorError: a chip answered but could not be set up (any kind but "simulated").
    """
    if settings.kind == "simulated":
        logger.info("Using the simulated sensor (source=simulated in every message)")
        return _simulated(settings, device_id, now)
    try:
        return Bme680Sensor(
            settings=settings, i2c_device=i2c_device, sleep=sleep, monotonic=monotonic, rng=rng
        )
    except SensorNotFoundError as exc:
        if settings.kind == "bme680":
            raise
        logger.warning(
            "NO BME680 SENSOR: %s -- sensor kind is 'auto', so this module now sends SIMULATED "
            "readings (source=simulated in every message), not measurements. Set the sensor "
            "kind to 'bme680' to stop instead.",
            exc,
        )
        return _simulated(settings, device_id, now)


def _simulated(
    settings: SensorSettings, device_id: str, now: Callable[[], datetime] | None
) -> SimulatedSensor:
    if now is None:
        return SimulatedSensor(seed=settings.simulated_seed, device_id=device_id)
    return SimulatedSensor(seed=settings.simulated_seed, device_id=device_id, now=now)
