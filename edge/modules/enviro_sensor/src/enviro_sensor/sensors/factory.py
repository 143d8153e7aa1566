"""Choosing the sensor: real | bme680 | enviro | auto | simulated.

"real" (the default) probes a BME680, then an Enviro board's BME280 (with its LTR-559 light
sensor when it answers), and is an error when neither answers: a loose cable at boot shows as an
error, not as a day of simulated data. "auto" does the same but falls back to the simulated
sensor, only here, at start-up, and says so loudly; that sensor's health is "simulated", never
"ok". Once a real sensor is open it stays the sensor: when it fails mid-run, its reads raise
SensorError and its health shows it; simulated values never take its place.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from enviro_sensor.errors import I2CBusNotFoundError, SensorNotFoundError
from enviro_sensor.reading import Sensor
from enviro_sensor.sensors.bme680 import Bme680Sensor, I2CDevice
from enviro_sensor.sensors.enviro import EnviroSensor
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
        i2c_device: an smbus-like bus (tests); None opens /dev/i2c-N.
        sleep: BME680 retry sleep (tests).
        monotonic: BME680 back-off clock (tests).
        rng: BME680 back-off jitter (tests).
        now: the simulated sensor's clock (tests, demos); None is the UTC wall clock.

    Raises:
        SensorNotFoundError: kind "real", "bme680" or "enviro" and no bus or no chip answered
            (for "real" the message carries both boards' reasons and fixes).
        SensorError: a chip answered but could not be set up (any kind but "simulated").
        ConfigError: a setting the chip found cannot use (oversampling 0 on a BME280).
    """
    if settings.kind == "simulated":
        logger.info("Using the simulated sensor (source=simulated in every message)")
        return _simulated(settings, device_id, now)
    if settings.kind == "enviro":
        return EnviroSensor(settings=settings, i2c_device=i2c_device, monotonic=monotonic, rng=rng)
    try:
        return Bme680Sensor(
            settings=settings, i2c_device=i2c_device, sleep=sleep, monotonic=monotonic, rng=rng
        )
    except SensorNotFoundError as exc:
        if settings.kind == "bme680":
            raise
        bme680_missing = exc
    if isinstance(bme680_missing, I2CBusNotFoundError):
        # No bus at all: the Enviro board cannot be on it either.
        return _fallback_or_raise(settings, device_id, now, bme680_missing)
    try:
        return EnviroSensor(
            settings=settings,
            i2c_device=i2c_device,
            require_light=False,
            monotonic=monotonic,
            rng=rng,
        )
    except SensorNotFoundError as exc:
        both = SensorNotFoundError(
            f"No sensor answered. BME680: {bme680_missing} -- Enviro board: {exc}"
        )
        return _fallback_or_raise(settings, device_id, now, both)


def _fallback_or_raise(
    settings: SensorSettings,
    device_id: str,
    now: Callable[[], datetime] | None,
    missing: SensorNotFoundError,
) -> MonitoredSensor:
    if settings.kind != "auto":
        raise missing
    logger.warning(
        "NO REAL SENSOR: %s -- sensor kind is 'auto', so this module now sends SIMULATED "
        "readings (source=simulated in every message, health 'simulated'), not "
        "measurements. Set the sensor kind to 'real' (the default) to stop instead.",
        missing,
    )
    return _simulated(settings, device_id, now)


def _simulated(
    settings: SensorSettings, device_id: str, now: Callable[[], datetime] | None
) -> SimulatedSensor:
    if now is None:
        return SimulatedSensor(seed=settings.simulated_seed, device_id=device_id)
    return SimulatedSensor(seed=settings.simulated_seed, device_id=device_id, now=now)
