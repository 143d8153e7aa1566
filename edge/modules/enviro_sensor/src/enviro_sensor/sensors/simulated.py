"""A simulated BME680, for demos, the local stack and a Pi without a sensor.

Every reading says `source="simulated"`; nothing downstream can mistake it for a real one.

The model (all of it a pure function of the seed and the clock, plus the read count for the
heater warm-up, so a seed and a time give the same reading in any process):
- temperature: a daily cycle peaking mid-afternoon (wall-clock hour of `now()`), a slow
  several-day drift, a little noise;
- humidity: moves against temperature, as relative humidity does when the air's water content
  stays put (about −6 % of its value per °C), plus a slow drift, a bump during events, noise;
- pressure: weather-like drift (a few slow waves, ±10 hPa over days) plus the small twice-daily
  atmospheric tide;
- gas resistance: a device-specific baseline that dips on "events" (someone cooking, cleaning,
  a window closed) — sudden onset, slow recovery — lower when humid; no gas value for the first
  few reads while the "heater" is not stable.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from enviro_sensor.metrics import metric
from enviro_sensor.reading import RawReading, SourceKind
from enviro_sensor.sensors.health import SensorHealth

DAY_S = 86_400.0
HOUR_S = 3_600.0
#: Reads without a stable heater at start-up (the real sensor needs a few heater cycles).
DEFAULT_UNSTABLE_READS = 3
#: Chance that a gas "event" starts in a given hour.
EVENT_CHANCE_PER_HOUR = 0.2


def _utc_now() -> datetime:
    return datetime.now(UTC)


def seed_for_device(device_id: str) -> int:
    """A stable 63-bit seed from a device id (the same in every process, unlike hash())."""
    digest = hashlib.sha256(device_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass(frozen=True, slots=True)
class _Profile:
    """What makes one simulated device differ from another."""

    base_temperature: float
    daily_amplitude: float
    peak_hour: float
    drift_phase: float
    base_humidity: float
    humidity_phase: float
    base_pressure: float
    pressure_waves: tuple[tuple[float, float, float], ...]  # (period s, amplitude hPa, phase)
    gas_baseline: float

    @classmethod
    def from_seed(cls, seed: int) -> _Profile:
        rng = random.Random(f"enviromon-profile:{seed}")  # noqa: S311 - simulation, not crypto
        return cls(
            base_temperature=rng.uniform(19.0, 23.5),
            daily_amplitude=rng.uniform(1.5, 3.5),
            peak_hour=rng.uniform(14.0, 17.0),
            drift_phase=rng.uniform(0.0, 2 * math.pi),
            base_humidity=rng.uniform(38.0, 55.0),
            humidity_phase=rng.uniform(0.0, 2 * math.pi),
            base_pressure=rng.uniform(1002.0, 1022.0),
            pressure_waves=tuple(
                (rng.uniform(low, high) * DAY_S, rng.uniform(2.0, amp), rng.uniform(0, 2 * math.pi))
                for low, high, amp in ((1.8, 2.6, 6.0), (3.0, 4.5, 5.0), (5.0, 8.0, 4.0))
            ),
            gas_baseline=rng.uniform(80_000.0, 250_000.0),
        )


def _clamp(key: str, value: float) -> float:
    m = metric(key)
    return min(max(value, m.min), m.max)


class SimulatedSensor:
    """A deterministic, realistic stand-in for a BME680. Never fails."""

    def __init__(
        self,
        *,
        seed: int | None = None,
        device_id: str = "simulated",
        now: Callable[[], datetime] = _utc_now,
        unstable_reads: int = DEFAULT_UNSTABLE_READS,
    ) -> None:
        """Set up one simulated device.

        Args:
            seed: makes the device's profile and noise; None derives it from `device_id`, so
                several simulated devices differ without configuration.
            device_id: used for the seed when none is given.
            now: the clock; a naive datetime is taken as UTC.
            unstable_reads: how many first reads have no stable heater (no gas value).
        """
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        if isinstance(unstable_reads, bool) or not isinstance(unstable_reads, int):
            raise TypeError(f"unstable_reads must be an int, got {unstable_reads!r}")
        if unstable_reads < 0:
            raise ValueError(f"unstable_reads must be >= 0, got {unstable_reads}")
        self._seed = seed if seed is not None else seed_for_device(device_id)
        self._profile = _Profile.from_seed(self._seed)
        self._now = now
        self._unstable_reads = unstable_reads
        self._reads = 0

    @property
    def source(self) -> SourceKind:
        """Always "simulated"."""
        return "simulated"

    @property
    def seed(self) -> int:
        """The seed in use (given, or derived from the device id)."""
        return self._seed

    @property
    def health(self) -> SensorHealth:
        """Always "simulated": it cannot fail, and it is never reported as a healthy real sensor."""
        return SensorHealth(
            state="simulated",
            kind="simulated",
            address=None,
            last_error=None,
            consecutive_failures=0,
            reinitialisations=0,
        )

    def read(self) -> RawReading:
        """One simulated reading at `now()`."""
        self._reads += 1
        heat_stable = self._reads > self._unstable_reads
        return self.reading_at(self._now(), heat_stable=heat_stable)

    def reading_at(self, when: datetime, *, heat_stable: bool = True) -> RawReading:
        """The reading this device gives at `when` (pure: same seed and time, same reading)."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        t = when.timestamp()
        p = self._profile
        # Noise is seeded by (seed, millisecond), not drawn from a running generator, so it does
        # not depend on how many reads came before.
        noise = random.Random(f"enviromon-noise:{self._seed}:{round(t * 1000)}")  # noqa: S311
        hour = when.hour + when.minute / 60 + when.second / 3600
        events = self._event_level(t)

        daily = p.daily_amplitude * math.cos(2 * math.pi * (hour - p.peak_hour) / 24)
        drift = 0.8 * math.sin(2 * math.pi * t / (6.3 * DAY_S) + p.drift_phase)
        smooth_temperature = p.base_temperature + daily + drift + 0.6 * events
        temperature = smooth_temperature + noise.gauss(0.0, 0.05)

        humidity = (
            p.base_humidity * math.exp(-0.06 * (smooth_temperature - p.base_temperature))
            + 3.0 * math.sin(2 * math.pi * t / (2.7 * DAY_S) + p.humidity_phase)
            + 6.0 * events
            + noise.gauss(0.0, 0.3)
        )

        pressure = p.base_pressure + 0.5 * math.cos(2 * math.pi * (hour - 10.0) / 12)
        for period, amplitude, phase in p.pressure_waves:
            pressure += amplitude * math.sin(2 * math.pi * t / period + phase)
        pressure += noise.gauss(0.0, 0.03)

        humidity = _clamp("humidity", humidity)
        gas: float | None = None
        if heat_stable:
            gas = (
                p.gas_baseline
                * math.exp(-0.012 * (humidity - 40.0))
                * (1.0 - events)
                * math.exp(noise.gauss(0.0, 0.02))
            )
            gas = _clamp("gasResistance", gas)
        return RawReading(
            temperature=_clamp("temperature", temperature),
            humidity=humidity,
            pressure=_clamp("pressure", pressure),
            gas_resistance=gas,
            heat_stable=heat_stable,
            source="simulated",
        )

    def close(self) -> None:
        """Nothing to release."""

    def _event_level(self, t: float) -> float:
        """How deep the gas dips at `t`: 0 (clean air) up to below 1 (a strong event)."""
        remaining = 1.0
        hour_index = math.floor(t / HOUR_S)
        # An event lasts under an hour and recovers over about an hour: look back three hours.
        for index in range(hour_index - 3, hour_index + 1):
            rng = random.Random(f"enviromon-event:{self._seed}:{index}")  # noqa: S311
            if rng.random() >= EVENT_CHANCE_PER_HOUR:
                continue
            start = index * HOUR_S + rng.uniform(0.0, HOUR_S)
            duration = rng.uniform(10 * 60, 45 * 60)
            depth = rng.uniform(0.3, 0.75)
            if t < start:
                continue
            if t < start + duration:
                level = depth * (1.0 - math.exp(-(t - start) / 120.0))  # a fast onset
            else:
                onset = depth * (1.0 - math.exp(-duration / 120.0))
                level = onset * math.exp(-(t - start - duration) / 900.0)  # a slow recovery
            remaining *= 1.0 - level
        return 1.0 - remaining
