"""Device-side calibration: pure functions, plus a smoothed CPU-temperature source.

Order of operations for temperature: first Pimoroni's CPU-heat compensation on the raw value,
``raw − (cpu − raw) / factor`` (a sensor close to a Pi's CPU reads high), then the linear
calibration ``value × slope + intercept``, so a slope/intercept measured against a reference
thermometer corrects what is left after compensation. Humidity and pressure take only the linear
calibration.

The CPU temperature is passed in, the gpiozero way: a ``gpiozero.CPUTemperature`` instance, or any
callable returning °C. :class:`CpuTemperature` smooths it (a moving average), because a single
CPU sample jumps with load while the sensor's surroundings warm slowly.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .config import Calibration, Linear
from .reading import RawReading

log = logging.getLogger(__name__)

FLAG_CPU_UNAVAILABLE = "cpu_temperature_unavailable"


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
    comp = cal.cpu_compensation
    if comp.enabled:
        if cpu_temperature is not None and math.isfinite(cpu_temperature):
            temperature = compensate_cpu_heat(temperature, cpu_temperature, comp.factor)
        else:
            flags.append(FLAG_CPU_UNAVAILABLE)
    values: dict[str, float | None] = {
        "temperature": linear(temperature, cal.temperature),
        "humidity": linear(raw.humidity, cal.humidity),
        "pressure": linear(raw.pressure, cal.pressure),
        "gasResistance": raw.gas_resistance,
    }
    if raw.light is not None:
        values["light"] = raw.light
    return Calibrated(values=values, flags=tuple(flags))


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
