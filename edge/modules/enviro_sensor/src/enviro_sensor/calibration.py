"""Device-side calibration: pure functions, plus a smoothed CPU-temperature source.

Order of operations: first Pimoroni's CPU-heat compensation on the raw temperature,
``raw − (cpu − raw) / factor`` (a sensor close to a Pi's CPU reads high). The sensor sits in air
warmed by the CPU, so its relative humidity reads low: the water vapour it measured (its dew
point) is kept and the relative humidity recomputed at the corrected temperature with the Magnus
formula (:mod:`enviro_sensor.physics`); Pimoroni's examples correct temperature only. A corrected
temperature below the measured dew point gives 100 %RH and the flag ``humidity_saturated``.
Then the linear calibration ``value × slope + intercept`` of each quantity, so a slope/intercept
measured against reference instruments corrects what is left after compensation.

When the humidity cannot be recomputed (a raw humidity outside 0…100 %RH, or a temperature
outside the range the Magnus formula is used in, −45…85 °C) it is passed on uncompensated with
the flag ``humidity_uncompensated``; validation then judges it as usual.

:func:`derived` adds the sea-level pressure (``pressureSeaLevel``) when the twin sets the altitude;
the station pressure stays the measured value.

The CPU temperature is passed in, the gpiozero way: a ``gpiozero.CPUTemperature`` instance, or any
callable returning °C. :class:`CpuTemperature` smooths it (a moving average), because a single
CPU sample jumps with load while the sensor's surroundings warm slowly.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from .config import Calibration, Linear
from .physics import humidity_at, in_magnus_range, sea_level_pressure
from .reading import RawReading

log = logging.getLogger(__name__)

FLAG_CPU_UNAVAILABLE = "cpu_temperature_unavailable"
FLAG_HUMIDITY_SATURATED = "humidity_saturated"
FLAG_HUMIDITY_UNCOMPENSATED = "humidity_uncompensated"
SEA_LEVEL_KEY = "pressureSeaLevel"
#: The standard atmosphere's sea-level temperature, used when the station temperature is invalid.
STANDARD_TEMPERATURE_C = 15.0


class HasTemperature(Protocol):
    """What gpiozero's ``CPUTemperature`` looks like to us."""

    @property
    def temperature(self) -> float:
        """°C."""
        ...


TemperatureSource = Callable[[], float] | HasTemperature


@dataclass(frozen=True, slots=True)
class Calibrated:
    """Calibrated values (not yet validated: they may still be NaN or out of range).

    Attributes:
        values: metric key → value (``None`` when the sensor gave none).
        flags: flags raised while calibrating, e.g. ``cpu_temperature_unavailable``.
    """

    values: dict[str, float | None]
    flags: tuple[str, ...]


def linear(value: float, cal: Linear) -> float:
    """``value × slope + intercept``."""
    return value * cal.slope + cal.intercept


def compensate_cpu_heat(raw: float, cpu: float, factor: float) -> float:
    """Pimoroni's correction for a sensor warmed by the Pi's CPU: ``raw − (cpu − raw) / factor``.

    Args:
        raw: the sensor's temperature, °C.
        cpu: the (smoothed) CPU temperature, °C.
        factor: larger means less correction; Pimoroni's default is 2.25.
    """
    return raw - (cpu - raw) / factor


def calibrate(raw: RawReading, cal: Calibration, *, cpu_temperature: float | None) -> Calibrated:
    """Apply CPU-heat compensation (when enabled) and slope/intercept to a raw reading.

    Args:
        raw: the sensor's reading.
        cal: the calibration to apply.
        cpu_temperature: the smoothed CPU temperature in °C, or None when unavailable; with
            compensation enabled and no CPU temperature, the temperature is left uncompensated
            and ``cpu_temperature_unavailable`` is flagged.
    """
    flags: list[str] = []
    temperature = raw.temperature
    humidity = raw.humidity
    comp = cal.cpu_compensation
    if comp.enabled:
        if cpu_temperature is not None and math.isfinite(cpu_temperature):
            temperature = compensate_cpu_heat(temperature, cpu_temperature, comp.factor)
            humidity, flag = compensate_humidity(humidity, raw.temperature, temperature)
            if flag is not None:
                flags.append(flag)
        else:
            flags.append(FLAG_CPU_UNAVAILABLE)
    values: dict[str, float | None] = {
        "temperature": linear(temperature, cal.temperature),
        "humidity": linear(humidity, cal.humidity),
        "pressure": linear(raw.pressure, cal.pressure),
        "gasResistance": raw.gas_resistance,
    }
    if raw.light is not None:
        values["light"] = raw.light
    return Calibrated(values=values, flags=tuple(flags))


def compensate_humidity(
    humidity: float, measured_at: float, corrected: float
) -> tuple[float, str | None]:
    """Relative humidity at the CPU-corrected temperature, keeping the measured dew point.

    Returns:
        (humidity %RH, flag or None): in 0…100 when recomputed; 100 with
        ``humidity_saturated`` when the corrected temperature is below the dew point; the
        input unchanged with ``humidity_uncompensated`` outside the formula's range.
    """
    if not (
        math.isfinite(humidity)
        and 0.0 <= humidity <= 100.0
        and in_magnus_range(measured_at)
        and in_magnus_range(corrected)
    ):
        return humidity, FLAG_HUMIDITY_UNCOMPENSATED
    value = humidity_at(humidity, measured_at, corrected)
    if value > 100.0:
        return 100.0, FLAG_HUMIDITY_SATURATED
    return value, None


def derived(
    values: Mapping[str, float | int | None], *, altitude: float | None
) -> dict[str, float]:
    """Values computed from validated ones: ``pressureSeaLevel`` when ``altitude`` is set.

    Only from a valid station pressure; the station temperature when valid, else the standard
    atmosphere's 15 °C.
    """
    pressure = values.get("pressure")
    if altitude is None or pressure is None:
        return {}
    temperature = values.get("temperature")
    t = STANDARD_TEMPERATURE_C if temperature is None else float(temperature)
    return {SEA_LEVEL_KEY: sea_level_pressure(float(pressure), t, altitude)}


class CpuTemperature:
    """A smoothed CPU temperature: the mean of the last ``window`` good samples.

    A sample that fails (the callable raises, returns a non-number, NaN or an absurd value) gives
    ``None`` for that reading: the caller then skips compensation and flags it, rather than
    compensating with stale data.
    """

    def __init__(
        self,
        *,
        source: TemperatureSource | None,
        window: int = 10,
        find: Callable[[], TemperatureSource | None] | None = None,
    ) -> None:
        """Create the smoother.

        Args:
            source: gpiozero ``CPUTemperature()`` or a callable returning °C; None = no CPU
                temperature on this machine (every sample is None).
            window: how many good samples the moving average spans (>= 1).
            find: with ``source=None``, called once at the first sample to find the source
                (e.g. :func:`default_cpu_temperature`), so a module that starts with
                compensation off neither imports gpiozero nor probes sysfs until a twin patch
                turns it on.

        Raises:
            ValueError: ``window`` < 1, or both ``source`` and ``find`` given.
        """
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if source is not None and find is not None:
            raise ValueError("give a source or a way to find one, not both")
        self._source = source
        self._find = find
        self._samples: deque[float] = deque(maxlen=window)
        self._warned = False

    def _read_source(self) -> float:
        if self._find is not None:
            find, self._find = self._find, None
            self._source = find()
        source = self._source
        if source is None:
            raise OSError("no CPU temperature source")
        value = source() if callable(source) else source.temperature
        return float(value)

    def sample(self) -> float | None:
        """Take one CPU sample and return the smoothed temperature, or None on failure."""
        try:
            value = self._read_source()
        except (OSError, ValueError, TypeError) as exc:
            if not self._warned:
                log.warning("CPU temperature unavailable (%s): no CPU-heat compensation", exc)
                self._warned = True
            return None
        # A CPU below -40 °C or above 150 °C is a broken reading, not a hot Pi.
        if not (math.isfinite(value) and -40.0 <= value <= 150.0):
            return None
        self._samples.append(value)
        return sum(self._samples) / len(self._samples)


SYSFS_CPU_TEMPERATURE = "/sys/class/thermal/thermal_zone0/temp"


def sysfs_cpu_temperature(path: str = SYSFS_CPU_TEMPERATURE) -> float:
    """The CPU temperature from sysfs (millidegrees), as gpiozero's CPUTemperature reads it.

    Raises:
        OSError: no such file (not a Pi, or not mapped into the container).
        ValueError: the file does not hold a number.
    """
    with open(path, encoding="ascii") as fh:
        return int(fh.read().strip()) / 1000.0


def default_cpu_temperature() -> TemperatureSource | None:
    """The CPU temperature source: gpiozero's ``CPUTemperature()``, else sysfs, else None.

    gpiozero is imported here, not at module import, to keep the CLI's start fast. The sysfs
    fallback covers an image without a GPIO pin factory, where gpiozero refuses to build even a
    pin-less device.
    """
    try:
        # CPUTemperature needs no pin, but gpiozero still probes for a pin factory and warns
        # about each one it cannot load; that is noise for a temperature file.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from gpiozero import CPUTemperature

            cpu: HasTemperature = CPUTemperature()
            _ = cpu.temperature
    except Exception as exc:  # gpiozero raises assorted errors off a Pi
        log.debug("gpiozero CPUTemperature unavailable (%s: %s)", type(exc).__name__, exc)
    else:
        return cpu
    try:
        sysfs_cpu_temperature()
    except (OSError, ValueError) as exc:
        log.info("no CPU temperature on this machine (%s)", exc)
        return None
    return sysfs_cpu_temperature
