"""Choosing the sensor (auto | bme680 | simulated) and validating SensorSettings."""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime

import pytest
from enviro_sensor.errors import ConfigError, SensorError, SensorNotFoundError
from enviro_sensor.sensors import Bme680Sensor, SensorSettings, SimulatedSensor, open_sensor
from enviro_sensor.sensors.settings import SOURCES, parse_oversampling
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.edge.fake_bme680 import DEFAULT_TEMPERATURE, FakeBme680Bus

WHEN = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
FACTORY_LOGGER = "enviro_sensor.sensors.factory"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_auto_uses_the_chip_when_one_answers(caplog: pytest.LogCaptureFixture) -> None:
    """auto + a BME680 on the bus: the real sensor, and no fallback warning."""
    caplog.set_level(logging.INFO)
    sensor = open_sensor(
        SensorSettings(kind="auto"), device_id="pi-1", i2c_device=FakeBme680Bus(addresses=(0x77,))
    )
    assert isinstance(sensor, Bme680Sensor)
    assert sensor.source == "bme680"
    assert sensor.read().temperature == pytest.approx(DEFAULT_TEMPERATURE, abs=0.005)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_auto_falls_back_at_start_up_with_a_loud_warning(caplog: pytest.LogCaptureFixture) -> None:
    """auto + no chip: simulated readings, and one WARNING saying so and why."""
    caplog.set_level(logging.INFO)
    sensor = open_sensor(
        SensorSettings(kind="auto", simulated_seed=5),
        device_id="pi-1",
        i2c_device=FakeBme680Bus(addresses=()),
        now=lambda: WHEN,
    )
    assert isinstance(sensor, SimulatedSensor)
    assert sensor.source == "simulated"
    assert sensor.seed == 5
    assert sensor.read().source == "simulated"
    warnings = [
        r for r in caplog.records if r.name == FACTORY_LOGGER and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "SIMULATED" in text
    assert "0x76" in text and "0x77" in text


def test_auto_without_an_i2c_bus_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    """auto with no /dev/i2c-N at all (a laptop, a container without the device): simulated."""
    caplog.set_level(logging.WARNING)
    sensor = open_sensor(SensorSettings(kind="auto", i2c_bus=251), device_id="laptop")
    assert sensor.source == "simulated"
    assert any("/dev/i2c-251" in r.getMessage() for r in caplog.records)


def test_bme680_kind_raises_when_no_chip_answers() -> None:
    """kind bme680 never falls back: SensorNotFoundError naming both addresses."""
    with pytest.raises(SensorNotFoundError, match=r"0x76 and 0x77"):
        open_sensor(
            SensorSettings(kind="bme680"), device_id="pi-1", i2c_device=FakeBme680Bus(addresses=())
        )


def test_simulated_kind_never_touches_the_bus() -> None:
    """kind simulated: a simulated sensor, seeded from the device id, bus untouched."""
    bus = FakeBme680Bus()
    sensor = open_sensor(
        SensorSettings(kind="simulated"), device_id="pi-garage", i2c_device=bus, now=lambda: WHEN
    )
    assert isinstance(sensor, SimulatedSensor)
    assert bus.operations == 0
    assert sensor.read() == SimulatedSensor(device_id="pi-garage", now=lambda: WHEN).read()


def test_auto_does_not_fall_back_when_a_chip_answers_but_fails() -> None:
    """A chip that answers but fails set-up is an error, not a reason to simulate."""
    bus = FakeBme680Bus()
    bus.fail_next(1, after=1)
    with pytest.raises(SensorError) as info:
        open_sensor(SensorSettings(kind="auto"), device_id="pi-1", i2c_device=bus)
    assert not isinstance(info.value, SensorNotFoundError)


def test_mid_run_failure_in_auto_mode_never_yields_simulated_readings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """auto found a chip; it fails mid-run: reads raise, health shows it, nothing simulated."""
    caplog.set_level(logging.INFO)
    bus = FakeBme680Bus()
    clock = FakeClock()
    sensor = open_sensor(
        SensorSettings(kind="auto"),
        device_id="pi-1",
        i2c_device=bus,
        monotonic=clock,
        sleep=lambda _s: None,
        rng=random.Random(3),
    )
    assert sensor.read().source == "bme680"
    bus.unplugged = True
    outcomes: list[str] = []
    for _ in range(30):
        clock.now += 5.0
        try:
            outcomes.append(sensor.read().source)
        except SensorError:
            outcomes.append("error")
    assert set(outcomes) == {"error"}
    assert sensor.source == "bme680"
    assert sensor.health.state == "failed"
    assert not any("SIMULATED" in r.getMessage() for r in caplog.records)
    bus.unplugged = False
    clock.now += 120.0
    assert sensor.read().source == "bme680"
    recovered = sensor.health  # a fresh snapshot (mypy narrows repeated property reads)
    assert recovered.state == "ok"


# -- SensorSettings ------------------------------------------------------------------------------


def test_settings_defaults() -> None:
    """Defaults: real, bus 1, probe both addresses, 320 °C / 150 ms, 8x/2x/4x, filter 3."""
    s = SensorSettings()
    assert (s.kind, s.i2c_bus, s.i2c_address, s.addresses) == ("real", 1, None, (0x76, 0x77))
    assert (s.heater_temperature, s.heater_duration) == (320, 150)
    assert (s.temperature_oversampling, s.humidity_oversampling, s.pressure_oversampling) == (
        8,
        2,
        4,
    )
    assert s.filter_size == 3
    assert s.read_retries == 3
    assert s.heater_profile == "320 °C / 150 ms"
    assert s.simulated_seed is None
    assert SensorSettings(i2c_address=0x77).addresses == (0x77,)


def test_settings_are_frozen_and_keyword_only() -> None:
    """Settings cannot be changed after the fact, nor built positionally."""
    s = SensorSettings()
    with pytest.raises(AttributeError):
        s.kind = "bme680"  # type: ignore[misc]
    with pytest.raises(TypeError):
        SensorSettings("bme680")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("kind", "bme280", "sensor kind must be one of real, bme680, enviro, auto, simulated"),
        ("i2c_bus", -1, "i2c_bus must be between 0 and 255"),
        ("i2c_bus", "1", "i2c_bus must be an integer"),
        ("i2c_bus", True, "i2c_bus must be an integer"),
        ("i2c_address", 0x40, "i2c_address must be 0x76 or 0x77"),
        ("heater_temperature", 199, "heater_temperature must be between 200 and 400 °C"),
        ("heater_temperature", 401, "heater_temperature must be between 200 and 400 °C"),
        ("heater_duration", 0, "heater_duration must be between 1 and 4032 ms"),
        ("heater_duration", 4033, "heater_duration must be between 1 and 4032 ms"),
        ("heater_duration", 150.0, "heater_duration must be an integer"),
        (
            "temperature_oversampling",
            3,
            "temperature_oversampling must be one of 0, 1, 2, 4, 8, 16",
        ),
        ("humidity_oversampling", 32, "humidity_oversampling must be one of"),
        ("pressure_oversampling", -1, "pressure_oversampling must be one of"),
        ("filter_size", 5, "filter_size must be one of 0, 1, 3, 7, 15, 31, 63, 127"),
        ("read_retries", -1, "read_retries must be between 0 and 20"),
        ("read_retries", 21, "read_retries must be between 0 and 20"),
        ("simulated_seed", 1.5, "simulated_seed must be an integer"),
    ],
)
def test_invalid_settings_raise_config_error_with_the_reason(
    field: str, value: object, reason: str
) -> None:
    """Each out-of-range or wrongly typed value is refused with a clear reason."""
    with pytest.raises(ConfigError) as info:
        SensorSettings(**{field: value})  # type: ignore[arg-type]
    assert reason in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"heater_temperature": 200, "heater_duration": 1},
        {"heater_temperature": 400, "heater_duration": 4032},
        {"i2c_address": 0x76},
        {"temperature_oversampling": 0, "humidity_oversampling": 16, "filter_size": 127},
        {"read_retries": 0, "simulated_seed": -3},
    ],
)
def test_valid_edge_values_are_accepted(kwargs: dict[str, int]) -> None:
    """The bounds themselves are valid."""
    s = SensorSettings(**kwargs)  # type: ignore[arg-type]
    for key, value in kwargs.items():
        assert getattr(s, key) == value


# -- SensorSettings.from_env: ENVIRO_* variables and command-line options -------------------------


def test_from_env_reads_every_variable() -> None:
    """Each documented ENVIRO_* variable sets its field; blanks and unset ones keep defaults."""
    env = {
        "ENVIRO_SENSOR": "BME680",
        "ENVIRO_I2C_BUS": "3",
        "ENVIRO_I2C_ADDRESS": "0x77",
        "ENVIRO_HEATER_TEMPERATURE": " 250 ",
        "ENVIRO_HEATER_DURATION": "100",
        "ENVIRO_OVERSAMPLING": "16, 1, 2",
        "ENVIRO_FILTER_SIZE": "7",
        "ENVIRO_READ_RETRIES": "0",
        "ENVIRO_SIMULATED_SEED": "-4",
    }
    s = SensorSettings.from_env(env)
    assert (s.kind, s.i2c_bus, s.i2c_address) == ("bme680", 3, 0x77)
    assert (s.heater_temperature, s.heater_duration) == (250, 100)
    assert (s.temperature_oversampling, s.humidity_oversampling, s.pressure_oversampling) == (
        16,
        1,
        2,
    )
    assert (s.filter_size, s.read_retries, s.simulated_seed) == (7, 0, -4)
    assert {var for _, var, _ in SOURCES} == set(env)
    assert SensorSettings.from_env({}) == SensorSettings()
    assert SensorSettings.from_env({var: " " for var in env}) == SensorSettings()


def test_options_win_over_the_environment() -> None:
    """A command-line option replaces its variable; options not given (None) leave it."""
    env = {"ENVIRO_HEATER_TEMPERATURE": "250", "ENVIRO_FILTER_SIZE": "7"}
    s = SensorSettings.from_env(
        env, overrides={"heater_temperature": 380, "filter_size": None, "oversampling": (1, 1, 1)}
    )
    assert (s.heater_temperature, s.filter_size) == (380, 7)
    assert (s.temperature_oversampling, s.humidity_oversampling, s.pressure_oversampling) == (
        1,
        1,
        1,
    )


@pytest.mark.parametrize(
    ("env", "needles"),
    [
        ({"ENVIRO_HEATER_TEMPERATURE": "500"}, ["ENVIRO_HEATER_TEMPERATURE", "200 and 400 °C"]),
        ({"ENVIRO_HEATER_TEMPERATURE": "hot"}, ["ENVIRO_HEATER_TEMPERATURE", "'hot'"]),
        ({"ENVIRO_HEATER_DURATION": "5000"}, ["ENVIRO_HEATER_DURATION", "1 and 4032 ms"]),
        ({"ENVIRO_OVERSAMPLING": "8,2"}, ["ENVIRO_OVERSAMPLING", "T,H,P"]),
        ({"ENVIRO_OVERSAMPLING": "8,3,4"}, ["ENVIRO_OVERSAMPLING", "humidity_oversampling"]),
        ({"ENVIRO_FILTER_SIZE": "4"}, ["ENVIRO_FILTER_SIZE", "0, 1, 3, 7"]),
        ({"ENVIRO_READ_RETRIES": "99"}, ["ENVIRO_READ_RETRIES", "0 and 20"]),
        ({"ENVIRO_I2C_ADDRESS": "0x10"}, ["ENVIRO_I2C_ADDRESS", "0x76 or 0x77"]),
        ({"ENVIRO_SENSOR": "bme280"}, ["ENVIRO_SENSOR", "real, bme680, enviro, auto, simulated"]),
    ],
)
def test_from_env_names_the_bad_variable(env: dict[str, str], needles: list[str]) -> None:
    """A bad variable is a ConfigError naming it and why."""
    with pytest.raises(ConfigError) as info:
        SensorSettings.from_env(env)
    for needle in needles:
        assert needle in str(info.value)


def test_from_env_reports_every_problem_under_the_name_typed() -> None:
    """Two bad values (one variable, one option) are both reported, each by its own name."""
    with pytest.raises(ConfigError) as info:
        SensorSettings.from_env(
            {"ENVIRO_HEATER_DURATION": "0"}, overrides={"heater_temperature": 100}
        )
    message = str(info.value)
    assert "ENVIRO_HEATER_DURATION: heater_duration must be between 1 and 4032 ms" in message
    assert "--heater-temp: heater_temperature must be between 200 and 400 °C" in message


def test_from_env_refuses_an_unknown_override() -> None:
    """A misspelt override key is a ConfigError, not silently ignored."""
    with pytest.raises(ConfigError, match="heater_temp"):
        SensorSettings.from_env({}, overrides={"heater_temp": 300})


@settings(deadline=None)  # timing belongs in bench/, not in tests
@given(st.tuples(*[st.sampled_from((0, 1, 2, 4, 8, 16))] * 3))
def test_parse_oversampling_round_trips(triple: tuple[int, int, int]) -> None:
    """Any valid T,H,P text parses back to the same three factors."""
    assert parse_oversampling(",".join(str(n) for n in triple)) == triple


@pytest.mark.parametrize("text", ["", "8", "8,2", "8,2,4,1", "8,,4", "a,b,c", "8.0,2,4"])
def test_parse_oversampling_refuses_malformed_text(text: str) -> None:
    """Anything but three comma-separated whole numbers is a ValueError naming the format."""
    with pytest.raises(ValueError, match="T,H,P"):
        parse_oversampling(text)


@settings(deadline=None)  # timing belongs in bench/, not in tests
@given(
    temperature=st.integers(min_value=-1000, max_value=5000),
    duration=st.integers(min_value=-10, max_value=10_000),
)
def test_heater_variables_are_taken_or_refused_by_name(temperature: int, duration: int) -> None:
    """Any whole numbers: in range they are the settings; out of range each is named."""
    env = {"ENVIRO_HEATER_TEMPERATURE": str(temperature), "ENVIRO_HEATER_DURATION": str(duration)}
    temperature_ok = 200 <= temperature <= 400
    duration_ok = 1 <= duration <= 4032
    if temperature_ok and duration_ok:
        s = SensorSettings.from_env(env)
        assert (s.heater_temperature, s.heater_duration) == (temperature, duration)
        return
    with pytest.raises(ConfigError) as info:
        SensorSettings.from_env(env)
    message = str(info.value)
    assert ("ENVIRO_HEATER_TEMPERATURE" in message) == (not temperature_ok)
    assert ("ENVIRO_HEATER_DURATION" in message) == (not duration_ok)
