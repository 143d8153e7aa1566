"""SimulatedSensor: realistic, deterministic per seed and time, in range, always labelled."""

from __future__ import annotations

import itertools
import json
import math
import statistics
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from enviro_sensor.reading import RawReading
from enviro_sensor.sensors import SimulatedSensor
from enviro_sensor.sensors.simulated import DEFAULT_UNSTABLE_READS, seed_for_device
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
RANGES = {
    row["key"]: (row["min"], row["max"])
    for row in json.loads((ROOT / "contract" / "metrics.json").read_text("utf-8"))["metrics"]
}
START = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)

seeds = st.integers(min_value=-(2**63), max_value=2**63)
times = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.just(UTC),
)


class StepClock:
    """A clock that moves by a fixed step on every call."""

    def __init__(self, start: datetime, step: timedelta) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> datetime:
        current = self.now
        self.now += self.step
        return current


def series(
    sensor: SimulatedSensor, start: datetime, step: timedelta, count: int
) -> list[RawReading]:
    return [sensor.reading_at(start + step * i) for i in range(count)]


def assert_in_range(reading: RawReading) -> None:
    for key, value in (
        ("temperature", reading.temperature),
        ("humidity", reading.humidity),
        ("pressure", reading.pressure),
    ):
        low, high = RANGES[key]
        assert math.isfinite(value) and low <= value <= high, (key, value)
    if reading.gas_resistance is not None:
        low, high = RANGES["gasResistance"]
        assert math.isfinite(reading.gas_resistance)
        assert low <= reading.gas_resistance <= high


def test_source_is_always_simulated() -> None:
    """Every reading and the sensor itself say "simulated"."""
    sensor = SimulatedSensor(seed=1, now=StepClock(START, timedelta(seconds=10)))
    assert sensor.source == "simulated"
    assert all(sensor.read().source == "simulated" for _ in range(20))
    assert sensor.health.kind == "simulated" and sensor.health.state == "simulated"
    assert sensor.health.to_reported()["address"] is None


def test_heater_not_stable_for_the_first_reads() -> None:
    """The first few reads have no gas value; after them every read has one."""
    sensor = SimulatedSensor(seed=7, now=StepClock(START, timedelta(seconds=10)))
    readings = [sensor.read() for _ in range(DEFAULT_UNSTABLE_READS + 5)]
    warming, warm = readings[:DEFAULT_UNSTABLE_READS], readings[DEFAULT_UNSTABLE_READS:]
    assert all(r.gas_resistance is None and not r.heat_stable for r in warming)
    assert all(r.gas_resistance is not None and r.heat_stable for r in warm)


@settings(max_examples=60, deadline=None)
@given(seed=seeds, when=times)
def test_same_seed_and_time_give_the_same_reading(seed: int, when: datetime) -> None:
    """Two sensors with one seed agree at any time, whatever each read before."""
    first = SimulatedSensor(seed=seed, now=lambda: when)
    second = SimulatedSensor(seed=seed, now=lambda: when)
    for _ in range(DEFAULT_UNSTABLE_READS + 2):
        first.read()  # read history must not matter
    assert first.reading_at(when) == second.reading_at(when)


@settings(max_examples=200, deadline=None)
@given(seed=seeds, when=times)
def test_values_stay_within_the_bme680_ranges(seed: int, when: datetime) -> None:
    """Any seed, any time: finite values inside contract/metrics.json's ranges."""
    reading = SimulatedSensor(seed=seed).reading_at(when)
    assert reading.source == "simulated"
    assert reading.gas_resistance is not None
    assert_in_range(reading)


@settings(max_examples=30, deadline=None)
@given(device=st.text(min_size=1, max_size=40), when=times)
def test_naive_time_is_taken_as_utc(device: str, when: datetime) -> None:
    """A naive datetime gives the same reading as the same wall time in UTC."""
    sensor = SimulatedSensor(device_id=device)
    assert sensor.reading_at(when.replace(tzinfo=None)) == sensor.reading_at(when)


def test_devices_differ_without_a_seed() -> None:
    """Seeds come from device ids: two devices differ, one device is stable across instances."""
    kitchen = SimulatedSensor(device_id="pi-kitchen")
    garage = SimulatedSensor(device_id="pi-garage")
    assert (
        kitchen.seed
        == seed_for_device("pi-kitchen")
        == SimulatedSensor(device_id="pi-kitchen").seed
    )
    assert kitchen.seed != garage.seed
    step = timedelta(minutes=30)
    a, b = series(kitchen, START, step, 48), series(garage, START, step, 48)
    assert [r.temperature for r in a] != [r.temperature for r in b]
    assert abs(statistics.mean(r.pressure for r in a) - statistics.mean(r.pressure for r in b)) > 0


def test_explicit_seed_wins_over_device_id() -> None:
    """A configured seed is used as given: same seed, same readings on differently named devices."""
    a = SimulatedSensor(seed=42, device_id="one")
    b = SimulatedSensor(seed=42, device_id="two")
    assert a.seed == b.seed == 42
    assert series(a, START, timedelta(hours=1), 24) == series(b, START, timedelta(hours=1), 24)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_daily_temperature_cycle_peaks_in_the_afternoon(seed: int) -> None:
    """Averaged over a week, afternoons are warmer than the small hours by over a degree."""
    sensor = SimulatedSensor(seed=seed)
    afternoon, night = [], []
    for day in range(7):
        base = START + timedelta(days=day)
        afternoon.append(sensor.reading_at(base + timedelta(hours=15)).temperature)
        night.append(sensor.reading_at(base + timedelta(hours=4)).temperature)
    assert statistics.mean(afternoon) - statistics.mean(night) > 1.0


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_humidity_moves_against_temperature(seed: int) -> None:
    """Over two days, humidity and temperature are clearly negatively correlated."""
    readings = series(SimulatedSensor(seed=seed), START, timedelta(minutes=20), 144)
    correlation = statistics.correlation(
        [r.temperature for r in readings], [r.humidity for r in readings]
    )
    assert correlation < -0.3


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_pressure_drifts_slowly(seed: int) -> None:
    """Pressure changes little between readings a minute apart, but wanders over days."""
    readings = series(SimulatedSensor(seed=seed), START, timedelta(minutes=1), 60 * 24 * 4)
    pressures = [r.pressure for r in readings]
    steps = [abs(b - a) for a, b in itertools.pairwise(pressures)]
    assert max(steps) < 0.5
    assert max(pressures) - min(pressures) > 3.0
    assert all(950 < p < 1060 for p in pressures)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_gas_resistance_dips_on_events(seed: int) -> None:
    """Over three days gas has dips (episodes, not the norm) and recovers from them."""
    step = timedelta(minutes=2)
    readings = series(SimulatedSensor(seed=seed), START, step, 30 * 24 * 3)
    values = [r.gas_resistance for r in readings if r.gas_resistance is not None]
    assert len(values) == len(readings)
    typical = statistics.median(values)
    dipped = [i for i, g in enumerate(values) if g < 0.6 * typical]
    assert dipped, "no event in three days"
    assert len(dipped) < 0.3 * len(values), "dips should be episodes, not the usual state"
    three_hours = int(timedelta(hours=3) / step)
    recovered = [i for i in dipped if any(g > 0.85 * typical for g in values[i : i + three_hours])]
    assert recovered, "gas never recovered within three hours of a dip"


def test_noise_makes_neighbouring_readings_differ() -> None:
    """Readings a second apart are close but not identical (there is noise)."""
    sensor = SimulatedSensor(seed=3)
    a = sensor.reading_at(START)
    b = sensor.reading_at(START + timedelta(seconds=1))
    assert a != b
    assert abs(a.temperature - b.temperature) < 0.5


def test_local_wall_clock_drives_the_daily_cycle() -> None:
    """The cycle follows the datetime's own wall clock: 15:00 local is warm in any zone."""
    sensor = SimulatedSensor(seed=11)
    zone = timezone(timedelta(hours=-8))
    afternoon = [
        sensor.reading_at(datetime(2026, 11, d, 15, tzinfo=zone)).temperature for d in range(1, 8)
    ]
    night = [
        sensor.reading_at(datetime(2026, 11, d, 4, tzinfo=zone)).temperature for d in range(1, 8)
    ]
    assert statistics.mean(afternoon) > statistics.mean(night) + 1.0


def test_bad_arguments_are_refused() -> None:
    """Seed must be an int and the warm-up count a non-negative int."""
    with pytest.raises(TypeError):
        SimulatedSensor(seed="7")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SimulatedSensor(seed=True)
    with pytest.raises(ValueError):
        SimulatedSensor(unstable_reads=-1)
