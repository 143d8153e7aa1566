"""The Pimoroni Enviro / Enviro+ board: a BME280 and an LTR-559 light sensor on one I2C bus.

The BME280 (temperature, humidity, pressure) through Pimoroni's ``pimoroni-bme280``, the LTR-559
through ``ltr559``.

The same rules as the BME680 driver:
- start-up: probe the BME280 at 0x76, then 0x77 (or only the configured address), then the
  LTR-559 at 0x23; no bus or no chip raises SensorNotFoundError naming the board, the addresses
  and the likely fixes.
- forced mode: each read starts one measurement and waits for it (the library polls the
  chip's "measuring" bit), so a reading is never older than the read itself.
- an I/O error (or garbage) mid-run: that read raises SensorError; later reads re-initialise
  the chip with growing, jittered delays; health shows degraded/failed. Never simulated values.
- the BME280 has no gas sensor: ``gas_resistance`` is None, and with no heater to wait for the
  reading is not flagged ``gas_unstable``; ``iaq`` stays null. Nothing pretends otherwise.
- the light sensor failing alone does not throw the BME280's reading away: that reading has no
  ``light`` and the flag ``light_unavailable``, health says degraded, and the LTR-559 is
  re-initialised with its own delays.

Known limit of pimoroni-bme280 1.0.0: in forced mode it polls the "measuring" bit without a
bound; a chip that answers but never finishes a measurement would hold the read.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import bme280 as pimoroni_bme280
import ltr559 as pimoroni_ltr559

from enviro_sensor.errors import ConfigError, SensorError, SensorNotFoundError
from enviro_sensor.reading import RawReading, SourceKind
from enviro_sensor.sensors.bme680 import I2CDevice
from enviro_sensor.sensors.bus import hex_list, open_bus
from enviro_sensor.sensors.health import SensorHealth
from enviro_sensor.sensors.recovery import Recovery
from enviro_sensor.sensors.settings import LTR559_ADDRESS, SensorSettings

logger = logging.getLogger(__name__)

FLAG_LIGHT_UNAVAILABLE = "light_unavailable"
#: What the libraries raise on garbage from the bus (short block, zeroed calibration).
_GARBLED: tuple[type[Exception], ...] = (ArithmeticError, IndexError, ValueError, KeyError)
_FAILED: tuple[type[Exception], ...] = (RuntimeError, OSError, *_GARBLED)
#: A chip answered with the right id but set-up failed.
_SETUP_FAILED: tuple[type[Exception], ...] = (OSError, *_GARBLED)

FIXES = (
    "Check that: I2C is enabled (sudo raspi-config → Interface Options → I2C, then reboot); "
    "the Enviro board sits on the header the right way round (its 3V3 on pin 1: SDA pin 3, "
    "SCL pin 5, GND pin 6/9); a separate BME280 breakout answers at 0x76 with SDO to GND, "
    "0x77 with SDO to 3V3; in a container, /dev/i2c-{bus} is mapped in createOptions. "
    "`i2cdetect -y {bus}` lists the addresses that answer: an Enviro board shows 23 and 76."
)


class EnviroSensor:
    """A BME280 (and an LTR-559 light sensor) on I2C, with retries and visible health."""

    def __init__(
        self,
        *,
        settings: SensorSettings,
        i2c_device: I2CDevice | None = None,
        require_light: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        """Find the chips and set them up.

        Args:
            settings: address and oversampling (the BME680's heater and filter settings do not
                apply to a BME280).
            i2c_device: an smbus-like bus; by default smbus2.SMBus(settings.i2c_bus) is opened
                (and closed by close()).
            require_light: no LTR-559 at start-up is an error (the Enviro board has one); with
                False a lone BME280 breakout is accepted and readings carry no light.
            monotonic: the clock the re-initialisation delays are measured on.
            rng: jitter source for the re-initialisation delays.

        Raises:
            ConfigError: an oversampling of 0 (the library cannot switch a BME280 channel off).
            SensorNotFoundError: no /dev/i2c-N, no BME280 at any address tried, or (with
                ``require_light``) no LTR-559 at 0x23.
            SensorError: a chip answered but could not be set up.
        """
        if not isinstance(settings, SensorSettings):
            raise TypeError(f"settings must be a SensorSettings, got {type(settings).__name__}")
        oversampling = (
            settings.temperature_oversampling,
            settings.humidity_oversampling,
            settings.pressure_oversampling,
        )
        if 0 in oversampling:
            raise ConfigError(
                "oversampling: the BME280 library takes 1, 2, 4, 8 or 16 for each of T,H,P, "
                f"not 0 (got {','.join(str(o) for o in oversampling)})"
            )
        self._settings = settings
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter, not crypto
        self._lock = threading.Lock()
        self._owned_bus: Any = None
        if i2c_device is None:
            i2c_device = open_bus(
                settings.i2c_bus,
                what="Enviro board (BME280 + LTR-559)",
                addresses=(
                    f"{hex_list(settings.addresses)} (BME280), {LTR559_ADDRESS:#04x} (LTR-559)"
                ),
                fixes=FIXES.format(bus=settings.i2c_bus),
            )
            self._owned_bus = i2c_device
        self._bus: I2CDevice = i2c_device
        self._recovery = Recovery(kind="bme280", monotonic=monotonic, rng=self._rng)
        self._light_recovery = Recovery(kind="bme280", monotonic=monotonic, rng=self._rng)
        self._bme: Any = None
        self._light: Any = None
        self._light_seen = False
        self._address = 0
        try:
            self._bme, self._address = self._probe()
            self._light = self._probe_light(required=require_light)
        except BaseException:
            self.close()
            raise
        self._has_light = self._light is not None
        logger.info(
            "BME280 found at %#04x on I2C bus %d%s",
            self._address,
            settings.i2c_bus,
            f", LTR-559 light sensor at {LTR559_ADDRESS:#04x}" if self._has_light else "",
        )

    # -- the Sensor protocol ------------------------------------------------------------------

    @property
    def source(self) -> SourceKind:
        """Always "bme280"."""
        return "bme280"

    @property
    def address(self) -> int:
        """The I2C address the BME280 answered on."""
        return self._address

    @property
    def has_light(self) -> bool:
        """Whether an LTR-559 answered at start-up (readings then carry light)."""
        return self._has_light

    @property
    def health(self) -> SensorHealth:
        """The board's health: the BME280's, degraded when only the light sensor fails."""
        with self._lock:
            health = self._recovery.health(self._address)
            light = self._light_recovery
            if health.state == "ok" and light.consecutive_failures:
                return replace(
                    health,
                    state="degraded",
                    last_error=light.last_error,
                    consecutive_failures=light.consecutive_failures,
                )
            return health

    def read(self) -> RawReading:
        """Take one forced-mode reading of temperature, humidity, pressure (and light).

        Raises:
            SensorError: the BME280 failed (I/O error, garbage, or it is being re-initialised
                after an earlier error; the message says which).
        """
        with self._lock:
            if self._bme is None:
                self._bme = self._reinitialise_locked(
                    self._recovery, "BME280", lambda: self._new_bme(self._address)
                )
            try:
                self._bme.update_sensor()
                temperature = float(self._bme.temperature)
                humidity = float(self._bme.humidity)
                pressure = float(self._bme.pressure)
            except _FAILED as exc:
                # The chip's state is unknown after a bus error: set it up again before trusting it.
                self._bme = None
                raise self._recovery.fail(
                    f"BME280 at {self._address:#04x} failed: {type(exc).__name__}: {exc}",
                    backoff=True,
                ) from exc
            failed_before = self._recovery.succeeded()
            if failed_before:
                logger.info(
                    "BME280 at %#04x reading again after %d failed reads",
                    self._address,
                    failed_before,
                )
            light, flags = self._read_light_locked()
            return RawReading(
                temperature=temperature,
                humidity=humidity,
                pressure=pressure,
                gas_resistance=None,
                heat_stable=True,  # no gas heater: nothing to wait for
                source="bme280",
                light=light,
                flags=flags,
            )

    def close(self) -> None:
        """Close the I2C bus if this sensor opened it."""
        bus, self._owned_bus = self._owned_bus, None
        if bus is not None:
            try:
                bus.close()
            except OSError:
                logger.debug("closing the I2C bus failed", exc_info=True)

    # -- internals ----------------------------------------------------------------------------

    def _new_bme(self, address: int) -> Any:
        device = pimoroni_bme280.BME280(i2c_addr=address, i2c_dev=self._bus)
        device.setup(
            mode="forced",
            temperature_oversampling=self._settings.temperature_oversampling,
            humidity_oversampling=self._settings.humidity_oversampling,
            pressure_oversampling=self._settings.pressure_oversampling,
        )
        return device

    def _probe(self) -> tuple[Any, int]:
        reasons: list[str] = []
        bus = self._settings.i2c_bus
        for address in self._settings.addresses:
            try:
                return self._new_bme(address), address
            except RuntimeError as exc:
                # The library's "no (BME280) chip here": a wrong chip id or no answer.
                reasons.append(f"{address:#04x}: {exc}")
                logger.debug("no BME280 at %#04x: %s", address, exc)
            except _SETUP_FAILED as exc:
                # The chip id matched but set-up failed: a chip is there, so not "not found".
                raise SensorError(
                    f"BME280 at {address:#04x} on I2C bus {bus} answered but could not be set "
                    f"up: {type(exc).__name__}: {exc}"
                ) from exc
        raise SensorNotFoundError(
            f"No Enviro board found on I2C bus {bus} (/dev/i2c-{bus}): no BME280 at "
            f"{hex_list(self._settings.addresses)} ({'; '.join(reasons)}). " + FIXES.format(bus=bus)
        )

    def _probe_light(self, *, required: bool) -> Any:
        try:
            return pimoroni_ltr559.LTR559(i2c_dev=self._bus)
        except (RuntimeError, OSError) as exc:
            bus = self._settings.i2c_bus
            message = (
                f"no LTR-559 light sensor at {LTR559_ADDRESS:#04x} on I2C bus {bus} "
                f"({type(exc).__name__}: {exc})"
            )
            if required:
                raise SensorNotFoundError(
                    f"Enviro board on I2C bus {bus} incomplete: BME280 at {self._address:#04x} "
                    f"answered, but {message}. " + FIXES.format(bus=bus)
                ) from exc
            logger.warning("%s: readings carry no light", message)
            return None

    def _read_light_locked(self) -> tuple[float | None, tuple[str, ...]]:
        if not self._has_light:
            return None, ()
        try:
            if self._light is None:
                self._light = self._reinitialise_locked(
                    self._light_recovery,
                    "LTR-559",
                    lambda: pimoroni_ltr559.LTR559(i2c_dev=self._bus),
                )
                self._light_seen = False
            lux = float(self._light.get_lux())
            # The library starts at ch0 = ch1 = 0 with ratio 100 and keeps its last values
            # until the chip has data; its own formula gives ratio 101 for a dark (0, 0)
            # measurement, so this exact state means "no measurement yet", not darkness.
            if not self._light_seen:
                if self._light.get_raw_als() == (0, 0) and self._light.get_ratio() == 100:
                    return None, (FLAG_LIGHT_UNAVAILABLE,)
                self._light_seen = True
        except SensorError:
            return None, (FLAG_LIGHT_UNAVAILABLE,)
        except _FAILED as exc:
            self._light = None
            self._light_recovery.fail(
                f"LTR-559 at {LTR559_ADDRESS:#04x} failed: {type(exc).__name__}: {exc}",
                backoff=True,
            )
            return None, (FLAG_LIGHT_UNAVAILABLE,)
        self._light_recovery.succeeded()
        return lux, ()

    def _reinitialise_locked(self, recovery: Recovery, name: str, make: Callable[[], Any]) -> Any:
        wait = recovery.wait_left()
        if wait > 0:
            raise recovery.fail(
                f"{name} is unavailable ({recovery.last_error}); next re-initialisation in "
                f"{wait:.1f} s",
                backoff=False,
                during_backoff=True,
            )
        try:
            device = make()
        except _FAILED as exc:
            raise recovery.fail(
                f"re-initialising {name} failed: {type(exc).__name__}: {exc}", backoff=True
            ) from exc
        recovery.reinitialisations += 1
        logger.info("%s re-initialised (%d so far)", name, recovery.reinitialisations)
        return device
