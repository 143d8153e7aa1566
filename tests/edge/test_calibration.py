"""Calibration: slope/intercept, Pimoroni's CPU-heat compensation, the smoothed CPU source."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from enviro_sensor.calibration import (
    FLAG_CPU_UNAVAILABLE,
    CpuTemperature,
    calibrate,
    compensate_cpu_heat,
    linear,
    sysfs_cpu_temperature,
)
from enviro_sensor.config import Calibration, CpuCompensation, Linear
from enviro_sensor.metrics import metric
from enviro_sensor.validation import validate
from hypothesis import given, settings
from hypothesis import strategies as st

from .pipeline_doubles import raw

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
slopes = st.floats(min_value=0.01, max_value=10.0)
intercepts = st.floats(min_value=-100.0, max_value=100.0)


@settings(deadline=None)  # timing belongs in bench/, not in tests
@given(t=finite, h=finite, p=finite, gas=st.one_of(st.none(), finite))
def test_identity_calibration(t: float, h: float, p: float, gas: float | None) -> None:
    """Slope 1 / intercept 0 without compensation returns the raw values unchanged."""
    result = calibrate(raw(t, h, p, gas), Calibration(), cpu_temperature=55.0)
    assert result.values == {"temperature": t, "humidity": h, "pressure": p, "gasResistance": gas}
    assert result.flags == ()


def test_linear_is_value_times_slope_plus_intercept() -> None:
    """The original calibration table's formula."""
    cal = Calibration(
        temperature=Linear(1.1, -2.0), humidity=Linear(0.9, 3.0), pressure=Linear(1.0, 1.5)
    )
    result = calibrate(raw(20.0, 50.0, 1000.0, 1234.0), cal, cpu_temperature=None)
    assert result.values["temperature"] == pytest.approx(20.0 * 1.1 - 2.0)
    assert result.values["humidity"] == pytest.approx(50.0 * 0.9 + 3.0)
    assert result.values["pressure"] == pytest.approx(1001.5)
    assert result.values["gasResistance"] == 1234.0  # not a calibrated metric
    assert linear(10.0, Linear(2.0, 1.0)) == 21.0


def test_cpu_compensation_is_pimoroni_formula() -> None:
    """raw − (cpu − raw) / factor, then slope/intercept."""
    assert compensate_cpu_heat(30.0, 52.5, 2.25) == pytest.approx(20.0)
    cal = Calibration(
        temperature=Linear(1.0, 0.5), cpu_compensation=CpuCompensation(enabled=True, factor=2.25)
    )
    result = calibrate(raw(30.0), cal, cpu_temperature=52.5)
    assert result.values["temperature"] == pytest.approx(20.5)
    assert result.flags == ()


@pytest.mark.parametrize("cpu", [None, math.nan])
def test_cpu_compensation_without_cpu_flags(cpu: float | None) -> None:
    """Compensation enabled but no CPU temperature: left uncompensated, and flagged."""
    cal = Calibration(cpu_compensation=CpuCompensation(enabled=True))
    result = calibrate(raw(30.0), cal, cpu_temperature=cpu)
    assert result.values["temperature"] == 30.0
    assert result.flags == (FLAG_CPU_UNAVAILABLE,)


def test_cpu_temperature_is_a_moving_average() -> None:
    """The smoothed CPU temperature is the mean of the last `window` good samples."""
    samples = iter([50.0, 52.0, 54.0, 60.0])
    cpu = CpuTemperature(source=lambda: next(samples), window=3)
    assert cpu.sample() == 50.0
    assert cpu.sample() == 51.0
    assert cpu.sample() == 52.0
    assert cpu.sample() == pytest.approx((52.0 + 54.0 + 60.0) / 3)


def test_cpu_temperature_accepts_gpiozero_like_object() -> None:
    """A gpiozero CPUTemperature (an object with .temperature) is a source too."""

    class FakeCpu:
        temperature = 48.5

    assert CpuTemperature(source=FakeCpu()).sample() == 48.5


def test_cpu_temperature_failure_gives_none_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failing CPU reading gives None (no compensation), logged once, and recovers."""
    values: list[object] = [
        OSError("no such file"),
        OSError("again"),
        "junk",
        math.nan,
        200.0,
        45.0,
    ]

    def source() -> float:
        item = values.pop(0)
        if isinstance(item, Exception):
            raise item
        return item  # type: ignore[return-value]

    cpu = CpuTemperature(source=source)
    with caplog.at_level(logging.WARNING, logger="enviro_sensor.calibration"):
        results = [cpu.sample() for _ in range(6)]
    assert results == [None, None, None, None, None, 45.0]
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1


def test_no_cpu_source_gives_none() -> None:
    """No CPU temperature on this machine: every sample is None."""
    assert CpuTemperature(source=None).sample() is None
    with pytest.raises(ValueError, match="window"):
        CpuTemperature(source=None, window=0)


def test_cpu_source_is_found_at_first_sample_only() -> None:
    """With find=, the source is looked up once, at the first sample, not at construction."""
    calls: list[int] = []

    def find() -> Callable[[], float]:
        calls.append(1)
        return lambda: 47.0

    cpu = CpuTemperature(source=None, find=find)
    assert calls == []
    assert [cpu.sample(), cpu.sample()] == [47.0, 47.0]
    assert calls == [1]
    nothing = CpuTemperature(source=None, find=lambda: None)
    assert nothing.sample() is None
    with pytest.raises(ValueError, match="not both"):
        CpuTemperature(source=lambda: 1.0, find=find)


def test_sysfs_cpu_temperature_reads_millidegrees(tmp_path: Path) -> None:
    """The sysfs fallback reads millidegrees as gpiozero does."""
    path = tmp_path / "temp"
    path.write_text("51234\n")
    assert sysfs_cpu_temperature(str(path)) == pytest.approx(51.234)
    with pytest.raises(OSError):
        sysfs_cpu_temperature(str(tmp_path / "missing"))


@settings(deadline=None)  # timing belongs in bench/, not in tests
@given(
    t=finite,
    h=finite,
    p=finite,
    gas=st.one_of(st.none(), finite),
    heat_stable=st.booleans(),
    slope=slopes,
    intercept=intercepts,
    cpu=st.one_of(st.none(), st.floats(min_value=-40, max_value=150)),
    enabled=st.booleans(),
    factor=st.floats(min_value=0.1, max_value=100),
)
def test_finite_inputs_give_in_range_values_or_flags(
    t: float,
    h: float,
    p: float,
    gas: float | None,
    heat_stable: bool,
    slope: float,
    intercept: float,
    cpu: float | None,
    enabled: bool,
    factor: float,
) -> None:
    """Calibrated and validated, every value is finite and in range, or null with a flag."""
    lin = Linear(slope, intercept)
    cal = Calibration(
        temperature=lin,
        humidity=lin,
        pressure=lin,
        cpu_compensation=CpuCompensation(enabled=enabled, factor=factor),
    )
    calibrated = calibrate(raw(t, h, p, gas, heat_stable=heat_stable), cal, cpu_temperature=cpu)
    checked = validate(calibrated.values, heat_stable=heat_stable)
    for key, value in checked.values.items():
        if value is None:
            is_missing_gas = key == "gasResistance" and gas is None and heat_stable
            assert (
                is_missing_gas
                or any(f.startswith(key) for f in checked.flags)
                or (key == "gasResistance" and "gas_unstable" in checked.flags)
            )
        else:
            m = metric(key)
            assert math.isfinite(value)
            assert m.min <= value <= m.max


def test_calibration_covers_the_tables_calibrated_metrics() -> None:
    """Every metric the table marks calibrated has a slope/intercept here, and no other."""
    from enviro_sensor.metrics import calibrated_keys

    assert calibrated_keys() == ("temperature", "humidity", "pressure")
    cal = Calibration()
    for key in calibrated_keys():
        assert cal.linear(key) == Linear()
    assert set(calibrate(raw(), cal, cpu_temperature=None).values) == {
        *calibrated_keys(),
        "gasResistance",
    }
