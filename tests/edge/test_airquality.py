"""Air quality: Pimoroni's burn-in recipe, a relative score, the persisted baseline."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
from enviro_sensor.airquality import (
    BASELINE_SAMPLES,
    BASELINE_TIME_CONSTANT_S,
    MIN_BURN_IN_SAMPLES,
    AirQuality,
    score,
)
from hypothesis import given, settings
from hypothesis import strategies as st


class Tick:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def burn_in(
    aq: AirQuality, clock: Tick, gases: list[float], step: float = 10.0
) -> list[float | None]:
    out = []
    for gas in gases:
        out.append(aq.update(gas, 40.0))
        clock.t += step
    return out


def test_score_formula_matches_pimoroni() -> None:
    """Known points of Pimoroni's formula (humidity 25 %, gas 75 %)."""
    assert score(100_000, 40.0, gas_baseline=100_000) == pytest.approx(100.0)
    assert score(200_000, 40.0, gas_baseline=100_000) == pytest.approx(100.0)
    assert score(50_000, 40.0, gas_baseline=100_000) == pytest.approx(25 + 37.5)
    assert score(100_000, 100.0, gas_baseline=100_000) == pytest.approx(75.0)
    assert score(100_000, 0.0, gas_baseline=100_000) == pytest.approx(75.0)
    assert score(100_000, 70.0, gas_baseline=100_000) == pytest.approx(75 + 12.5)
    assert score(100_000, 20.0, gas_baseline=100_000) == pytest.approx(75 + 12.5)


@settings(deadline=None)  # timing belongs in bench/, not in tests
@given(
    gas=st.floats(min_value=1.0, max_value=1e8),
    humidity=st.floats(min_value=0.0, max_value=100.0),
    baseline=st.floats(min_value=1.0, max_value=1e8),
)
def test_score_is_finite_and_in_range(gas: float, humidity: float, baseline: float) -> None:
    """Any valid gas, humidity and baseline give a finite score in 0..100."""
    value = score(gas, humidity, gas_baseline=baseline)
    assert math.isfinite(value)
    assert 0.0 <= value <= 100.0


def test_null_during_burn_in_then_scored() -> None:
    """The score is null for 300 s from the first heat-stable sample, then baseline = mean."""
    clock = Tick()
    aq = AirQuality(source="bme680", state_path=None, clock=clock)
    results = burn_in(aq, clock, [100_000.0] * 30 + [120_000.0])  # t = 0 .. 300
    assert results == [None] * 31
    assert aq.baseline == pytest.approx((30 * 100_000 + 120_000) / 31)
    assert aq.update(aq.baseline, 40.0) == pytest.approx(100.0)


def test_baseline_is_mean_of_last_fifty() -> None:
    """Only the last 50 burn-in samples make the baseline."""
    clock = Tick()
    aq = AirQuality(source="bme680", state_path=None, clock=clock)
    # 61 samples 5 s apart: the burn-in ends with the 61st (t = 300 s); the first 11 drop out.
    gases = [10_000.0] * 11 + [200_000.0] * BASELINE_SAMPLES
    assert burn_in(aq, clock, gases, step=5.0) == [None] * len(gases)
    assert aq.baseline == pytest.approx(200_000.0)


def test_unstable_samples_neither_count_nor_start_burn_in() -> None:
    """A None gas (heater not stable) is no burn-in sample and does not start the clock."""
    clock = Tick()
    aq = AirQuality(source="bme680", state_path=None, clock=clock)
    for _ in range(40):
        assert aq.update(None, 40.0) is None
        clock.t += 10
    assert aq.state()["state"] == "burning_in"
    assert aq.state()["samples"] == 0
    burn_in(aq, clock, [80_000.0] * 30)
    assert aq.baseline is None  # 290 s since the first stable sample
    aq.update(80_000.0, 40.0)
    assert aq.baseline == pytest.approx(80_000.0)


def test_needs_minimum_samples() -> None:
    """A slow interval still needs a few samples before a baseline is trusted."""
    clock = Tick()
    aq = AirQuality(source="bme680", state_path=None, clock=clock)
    burn_in(aq, clock, [90_000.0] * (MIN_BURN_IN_SAMPLES - 1), step=200.0)
    assert aq.baseline is None
    aq.update(90_000.0, 40.0)
    assert aq.baseline == pytest.approx(90_000.0)


def test_missing_humidity_gives_null_score() -> None:
    """After burn-in, a reading without valid humidity has no score."""
    aq = AirQuality(source="bme680", state_path=None, clock=Tick(), burn_in_seconds=0)
    for _ in range(MIN_BURN_IN_SAMPLES):
        aq.update(100_000.0, 40.0)
    assert aq.baseline is not None  # burnt in, so the None below is for the humidity
    assert aq.update(100_000.0, None) is None
    assert aq.update(100_000.0, 40.0) == pytest.approx(100.0)


def test_baseline_persists_across_restart(tmp_path: Path) -> None:
    """A restart loads the baseline: no second burn-in."""
    path = tmp_path / "aq.json"
    clock = Tick()
    aq = AirQuality(source="bme680", state_path=path, clock=clock)
    burn_in(aq, clock, [100_000.0] * 31)
    assert path.exists()
    restarted = AirQuality(source="bme680", state_path=path, clock=Tick())
    assert restarted.baseline == pytest.approx(100_000.0)
    assert restarted.update(50_000.0, 40.0) == pytest.approx(62.5)
    assert restarted.state() == {
        "state": "ready",
        "gasBaseline": 100_000,
        "timeConstantHours": 24.0,
    }


def test_baseline_from_other_source_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A baseline learnt from simulated data is never applied to a real chip."""
    path = tmp_path / "aq.json"
    path.write_text(json.dumps({"format": 1, "source": "simulated", "gasBaseline": 5000.0}))
    with caplog.at_level(logging.WARNING, logger="enviro_sensor.airquality"):
        aq = AirQuality(source="bme680", state_path=path, clock=Tick())
    assert aq.baseline is None
    assert any("simulated" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "content",
    [
        "{oops",
        "[]",
        '{"format": 1, "source": "bme680", "gasBaseline": "NaN"}',
        '{"format": 1, "source": "bme680", "gasBaseline": -3}',
        '{"format": 1, "source": "bme680"}',
        '{"format": 2, "source": "bme680", "gasBaseline": 100}',
    ],
)
def test_corrupt_baseline_burns_in_again(tmp_path: Path, content: str) -> None:
    """A corrupt baseline file means a new burn-in, not a crash."""
    path = tmp_path / "aq.json"
    path.write_text(content)
    aq = AirQuality(source="bme680", state_path=path, clock=Tick())
    assert aq.baseline is None
    assert aq.update(100_000.0, 40.0) is None


def test_reset_forgets_baseline(tmp_path: Path) -> None:
    """reset() removes the baseline from memory and disk and starts a new burn-in."""
    path = tmp_path / "aq.json"
    clock = Tick()
    aq = AirQuality(source="bme680", state_path=path, clock=clock)
    burn_in(aq, clock, [100_000.0] * 31)
    assert aq.baseline is not None
    aq.reset()
    assert aq.baseline is None
    assert not path.exists()
    assert aq.update(100_000.0, 40.0) is None
    state = aq.state()
    assert state["state"] == "burning_in"
    assert state["samples"] == 1
    assert state["remainingSeconds"] == 300.0


def test_bad_burn_in_length_refused() -> None:
    """A negative or NaN burn-in length is refused."""
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="burn_in_seconds"):
            AirQuality(source="bme680", state_path=None, burn_in_seconds=bad)


def test_baseline_from_other_heater_profile_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A baseline learnt at one heater profile is kept for it and ignored after a change."""
    path = tmp_path / "aq.json"
    clock = Tick()
    aq = AirQuality(source="bme680", state_path=path, profile="320 °C / 150 ms", clock=clock)
    burn_in(aq, clock, [100_000.0] * 31)
    assert json.loads(path.read_text("utf-8"))["profile"] == "320 °C / 150 ms"
    same = AirQuality(source="bme680", state_path=path, profile="320 °C / 150 ms", clock=Tick())
    assert same.baseline == pytest.approx(100_000.0)
    with caplog.at_level(logging.WARNING, logger="enviro_sensor.airquality"):
        other = AirQuality(
            source="bme680", state_path=path, profile="250 °C / 150 ms", clock=Tick()
        )
    assert other.baseline is None
    assert other.state()["state"] == "burning_in"
    assert any("250 °C / 150 ms" in r.getMessage() for r in caplog.records)


# --- the baseline adapts slowly after burn-in -------------------------------------------------

MINUTE = 60.0
HOUR = 3600.0
WEEK_MINUTES = 7 * 24 * 60


def _burnt_in(path: Path | None, clock: Tick, gas: float = 100_000.0) -> AirQuality:
    aq = AirQuality(source="bme680", state_path=path, clock=clock, burn_in_seconds=0.0)
    burn_in(aq, clock, [gas] * MIN_BURN_IN_SAMPLES, step=MINUTE)
    assert aq.baseline == pytest.approx(gas)
    return aq


def test_time_constant_is_the_documented_one() -> None:
    """After one time constant of a new steady level, the baseline has moved 1 - 1/e of the way."""
    clock = Tick()
    aq = _burnt_in(None, clock)
    steps = round(BASELINE_TIME_CONSTANT_S / MINUTE)
    for _ in range(steps + 1):  # the first sample only starts the clock
        aq.update(200_000.0, 40.0)
        clock.t += MINUTE
    assert aq.baseline is not None
    moved = (aq.baseline - 100_000.0) / 100_000.0
    assert moved == pytest.approx(1 - math.exp(-1), abs=0.005)


def test_follows_a_slow_drift_over_a_week() -> None:
    """A synthetic week: clean-air resistance drifts up 30 %; the baseline follows it closely."""
    clock = Tick()
    aq = _burnt_in(None, clock)
    start = aq.baseline
    for minute in range(WEEK_MINUTES):
        aq.update(100_000.0 * (1 + 0.30 * minute / WEEK_MINUTES), 40.0)
        clock.t += MINUTE
    assert aq.baseline is not None and start is not None
    # A linear drift is followed with a lag of about τ: 30 %/week × 1 day ≈ 4.3 %.
    assert 125_000 <= aq.baseline <= 130_000
    assert aq.baseline > start * 1.2  # it did not keep the burn-in offset


def test_ignores_a_one_hour_spike() -> None:
    """An hour of cooking (gas resistance halved) a day into the week hardly moves the baseline."""
    clock = Tick()
    aq = _burnt_in(None, clock)
    scores = []
    for minute in range(2 * 24 * 60):
        in_spike = 24 * 60 <= minute < 25 * 60
        scores.append(aq.update(50_000.0 if in_spike else 100_000.0, 40.0))
        clock.t += MINUTE
        if minute == 25 * 60 - 1:
            assert aq.baseline is not None
            assert aq.baseline >= 100_000 * 0.975  # moved by about 2 %, as documented
    assert aq.baseline == pytest.approx(100_000, rel=0.01)  # and recovers
    spike_scores = [s for s in scores[24 * 60 : 25 * 60] if s is not None]
    assert max(spike_scores) < 70  # the spike itself still shows as bad air


def test_adapted_baseline_is_persisted_and_reset_still_works(tmp_path: Path) -> None:
    """The adapted baseline is saved (at most every 10 min) and reset burns in again."""
    path = tmp_path / "aq.json"
    clock = Tick()
    aq = _burnt_in(path, clock)
    for _ in range(24 * 60):
        aq.update(150_000.0, 40.0)
        clock.t += MINUTE
    saved = json.loads(path.read_text())["gasBaseline"]
    assert aq.baseline is not None
    assert 120_000 < saved <= aq.baseline
    assert aq.baseline - saved < 2_000  # no more than ~10 minutes behind
    restarted = AirQuality(source="bme680", state_path=path, clock=Tick())
    assert restarted.baseline == pytest.approx(saved)
    restarted.reset()
    assert restarted.baseline is None and not path.exists()
    assert restarted.state()["state"] == "burning_in"
    assert restarted.update(100_000.0, 40.0) is None  # burning in again
