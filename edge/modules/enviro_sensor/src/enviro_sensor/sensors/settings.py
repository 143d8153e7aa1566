"""Sensor settings: a frozen, validated dataclass.

The pipeline's configuration (environment, CLI or twin) builds one of these; every value is
checked here once, so the drivers can trust it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from enviro_sensor.errors import ConfigError

SensorKind = Literal["auto", "bme680", "simulated"]

#: The two addresses a BME680 can answer on: 0x76 with SDO to GND (Pimoroni's default),
#: 0x77 with SDO to VDD (the address jumper cut or bridged, Adafruit's default).
BME680_ADDRESSES: tuple[int, ...] = (0x76, 0x77)

#: Oversampling factors the BME680 supports (0 = measurement skipped).
OVERSAMPLING_FACTORS: tuple[int, ...] = (0, 1, 2, 4, 8, 16)

#: IIR filter sizes the BME680 supports (0 = filter off).
FILTER_SIZES: tuple[int, ...] = (0, 1, 3, 7, 15, 31, 63, 127)

HEATER_TEMPERATURE_RANGE = (200, 400)  # °C, bme680 2.0.0 / datasheet
HEATER_DURATION_RANGE = (1, 4032)  # ms, bme680 2.0.0 / datasheet
READ_RETRIES_RANGE = (0, 20)


def _check_int(name: str, value: object) -> int:
    # bool is an int subclass; `True` as an I2C bus is a mistake, not a 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    return value


def _check_range(name: str, value: object, bounds: tuple[int, int], unit: str = "") -> None:
    number = _check_int(name, value)
    low, high = bounds
    if not low <= number <= high:
        raise ConfigError(f"{name} must be between {low} and {high}{unit}, got {number}{unit}")


def _check_choice(name: str, value: object, choices: tuple[int, ...], what: str) -> None:
    number = _check_int(name, value)
    if number not in choices:
        allowed = ", ".join(str(c) for c in choices)
        raise ConfigError(f"{name} must be one of {allowed} ({what}), got {number}")


@dataclass(frozen=True, kw_only=True, slots=True)
class SensorSettings:
    """How to find and drive the sensor.

    Attributes:
        kind: "auto" (BME680, or simulated when no chip answers at start-up), "bme680"
            (a real chip or an error) or "simulated".
        i2c_bus: the N of /dev/i2c-N (1 on every current Raspberry Pi).
        i2c_address: 0x76 or 0x77; None probes 0x76, then 0x77.
        heater_temperature: gas heater target, °C (200–400).
        heater_duration: gas heater time, ms (1–4032).
        temperature_oversampling: 0, 1, 2, 4, 8 or 16 (×).
        humidity_oversampling: 0, 1, 2, 4, 8 or 16 (×).
        pressure_oversampling: 0, 1, 2, 4, 8 or 16 (×).
        filter_size: IIR filter coefficient: 0, 1, 3, 7, 15, 31, 63 or 127.
        read_retries: how many more times to ask when the chip says "no new data" before the
            read fails (0–20).
        simulated_seed: seed of the simulated sensor; None derives one from the device id.
    """

    kind: SensorKind = "auto"
    i2c_bus: int = 1
    i2c_address: int | None = None
    heater_temperature: int = 320
    heater_duration: int = 150
    # Pimoroni's examples (and bme680 2.0.0's own start-up): OS_8X / OS_2X / OS_4X, FILTER_SIZE_3.
    temperature_oversampling: int = 8
    humidity_oversampling: int = 2
    pressure_oversampling: int = 4
    filter_size: int = 3
    read_retries: int = 3
    simulated_seed: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in get_args(SensorKind):
            allowed = ", ".join(get_args(SensorKind))
            raise ConfigError(f"sensor kind must be one of {allowed}, got {self.kind!r}")
        _check_range("i2c_bus", self.i2c_bus, (0, 255))
        if self.i2c_address is not None:
            _check_int("i2c_address", self.i2c_address)
            if self.i2c_address not in BME680_ADDRESSES:
                raise ConfigError(
                    "i2c_address must be 0x76 or 0x77 (the only addresses a BME680 answers on), "
                    f"got {self.i2c_address:#04x}"
                )
        _check_range("heater_temperature", self.heater_temperature, HEATER_TEMPERATURE_RANGE, " °C")
        _check_range("heater_duration", self.heater_duration, HEATER_DURATION_RANGE, " ms")
        for name in ("temperature_oversampling", "humidity_oversampling", "pressure_oversampling"):
            _check_choice(name, getattr(self, name), OVERSAMPLING_FACTORS, "oversampling ×")
        _check_choice("filter_size", self.filter_size, FILTER_SIZES, "IIR filter coefficient")
        _check_range("read_retries", self.read_retries, READ_RETRIES_RANGE)
        if self.simulated_seed is not None:
            _check_int("simulated_seed", self.simulated_seed)

    @property
    def addresses(self) -> tuple[int, ...]:
        """The I2C addresses to probe, in order."""
        if self.i2c_address is None:
            return BME680_ADDRESSES
        return (self.i2c_address,)
