"""Sensor settings: a frozen, validated dataclass.

Built once at start-up from the ``ENVIRO_*`` environment and the command's options
(:meth:`SensorSettings.from_env`); every value is checked here once, so the drivers can trust it.

These are start-up settings, not module-twin fields: the gas resistance, and so the air-quality
baseline, depends on the heater profile, so a new profile needs a re-initialised chip and a new
burn-in. On IoT Edge, change them in the deployment's environment; edgeAgent restarts the module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from enviro_sensor.errors import ConfigError

SensorKind = Literal["real", "bme680", "enviro", "auto", "simulated"]

#: The two addresses a BME680 can answer on: 0x76 with SDO to GND (Pimoroni's default),
#: 0x77 with SDO to VDD (the address jumper cut or bridged, Adafruit's default).
BME680_ADDRESSES: tuple[int, ...] = (0x76, 0x77)
#: A BME280 answers on the same two (the Pimoroni Enviro / Enviro+ boards use 0x76).
BME280_ADDRESSES: tuple[int, ...] = BME680_ADDRESSES
#: The LTR-559 light sensor has one fixed address.
LTR559_ADDRESS = 0x23

#: Oversampling factors the BME680 supports (0 = measurement skipped).
OVERSAMPLING_FACTORS: tuple[int, ...] = (0, 1, 2, 4, 8, 16)

#: IIR filter sizes the BME680 supports (0 = filter off).
FILTER_SIZES: tuple[int, ...] = (0, 1, 3, 7, 15, 31, 63, 127)

HEATER_TEMPERATURE_RANGE = (200, 400)  # °C, bme680 2.0.0 / datasheet
HEATER_DURATION_RANGE = (1, 4032)  # ms, bme680 2.0.0 / datasheet
READ_RETRIES_RANGE = (0, 20)

#: Where each setting comes from: (field, environment variable, command-line option). The pseudo
#: field "oversampling" is "T,H,P" and sets the three oversampling fields at once.
SOURCES: tuple[tuple[str, str, str], ...] = (
    ("kind", "ENVIRO_SENSOR", "--sensor"),
    ("i2c_bus", "ENVIRO_I2C_BUS", "--bus"),
    ("i2c_address", "ENVIRO_I2C_ADDRESS", "--address"),
    ("heater_temperature", "ENVIRO_HEATER_TEMPERATURE", "--heater-temp"),
    ("heater_duration", "ENVIRO_HEATER_DURATION", "--heater-ms"),
    ("oversampling", "ENVIRO_OVERSAMPLING", "--oversampling"),
    ("filter_size", "ENVIRO_FILTER_SIZE", "--filter"),
    ("read_retries", "ENVIRO_READ_RETRIES", "--read-retries"),
    ("simulated_seed", "ENVIRO_SIMULATED_SEED", "--seed"),
)
_OVERSAMPLING_FIELDS = (
    "temperature_oversampling",
    "humidity_oversampling",
    "pressure_oversampling",
)


def parse_oversampling(text: str) -> tuple[int, int, int]:
    """``"T,H,P"`` (e.g. ``"8,2,4"``) as three whole numbers; the range is checked by the settings.

    Raises:
        ValueError: not three comma-separated whole numbers.
    """
    parts = [part.strip() for part in text.split(",")]
    try:
        if len(parts) != 3:
            raise ValueError
        t, h, p = (int(part, 10) for part in parts)
    except ValueError:
        raise ValueError(
            f"expected T,H,P oversampling (three of 0, 1, 2, 4, 8, 16, e.g. 8,2,4), got {text!r}"
        ) from None
    return t, h, p


def _parse(name: str, text: str) -> object:
    if name == "kind":
        return text.lower()
    if name == "oversampling":
        return parse_oversampling(text)
    try:
        # An address is written in hex (0x77); everything else is decimal.
        return int(text, 0 if name == "i2c_address" else 10)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def _fields(name: str, value: object) -> dict[str, Any]:
    if name != "oversampling":
        return {name: value}
    if not (isinstance(value, tuple) and len(value) == 3):
        raise ConfigError(f"oversampling must be a (T, H, P) tuple, got {value!r}")
    return dict(zip(_OVERSAMPLING_FIELDS, value, strict=True))


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
        kind: "real" (the default: a BME680, else an Enviro board's BME280 (+ LTR-559), else
            an error), "bme680" or "enviro" (that board or an error), "auto" (like "real", but
            simulated readings, loudly labelled, when no chip answers at start-up) or
            "simulated".
        i2c_bus: the N of /dev/i2c-N (1 on every current Raspberry Pi).
        i2c_address: 0x76 or 0x77 (of the BME680 or BME280); None probes 0x76, then 0x77.
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

    kind: SensorKind = "real"
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
                    "i2c_address must be 0x76 or 0x77 (the only addresses a BME680 or BME280 "
                    "answers on), "
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

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        overrides: Mapping[str, object] | None = None,
    ) -> SensorSettings:
        """The settings from the ``ENVIRO_*`` variables, command-line options winning.

        :data:`SOURCES` names the variable and the option of each field.

        Args:
            environ: the environment (default ``os.environ``); an empty variable counts as unset.
            overrides: field → value for the options given (None = not given); the key
                "oversampling" takes a (T, H, P) tuple.

        Raises:
            ConfigError: naming every bad variable or option and why.
        """
        env = os.environ if environ is None else environ
        given = overrides or {}
        unknown = set(given) - {name for name, _, _ in SOURCES}
        if unknown:
            raise ConfigError(f"unknown sensor setting(s): {', '.join(sorted(unknown))}")
        fields: dict[str, Any] = {}
        problems: list[str] = []
        for name, var, option in SOURCES:
            value = given.get(name)
            origin = option
            if value is None:
                text = env.get(var, "").strip()
                if not text:
                    continue
                origin = var
                try:
                    value = _parse(name, text)
                except ValueError as exc:
                    problems.append(f"{var}: {exc}")
                    continue
            try:
                # Each field is checked on its own (the others at their defaults), so every bad
                # one is reported, under the name the user typed.
                one = _fields(name, value)
                cls(**one)
            except ConfigError as exc:
                problems.append(f"{origin}: {exc}")
                continue
            fields.update(one)
        if problems:
            raise ConfigError("sensor settings refused: " + "; ".join(problems), problems=problems)
        return cls(**fields)

    @property
    def heater_profile(self) -> str:
        """The heater profile as text, e.g. "320 °C / 150 ms" (an air-quality baseline's key)."""
        return f"{self.heater_temperature} °C / {self.heater_duration} ms"

    @property
    def addresses(self) -> tuple[int, ...]:
        """The I2C addresses to probe, in order."""
        if self.i2c_address is None:
            return BME680_ADDRESSES
        return (self.i2c_address,)
