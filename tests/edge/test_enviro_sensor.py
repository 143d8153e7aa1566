"""The Enviro board driver: the real pimoroni-bme280 and ltr559 libraries on a fake I2C bus."""

from __future__ import annotations

import json
import random
from pathlib import Path

import jsonschema
import pytest
from enviro_sensor.airquality import AirQuality
from enviro_sensor.config import ModuleConfig
from enviro_sensor.errors import ConfigError, SensorError, SensorNotFoundError
from enviro_sensor.message import pack
from enviro_sensor.pipeline import Pipeline
from enviro_sensor.sensors import EnviroSensor, SensorSettings, open_sensor
from enviro_sensor.sensors.enviro import FLAG_LIGHT_UNAVAILABLE
from enviro_sensor.sensors.recovery import BACKOFF_CAP_S

from tests.edge.fake_bme680 import FakeBme680Bus
from tests.edge.fake_enviro import (
    DEFAULT_HUMIDITY,
    DEFAULT_LUX,
    DEFAULT_PRESSURE,
    DEFAULT_TEMPERATURE,
    FakeEnviroBus,
)
from tests.edge.pipeline_doubles import FakeClock

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "contract/telemetry-v1.schema.json").read_text()
)


class Monotonic:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sensor(bus: FakeEnviroBus, clock: Monotonic | None = None, **kw: object) -> EnviroSensor:
    return EnviroSensor(
        settings=SensorSettings(kind="enviro", **kw),  # type: ignore[arg-type]
        i2c_device=bus,
        monotonic=clock or Monotonic(),
        rng=random.Random(1),
    )


def test_reads_the_board_through_the_real_libraries() -> None:
    """T/H/P from the BME280's own compensation, lux from the LTR-559's, no gas, forced mode."""
    bus = FakeEnviroBus()
    sensor = _sensor(bus)
    assert (sensor.source, sensor.address, sensor.has_light) == ("bme280", 0x76, True)
    before = bus.measurements
    reading = sensor.read()
    assert reading.temperature == pytest.approx(DEFAULT_TEMPERATURE, abs=1e-4)
    assert reading.pressure == pytest.approx(DEFAULT_PRESSURE, abs=1e-4)
    assert reading.humidity == pytest.approx(DEFAULT_HUMIDITY, abs=1e-4)
    assert reading.light == pytest.approx(DEFAULT_LUX)
    assert (reading.gas_resistance, reading.heat_stable, reading.flags) == (None, True, ())
    assert reading.source == "bme280"
    sensor.read()
    assert bus.measurements == before + 2  # one forced measurement per read, none in between
    assert sensor.health.state == "ok"


def test_new_raw_values_show_in_the_next_read() -> None:
    """Each read is a fresh measurement: a changed ADC value shows at once."""
    bus = FakeEnviroBus()
    sensor = _sensor(bus)
    first = sensor.read()
    bus.temperature_adc += 2000
    bus.ch0 = 2000
    second = sensor.read()
    assert second.temperature > first.temperature + 0.5
    assert second.light is not None and first.light is not None and second.light > first.light


def test_probes_0x77_after_0x76_and_honours_a_configured_address() -> None:
    """Without --address both addresses are tried in order; with it, only that one."""
    bus = FakeEnviroBus(bme280_addresses=(0x77,))
    assert _sensor(bus).address == 0x77
    assert bus.addresses_seen[:2] == [0x76, 0x77]
    with pytest.raises(SensorNotFoundError, match="0x76"):
        _sensor(FakeEnviroBus(bme280_addresses=(0x77,)), i2c_address=0x76)


def test_no_board_names_the_board_the_addresses_and_the_fixes() -> None:
    """Nothing answers: the error says Enviro board, 0x76 and 0x77, and what to check."""
    with pytest.raises(SensorNotFoundError) as info:
        _sensor(FakeEnviroBus(bme280_addresses=(), light=False))
    message = str(info.value)
    for needle in ("Enviro board", "BME280", "0x76 and 0x77", "raspi-config", "i2cdetect -y 1"):
        assert needle in message, needle


def test_a_bme680_is_not_taken_for_a_bme280() -> None:
    """A chip with the BME680's id (0x61) at 0x76 is not a BME280: not found, not misread."""
    with pytest.raises(SensorNotFoundError, match="CHIP_ID returned 61"):
        _sensor(FakeEnviroBus(bme280_addresses=(), other_chips={0x76: 0x61}), i2c_address=0x76)


def test_no_bus_is_not_found() -> None:
    """No /dev/i2c-N: not found, saying which bus and what was not tried."""
    settings = SensorSettings(kind="enviro", i2c_bus=250)
    if Path("/dev/i2c-250").exists():
        pytest.skip("this machine has that bus")
    with pytest.raises(SensorNotFoundError, match=r"/dev/i2c-250 does not exist.*0x23"):
        EnviroSensor(settings=settings)


def test_missing_light_sensor_is_an_error_for_the_board_and_fine_for_a_breakout() -> None:
    """--sensor enviro needs the LTR-559; a lone BME280 breakout (kind real) reads without light."""
    with pytest.raises(SensorNotFoundError, match="no LTR-559 light sensor at 0x23"):
        _sensor(FakeEnviroBus(light=False))
    breakout = EnviroSensor(
        settings=SensorSettings(kind="real"),
        i2c_device=FakeEnviroBus(light=False),
        require_light=False,
    )
    reading = breakout.read()
    assert breakout.has_light is False
    assert (reading.light, reading.flags) == (None, ())


def test_oversampling_zero_is_a_config_error() -> None:
    """The BME280 library cannot switch a channel off: a clear ConfigError, not a KeyError."""
    with pytest.raises(ConfigError, match="not 0"):
        _sensor(FakeEnviroBus(), humidity_oversampling=0)


def test_light_before_the_first_sample_is_null_and_flagged_not_zero() -> None:
    """Until the LTR-559 has measured, light is absent with a flag, never a made-up 0 lx."""
    bus = FakeEnviroBus()
    bus.light_data_after = 1
    sensor = _sensor(bus)
    first = sensor.read()
    assert (first.light, first.flags) == (None, (FLAG_LIGHT_UNAVAILABLE,))
    second = sensor.read()
    assert second.light == pytest.approx(DEFAULT_LUX)


def test_bme280_io_error_mid_run_fails_the_read_then_recovers() -> None:
    """An I/O error: that read raises, health degrades, the chip is re-initialised after a delay."""
    bus = FakeEnviroBus()
    clock = Monotonic()
    sensor = _sensor(bus, clock)
    sensor.read()
    bus.unplugged = True
    with pytest.raises(SensorError, match="BME280 at 0x76 failed"):
        sensor.read()
    assert sensor.health.state == "degraded"
    bus.unplugged = False
    with pytest.raises(SensorError, match="unavailable"):  # inside the back-off: no bus traffic
        sensor.read()
    clock.now += BACKOFF_CAP_S
    reading = sensor.read()
    assert reading.temperature == pytest.approx(DEFAULT_TEMPERATURE, abs=1e-4)
    health = sensor.health
    assert (health.state, health.reinitialisations) == ("ok", 1)
    assert health.last_error is not None and "BME280" in health.last_error


def test_unplugged_board_goes_from_degraded_to_failed() -> None:
    """Many failed reads in a row: health says failed; reads keep raising, never made up."""
    bus = FakeEnviroBus()
    clock = Monotonic()
    sensor = _sensor(bus, clock)
    bus.unplugged = True
    states = []
    for _ in range(8):
        clock.now += BACKOFF_CAP_S
        with pytest.raises(SensorError):
            sensor.read()
        states.append(sensor.health.state)
    assert states[0] == "degraded" and states[-1] == "failed"


def test_light_sensor_failing_alone_keeps_the_reading() -> None:
    """LTR-559 gone mid-run: T/H/P still read, light null + flagged, health degraded; recovers."""
    bus = FakeEnviroBus()
    clock = Monotonic()
    sensor = _sensor(bus, clock)
    sensor.read()
    bus.light_unplugged = True
    reading = sensor.read()
    assert reading.temperature == pytest.approx(DEFAULT_TEMPERATURE, abs=1e-4)
    assert (reading.light, reading.flags) == (None, (FLAG_LIGHT_UNAVAILABLE,))
    health = sensor.health
    assert health.state == "degraded"
    assert health.last_error is not None and "LTR-559" in health.last_error
    bus.light_unplugged = False
    clock.now += BACKOFF_CAP_S
    assert sensor.read().light == pytest.approx(DEFAULT_LUX)
    assert sensor.health.state == "ok"


# -- choosing the sensor ------------------------------------------------------------------------


def test_real_takes_a_bme680_first_then_the_enviro_board() -> None:
    """The default kind finds a BME680 if there is one, else the Enviro board's BME280."""
    assert open_sensor(SensorSettings(), device_id="pi", i2c_device=FakeBme680Bus()).source == (
        "bme680"
    )
    board = open_sensor(SensorSettings(), device_id="pi", i2c_device=FakeEnviroBus())
    assert board.source == "bme280"
    assert board.health.kind == "bme280"


def test_real_with_nothing_is_an_error_naming_both_boards() -> None:
    """A loose cable at boot with the default kind: an error, never simulated data."""
    with pytest.raises(SensorNotFoundError) as info:
        open_sensor(SensorSettings(), device_id="pi", i2c_device=FakeEnviroBus(bme280_addresses=()))
    message = str(info.value)
    assert "BME680" in message and "Enviro board" in message


def test_enviro_kind_does_not_settle_for_a_bme680() -> None:
    """--sensor enviro on a bus with only a BME680: not found."""
    with pytest.raises(SensorNotFoundError, match="Enviro board"):
        open_sensor(SensorSettings(kind="enviro"), device_id="pi", i2c_device=FakeBme680Bus())


def test_auto_with_nothing_is_simulated_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    """auto falls back to simulated data, loudly, and its health is 'simulated', never 'ok'."""
    sensor = open_sensor(
        SensorSettings(kind="auto"),
        device_id="pi",
        i2c_device=FakeEnviroBus(bme280_addresses=(), light=False),
    )
    assert sensor.source == "simulated"
    assert sensor.health.state == "simulated"
    assert "SIMULATED" in caplog.text


def test_real_board_failing_mid_run_is_never_replaced() -> None:
    """Opened as 'auto', the Enviro board fails: reads raise; no simulated reading appears."""
    bus = FakeEnviroBus()
    sensor = open_sensor(SensorSettings(kind="auto"), device_id="pi", i2c_device=bus)
    assert sensor.source == "bme280"
    bus.unplugged = True
    for _ in range(3):
        with pytest.raises(SensorError):
            sensor.read()
    assert sensor.health.state == "degraded"


# -- the message ------------------------------------------------------------------------------


def test_enviro_messages_are_schema_1_with_light_and_no_gas(tmp_path: Path) -> None:
    """Through the pipeline: source bme280, light in lux, gas and iaq null, no gas flag."""
    bus = FakeEnviroBus()
    sensor = _sensor(bus)
    pipeline = Pipeline(
        device_id="pi-enviro",
        config=ModuleConfig(),
        air_quality=AirQuality(source="bme280", state_path=tmp_path / "aq.json", burn_in_seconds=0),
        clock=FakeClock(),
    )
    readings = [pipeline.process(sensor.read()) for _ in range(3)]
    for reading in readings:
        payload = reading.payload
        jsonschema.validate(payload, SCHEMA)
        assert payload["source"] == "bme280"
        assert payload["light"] == round(DEFAULT_LUX, 1)
        assert payload["gasResistance"] is None and payload["iaq"] is None
        assert payload["flags"] == []
        assert "pressureSeaLevel" not in payload  # no altitude configured
    jsonschema.validate(json.loads(pack(readings, as_array=True).body), SCHEMA)


def test_air_quality_of_a_board_without_gas_says_unavailable() -> None:
    """No gas sensor: the reported air-quality state says so, not "burning_in" forever."""
    aq = AirQuality(source="bme280", state_path=None, gas_sensor=False)
    assert aq.update(None, 45.0) is None
    assert aq.state() == {"state": "unavailable", "reason": "no gas sensor"}
