"""Physically right corrections: humidity under CPU-heat compensation, sea-level pressure."""

from __future__ import annotations

from pathlib import Path

import pytest
from enviro_sensor.airquality import AirQuality
from enviro_sensor.calibration import (
    FLAG_HUMIDITY_SATURATED,
    FLAG_HUMIDITY_UNCOMPENSATED,
    calibrate,
    compensate_cpu_heat,
    compensate_humidity,
    derived,
)
from enviro_sensor.config import Calibration, CpuCompensation, ModuleConfig
from enviro_sensor.physics import (
    MAGNUS_A,
    MAGNUS_B_C,
    MAGNUS_E0_HPA,
    dew_point,
    in_magnus_range,
    saturation_vapour_pressure,
    sea_level_pressure,
)
from enviro_sensor.pipeline import Pipeline
from hypothesis import given, settings
from hypothesis import strategies as st

from .pipeline_doubles import FakeClock, assert_valid, raw

finite = st.floats(allow_nan=False, allow_infinity=False)
factors = st.floats(min_value=0.1, max_value=100)
ON = Calibration(cpu_compensation=CpuCompensation(enabled=True, factor=2.25))


def test_magnus_constants_and_known_points() -> None:
    """Sonntag's constants; e_s(0 °C) = 6.112 hPa, e_s(20 °C) ≈ 23.4 hPa, dew point of 100 % = T."""
    assert (MAGNUS_A, MAGNUS_B_C, MAGNUS_E0_HPA) == (17.62, 243.12, 6.112)
    assert saturation_vapour_pressure(0.0) == pytest.approx(6.112)
    assert saturation_vapour_pressure(20.0) == pytest.approx(23.37, abs=0.05)
    assert dew_point(21.3, 100.0) == pytest.approx(21.3)
    assert dew_point(25.0, 50.0) == pytest.approx(13.85, abs=0.05)  # psychrometric tables: 13.9


def test_compensated_humidity_is_higher_in_cooler_air() -> None:
    """Sensor at 30 °C / 40 %RH, air really at 25 °C: the same water is about 53 %RH."""
    reading = raw(30.0, 40.0, 1000.0, None)
    corrected = compensate_cpu_heat(30.0, 41.25, 2.25)
    assert corrected == pytest.approx(25.0)
    out = calibrate(reading, ON, cpu_temperature=41.25)
    assert out.values["temperature"] == pytest.approx(25.0)
    assert out.values["humidity"] == pytest.approx(53.4, abs=0.2)
    assert out.flags == ()
    h = out.values["humidity"]
    assert h is not None
    assert dew_point(25.0, h) == pytest.approx(dew_point(30.0, 40.0), abs=1e-9)


@settings(max_examples=500, deadline=None)
@given(
    t=finite, h=st.one_of(st.floats(min_value=0, max_value=100), finite), cpu=finite, factor=factors
)
def test_compensated_humidity_in_range_and_keeps_dew_point(
    t: float, h: float, cpu: float, factor: float
) -> None:
    """Any finite raw T, RH and CPU temperature: RH in 0–100, and the measured dew point kept
    (or 100 % flagged saturated, or passed on flagged where Magnus does not apply)."""
    corrected = compensate_cpu_heat(t, cpu, factor)
    humidity, flag = compensate_humidity(h, t, corrected)
    if flag == FLAG_HUMIDITY_UNCOMPENSATED:
        assert humidity == h
        usable = 0 <= h <= 100 and in_magnus_range(t) and in_magnus_range(corrected)
        assert not usable  # only where the formula cannot be used; validation judges h itself
        return
    assert 0.0 <= humidity <= 100.0
    if flag == FLAG_HUMIDITY_SATURATED:
        assert humidity == 100.0
        assert corrected <= dew_point(t, h) + 1e-9  # the corrected air is at or below its dew point
        return
    assert flag is None
    if h >= 1e-6:  # below that the air is dry and its dew point meaningless (log of ~0)
        assert dew_point(corrected, humidity) == pytest.approx(dew_point(t, h), abs=1e-6)
    else:
        assert humidity < 0.1  # stays (practically) dry: e_s ratios over -45…85 °C are < 10⁴


@settings(max_examples=300, deadline=None)
@given(t=finite, h=finite, p=finite, cpu=st.one_of(st.none(), finite))
def test_compensation_off_passes_values_through(
    t: float, h: float, p: float, cpu: float | None
) -> None:
    """With compensation off, temperature and humidity are the raw values, whatever the CPU says."""
    out = calibrate(raw(t, h, p, None), Calibration(), cpu_temperature=cpu)
    assert (out.values["temperature"], out.values["humidity"]) == (t, h)
    assert out.flags == ()


def test_sea_level_pressure_formula() -> None:
    """1000 hPa at 110.9 m and 15 °C is the standard 1013.2 hPa; 0 m changes nothing."""
    assert sea_level_pressure(1000.0, 15.0, 110.9) == pytest.approx(1013.2, abs=0.1)
    assert sea_level_pressure(987.0, 20.0, 0.0) == pytest.approx(987.0)
    assert sea_level_pressure(1020.0, 10.0, -100.0) < 1020.0  # below sea level: lower


def test_sea_level_pressure_only_from_a_valid_station_pressure() -> None:
    """No altitude, or no valid pressure: no sea-level pressure; no temperature: 15 °C."""
    assert derived({"pressure": 1000.0, "temperature": 15.0}, altitude=None) == {}
    assert derived({"pressure": None, "temperature": 15.0}, altitude=200.0) == {}
    got = derived({"pressure": 1000.0, "temperature": None}, altitude=110.9)
    assert got["pressureSeaLevel"] == pytest.approx(1013.2, abs=0.1)


def test_pipeline_sends_sea_level_pressure_when_altitude_is_set(tmp_path: Path) -> None:
    """With altitude in the twin, messages carry pressureSeaLevel; station pressure unchanged."""
    config = ModuleConfig().apply_patch({"altitude": 110.9})
    pipeline = Pipeline(
        device_id="pi-hill",
        config=config,
        air_quality=AirQuality(source="bme680", state_path=None),
        clock=FakeClock(),
    )
    payload = pipeline.process(raw(15.0, 40.0, 1000.0, None)).payload
    assert_valid(payload)
    assert payload["pressure"] == 1000.0
    assert payload["pressureSeaLevel"] == pytest.approx(1013.2, abs=0.1)
    pipeline.set_config(config.apply_patch({"altitude": None}))
    assert "pressureSeaLevel" not in pipeline.process(raw(15.0, 40.0, 1000.0, None)).payload


def test_humidity_just_over_100_after_calibration_is_clamped_and_flagged(tmp_path: Path) -> None:
    """RH 99 × 1.01 + 0.3 = 100.29 %: sent as 100 with humidity_clamped; 110 % stays refused."""
    config = ModuleConfig().apply_patch(
        {"calibration": {"humidity": {"slope": 1.01, "intercept": 0.3}}}
    )
    pipeline = Pipeline(
        device_id="pi",
        config=config,
        air_quality=AirQuality(source="bme680", state_path=None),
        clock=FakeClock(),
    )
    near = pipeline.process(raw(20.0, 99.0, 1000.0, None)).payload
    assert (near["humidity"], near["flags"]) == (100.0, ["humidity_clamped"])
    far = pipeline.process(raw(20.0, 108.0, 1000.0, None)).payload
    assert far["humidity"] is None and "humidity_out_of_range" in far["flags"]
