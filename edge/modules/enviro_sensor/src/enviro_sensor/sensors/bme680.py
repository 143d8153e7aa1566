"""The real sensor: a Bosch BME680 through Pimoroni's `bme680` library.

Failure handling, in short:
- start-up: probe 0x76, then 0x77 (or only the configured address); no bus or no chip raises
  SensorNotFoundError with the fixes a user on a Pi needs.
- "no new data" (get_sensor_data() returns False): ask again, a bounded number of times, after
  sleeping out the rest of the measurement (the library polls ~100 ms; a measurement with the
  default 150 ms heater takes ~183 ms); then SensorError. The chip keeps new_data set until
  the data is read, so a call that starts a measurement may return the previous one: with the
  library's forced-mode handling a reading can be up to one read interval old.
- an I/O error mid-run: that read raises SensorError; later reads re-initialise the chip, with
  growing, jittered delays between attempts. A read that comes during a delay fails at once
  (SensorError), so the caller's loop is never blocked for long.
- health: the `health` property, always current.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import bme680 as pimoroni_bme680

from enviro_sensor.errors import SensorError, SensorNotFoundError
from enviro_sensor.reading import RawReading, SourceKind
from enviro_sensor.sensors.bus import hex_list, open_bus
from enviro_sensor.sensors.health import SensorHealth
from enviro_sensor.sensors.recovery import Recovery
from enviro_sensor.sensors.settings import SensorSettings

logger = logging.getLogger(__name__)

_OVERSAMPLING = {
    0: pimoroni_bme680.OS_NONE,
    1: pimoroni_bme680.OS_1X,
    2: pimoroni_bme680.OS_2X,
    4: pimoroni_bme680.OS_4X,
    8: pimoroni_bme680.OS_8X,
    16: pimoroni_bme680.OS_16X,
}
_FILTER = {
    0: pimoroni_bme680.FILTER_SIZE_0,
    1: pimoroni_bme680.FILTER_SIZE_1,
    3: pimoroni_bme680.FILTER_SIZE_3,
    7: pimoroni_bme680.FILTER_SIZE_7,
    15: pimoroni_bme680.FILTER_SIZE_15,
    31: pimoroni_bme680.FILTER_SIZE_31,
    63: pimoroni_bme680.FILTER_SIZE_63,
    127: pimoroni_bme680.FILTER_SIZE_127,
}

#: Shortest sleep between "no new data" answers.
NOT_READY_SLEEP_S = 0.05
#: How long get_sensor_data() itself polls for new data: 10 polls of POLL_PERIOD_MS.
_LIBRARY_POLL_S: float = 10 * pimoroni_bme680.POLL_PERIOD_MS / 1000
#: What the library's compensation raises on garbage from the bus (short block, zero divisor).
_GARBLED: tuple[type[Exception], ...] = (ArithmeticError, IndexError, ValueError)
#: A re-initialisation fails with: no chip (RuntimeError), a bus error, or garbage.
_REINIT_FAILED: tuple[type[Exception], ...] = (RuntimeError, OSError, *_GARBLED)
#: Bosch's API assumes 25 °C ambient for the heater calculation until a first reading exists.
_DEFAULT_AMBIENT_CENTI_C = 2500

_FIXES = (
    "Check that: I2C is enabled (sudo raspi-config → Interface Options → I2C, then reboot); "
    "the address jumper / SDO pin matches (SDO to GND = 0x76, SDO to 3V3 = 0x77); "
    "the wiring is SDA → GPIO2 (pin 3), SCL → GPIO3 (pin 5), 3V3 (pin 1), GND (pin 6); "
    "in a container, /dev/i2c-{bus} is mapped in createOptions. "
    "`i2cdetect -y {bus}` lists the addresses that answer."
)


class I2CDevice(Protocol):
    """The smbus-like calls the bme680 library makes (smbus2.SMBus fits)."""

    def read_byte_data(self, i2c_addr: int, register: int) -> int:
        """Read one register."""
        ...

    def write_byte_data(self, i2c_addr: int, register: int, value: int) -> None:
        """Write one register."""
        ...

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]:
        """Read `length` registers from `register` on."""
        ...

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: list[int]) -> None:
        """Write registers from `register` on."""
        ...


def measurement_seconds(settings: SensorSettings) -> float:
    """How long one forced TPHG measurement takes with these settings.

    Bosch's formula (BME680 API, bme680_get_profile_dur): 1.963 ms per oversampling cycle of
    T, P and H, plus switching and gas-measurement time, 1 ms wake-up, plus the heater duration.
    320 °C / 150 ms at 8x/4x/2x gives 183 ms.
    """
    cycles = (
        settings.temperature_oversampling
        + settings.pressure_oversampling
        + settings.humidity_oversampling
    )
    tph_ms = (cycles * 1963 + 477 * 4 + 477 * 5 + 500) // 1000 + 1
    return (tph_ms + settings.heater_duration) / 1000


def _retry_sleep(settings: SensorSettings) -> float:
    # get_sensor_data() polls only ~100 ms, shorter than a measurement with a 150 ms heater. A
    # measurement it started carries on after it gives up, and its new_data flag stays set, so
    # waiting out the rest of it (plus 10 %) lets the next call find the data.
    return max(NOT_READY_SLEEP_S, measurement_seconds(settings) * 1.1 - _LIBRARY_POLL_S)


class Bme680Sensor:
    """A BME680 on I2C, with bounded retries, re-initialisation and visible health."""

    def __init__(
        self,
        *,
        settings: SensorSettings,
        i2c_device: I2CDevice | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        """Find the chip and configure it.

        Args:
            settings: address, heater profile, oversampling, retry bound.
            i2c_device: an smbus-like bus; by default smbus2.SMBus(settings.i2c_bus) is opened
                (and closed by close()).
            sleep: used between "no new data" retries.
            monotonic: the clock the re-initialisation delays are measured on.
            rng: jitter source for the re-initialisation delays.

        Raises:
            SensorNotFoundError: no /dev/i2c-N, or no BME680 at any address tried.
            SensorError: a chip answered but could not be set up.
        """
        if not isinstance(settings, SensorSettings):
            raise TypeError(f"settings must be a SensorSettings, got {type(settings).__name__}")
        self._settings = settings
        self._sleep = sleep
        self._retry_sleep_s = _retry_sleep(settings)
        self._monotonic = monotonic
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter, not crypto
        self._lock = threading.Lock()
        self._owned_bus: Any = None
        if i2c_device is None:
            i2c_device = self._open_bus(settings.i2c_bus)
        self._bus: I2CDevice = i2c_device
        self._device: Any = None
        self._address: int = 0
        self._recovery = Recovery(kind="bme680", monotonic=monotonic, rng=self._rng)
        try:
            self._device, self._address = self._probe()
        except BaseException:
            self.close()
            raise
        logger.info(
            "BME680 found at %#04x on I2C bus %d (heater %d °C / %d ms)",
            self._address,
            settings.i2c_bus,
            settings.heater_temperature,
            settings.heater_duration,
        )

    # -- the Sensor protocol ------------------------------------------------------------------

    @property
    def source(self) -> SourceKind:
        """Always "bme680"."""
        return "bme680"

    @property
    def address(self) -> int:
        """The I2C address the chip answered on."""
        return self._address

    @property
    def health(self) -> SensorHealth:
        """The sensor's health right now."""
        with self._lock:
            return self._health_locked()

    def read(self) -> RawReading:
        """Take one forced-mode reading.

        Raises:
            SensorError: no new data within the retry bound, an I/O error, or the chip is being
                re-initialised after an earlier error (the message says which).
        """
        with self._lock:
            if self._device is None:
                self._reinitialise_locked()
            try:
                data = self._read_data_locked()
            except OSError as exc:
                # The chip's state is unknown after a bus error: set it up again before trusting it.
                self._device = None
                raise self._fail_locked(
                    f"I/O error reading BME680 at {self._address:#04x}: {exc}", backoff=True
                ) from exc
            except _GARBLED as exc:
                # The library's maths choked on what the bus returned (a short block, zeroed
                # calibration after a brown-out): as unknown as a bus error, so the same recovery.
                self._device = None
                raise self._fail_locked(
                    f"BME680 at {self._address:#04x} returned unusable data "
                    f"({type(exc).__name__}: {exc})",
                    backoff=True,
                ) from exc
            if data is None:
                raise self._fail_locked(
                    f"BME680 at {self._address:#04x} had no new data after "
                    f"{self._settings.read_retries + 1} attempts",
                    backoff=False,
                )
            failed_before = self._recovery.succeeded()
            if failed_before:
                logger.info(
                    "BME680 at %#04x reading again after %d failed reads",
                    self._address,
                    failed_before,
                )
            heat_stable = bool(data.heat_stable)
            return RawReading(
                temperature=float(data.temperature),
                humidity=float(data.humidity),
                pressure=float(data.pressure),
                gas_resistance=float(data.gas_resistance) if heat_stable else None,
                heat_stable=heat_stable,
                source="bme680",
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

    def _open_bus(self, bus_number: int) -> I2CDevice:
        bus: I2CDevice = open_bus(
            bus_number,
            # "real"/"auto" would probe the Enviro board next on the same missing bus.
            what="BME680" if self._settings.kind == "bme680" else "BME680 or Enviro board",
            addresses=hex_list(self._settings.addresses),
            fixes=_FIXES.format(bus=bus_number),
        )
        self._owned_bus = bus
        return bus

    def _probe(self) -> tuple[Any, int]:
        reasons: list[str] = []
        for address in self._settings.addresses:
            try:
                device = pimoroni_bme680.BME680(address, i2c_device=self._bus)
            except RuntimeError as exc:
                # The library's way of saying "no (BME680) chip here".
                reasons.append(f"{address:#04x}: {exc}")
                logger.debug("no BME680 at %#04x: %s", address, exc)
                continue
            except OSError as exc:
                # The chip id matched but set-up failed: a chip is there, so this is not "not
                # found" (auto mode must not fall back to simulated data because of it).
                raise SensorError(
                    f"BME680 at {address:#04x} on I2C bus {self._settings.i2c_bus} answered but "
                    f"could not be set up: {exc}"
                ) from exc
            try:
                self._configure(device)
            except OSError as exc:
                raise SensorError(
                    f"BME680 at {address:#04x} on I2C bus {self._settings.i2c_bus} answered but "
                    f"could not be configured: {exc}"
                ) from exc
            return device, address
        bus = self._settings.i2c_bus
        tried = hex_list(self._settings.addresses)
        raise SensorNotFoundError(
            f"No BME680 found on I2C bus {bus} (/dev/i2c-{bus}): tried {tried} "
            f"({'; '.join(reasons)}). " + _FIXES.format(bus=bus)
        )

    def _configure(self, device: Any) -> None:
        settings = self._settings
        device.set_temperature_oversample(_OVERSAMPLING[settings.temperature_oversampling])
        device.set_humidity_oversample(_OVERSAMPLING[settings.humidity_oversampling])
        device.set_pressure_oversample(_OVERSAMPLING[settings.pressure_oversampling])
        device.set_filter(_FILTER[settings.filter_size])
        device.set_gas_status(pimoroni_bme680.ENABLE_GAS_MEAS)
        if device.ambient_temperature is None:
            # The library's start-up reading had no data; its heater maths needs an ambient value.
            device.ambient_temperature = _DEFAULT_AMBIENT_CENTI_C
        device.set_gas_heater_temperature(settings.heater_temperature, nb_profile=0)
        device.set_gas_heater_duration(settings.heater_duration, nb_profile=0)
        device.select_gas_heater_profile(0)

    def _read_data_locked(self) -> Any:
        """The library's data object, or None when no new data came within the bound."""
        attempts = self._settings.read_retries + 1
        for attempt in range(attempts):
            if self._device.get_sensor_data():
                return self._device.data
            if attempt + 1 < attempts:
                self._sleep(self._retry_sleep_s)
        return None

    def _reinitialise_locked(self) -> None:
        wait = self._recovery.wait_left()
        if wait > 0:
            # Counted as a failed read: the caller asked and got nothing.
            raise self._fail_locked(
                f"BME680 at {self._address:#04x} is unavailable ({self._recovery.last_error}); "
                f"next re-initialisation in {wait:.1f} s",
                backoff=False,
                during_backoff=True,
            )
        try:
            device = pimoroni_bme680.BME680(self._address, i2c_device=self._bus)
            self._configure(device)
        except _REINIT_FAILED as exc:
            raise self._fail_locked(
                f"re-initialising BME680 at {self._address:#04x} failed: {exc}", backoff=True
            ) from exc
        self._device = device
        self._recovery.reinitialisations += 1
        logger.info(
            "BME680 at %#04x re-initialised (%d so far)",
            self._address,
            self._recovery.reinitialisations,
        )

    def _fail_locked(
        self, message: str, *, backoff: bool, during_backoff: bool = False
    ) -> SensorError:
        return self._recovery.fail(message, backoff=backoff, during_backoff=during_backoff)

    def _health_locked(self) -> SensorHealth:
        return self._recovery.health(self._address)
