"""Bme680Sensor: the real bme680 library against a fake I2C register bus."""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading

import bme680
import pytest
from enviro_sensor.errors import SensorError, SensorNotFoundError
from enviro_sensor.sensors import Bme680Sensor, SensorSettings
from enviro_sensor.sensors.bme680 import NOT_READY_SLEEP_S, measurement_seconds
from enviro_sensor.sensors.recovery import BACKOFF_BASE_S, FAILED_AFTER

from tests.edge.fake_bme680 import (
    DEFAULT_GAS_RESISTANCE,
    DEFAULT_HUMIDITY,
    DEFAULT_PRESSURE,
    DEFAULT_TEMPERATURE,
    FakeBme680Bus,
)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FixedJitter(random.Random):
    """An rng whose uniform(a, b) always gives the same fraction of the way from a to b."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


def make_sensor(
    bus: FakeBme680Bus,
    *,
    clock: FakeClock | None = None,
    sleeps: list[float] | None = None,
    rng: random.Random | None = None,
    **settings: object,
) -> Bme680Sensor:
    recorded = sleeps if sleeps is not None else []
    return Bme680Sensor(
        settings=SensorSettings(**settings),  # type: ignore[arg-type]
        i2c_device=bus,
        sleep=recorded.append,
        monotonic=clock or FakeClock(),
        rng=rng or random.Random(1),
    )


def test_finds_chip_at_0x77_after_0x76_fails() -> None:
    """With no address configured, 0x76 is probed first and the chip is found at 0x77."""
    bus = FakeBme680Bus(addresses=(0x77,))
    sensor = make_sensor(bus)
    assert bus.addresses_seen == [0x76, 0x77]
    assert sensor.address == 0x77
    assert sensor.health.address == 0x77
    assert sensor.health.state == "ok"


def test_configured_address_is_the_only_one_probed() -> None:
    """A configured address is used as is: the other one is never touched."""
    bus = FakeBme680Bus(addresses=(0x76, 0x77))
    sensor = make_sensor(bus, i2c_address=0x77)
    assert bus.addresses_seen == [0x77]
    assert sensor.address == 0x77


def test_reading_comes_from_the_library_compensation() -> None:
    """Raw registers go through bme680's compensation into a RawReading."""
    sensor = make_sensor(FakeBme680Bus())
    reading = sensor.read()
    assert reading.source == "bme680" == sensor.source
    assert reading.temperature == pytest.approx(DEFAULT_TEMPERATURE, abs=0.005)
    assert reading.pressure == pytest.approx(DEFAULT_PRESSURE, abs=0.005)
    assert reading.humidity == pytest.approx(DEFAULT_HUMIDITY, abs=0.0005)
    assert reading.gas_resistance == pytest.approx(DEFAULT_GAS_RESISTANCE, rel=1e-4)
    assert reading.heat_stable is True


def test_changed_raw_values_change_the_reading() -> None:
    """Each read triggers a new measurement: a warmer ADC value gives a warmer reading."""
    bus = FakeBme680Bus()
    sensor = make_sensor(bus)
    first = sensor.read()
    before = bus.measurements
    bus.temperature_adc += 20_000
    second = sensor.read()
    assert bus.measurements == before + 1
    assert second.temperature > first.temperature + 1.0


def test_default_settings_are_written_to_the_chip() -> None:
    """Oversampling 8x/2x/4x, filter 3, heater profile 0 at 320 °C / 150 ms, gas enabled."""
    bus = FakeBme680Bus()
    make_sensor(bus)
    regs = bus.registers(0x76)
    assert (regs[bme680.CONF_T_P_MODE_ADDR] & bme680.OST_MSK) >> bme680.OST_POS == bme680.OS_8X
    assert (regs[bme680.CONF_T_P_MODE_ADDR] & bme680.OSP_MSK) >> bme680.OSP_POS == bme680.OS_4X
    assert (regs[bme680.CONF_OS_H_ADDR] & bme680.OSH_MSK) >> bme680.OSH_POS == bme680.OS_2X
    assert (regs[bme680.CONF_ODR_FILT_ADDR] & bme680.FILTER_MSK) >> bme680.FILTER_POS == (
        bme680.FILTER_SIZE_3
    )
    nbconv = regs[bme680.CONF_ODR_RUN_GAS_NBC_ADDR]
    assert nbconv & bme680.NBCONV_MSK == 0
    run_gas = (nbconv & bme680.RUN_GAS_MSK) >> bme680.RUN_GAS_POS
    assert run_gas == bme680.ENABLE_GAS_MEAS_LOW
    # 150 ms = 37.5 × 4 ms: multiplier code 1 (×4) in bits 7:6, 37 in bits 5:0 (datasheet 5.3.3.3)
    assert regs[bme680.GAS_WAIT0_ADDR] == (1 << 6) | 37
    assert regs[bme680.RES_HEAT0_ADDR] != 0


def test_custom_settings_are_written_to_the_chip() -> None:
    """Other oversampling, filter and heater values reach their registers."""
    default_bus, custom_bus = FakeBme680Bus(), FakeBme680Bus()
    make_sensor(default_bus)
    make_sensor(
        custom_bus,
        temperature_oversampling=16,
        humidity_oversampling=0,
        pressure_oversampling=1,
        filter_size=127,
        heater_temperature=400,
        heater_duration=4032,
    )
    regs = custom_bus.registers(0x76)
    assert (regs[bme680.CONF_T_P_MODE_ADDR] & bme680.OST_MSK) >> bme680.OST_POS == bme680.OS_16X
    assert (regs[bme680.CONF_T_P_MODE_ADDR] & bme680.OSP_MSK) >> bme680.OSP_POS == bme680.OS_1X
    assert (regs[bme680.CONF_OS_H_ADDR] & bme680.OSH_MSK) >> bme680.OSH_POS == bme680.OS_NONE
    assert (regs[bme680.CONF_ODR_FILT_ADDR] & bme680.FILTER_MSK) >> bme680.FILTER_POS == (
        bme680.FILTER_SIZE_127
    )
    assert regs[bme680.GAS_WAIT0_ADDR] == 0xFF  # 4032 ms: the longest wait the chip can do
    hotter = regs[bme680.RES_HEAT0_ADDR]
    assert hotter > default_bus.registers(0x76)[bme680.RES_HEAT0_ADDR]


def test_not_ready_then_ready_retries_within_the_bound() -> None:
    """get_sensor_data() False twice, then data: one reading, two short sleeps, health ok."""
    bus = FakeBme680Bus()
    sleeps: list[float] = []
    sensor = make_sensor(bus, sleeps=sleeps, read_retries=3)
    bus.not_ready_reads = 2
    before = bus.measurements
    reading = sensor.read()
    assert reading.temperature == pytest.approx(DEFAULT_TEMPERATURE, abs=0.005)
    assert bus.measurements == before + 3
    # The library polls 100 ms; a 183 ms measurement needs about 100 ms more (with 10 % margin).
    assert sleeps == [pytest.approx(0.1013), pytest.approx(0.1013)]
    assert sensor.health.state == "ok"
    assert sensor.health.consecutive_failures == 0


def test_never_ready_raises_sensor_error_then_recovers() -> None:
    """No new data within read_retries + 1 attempts: SensorError, degraded; data again: ok."""
    bus = FakeBme680Bus()
    sensor = make_sensor(bus, read_retries=2)
    bus.not_ready_reads = 1_000
    before = bus.measurements
    with pytest.raises(SensorError, match="no new data after 3 attempts"):
        sensor.read()
    assert bus.measurements == before + 3
    health = sensor.health
    assert health.state == "degraded"
    assert health.consecutive_failures == 1
    assert health.last_error is not None and "no new data" in health.last_error
    bus.not_ready_reads = 0
    assert sensor.read().source == "bme680"
    assert sensor.health.state == "ok"
    assert sensor.health.reinitialisations == 0  # not an I/O error: no re-initialisation


def test_not_ready_at_start_up_still_configures_the_heater() -> None:
    """The library's own first read finding no data does not break heater set-up."""
    bus = FakeBme680Bus()
    bus.not_ready_reads = 1  # the read bme680.BME680() does in its constructor
    sensor = make_sensor(bus)
    assert bus.registers(0x76)[bme680.RES_HEAT0_ADDR] != 0
    assert sensor.read().heat_stable is True


def test_heat_not_stable_gives_no_gas_resistance() -> None:
    """heat_stab clear: gas_resistance is None and heat_stable False; other values still read."""
    bus = FakeBme680Bus()
    sensor = make_sensor(bus)
    bus.heat_stable = False
    reading = sensor.read()
    assert reading.gas_resistance is None
    assert reading.heat_stable is False
    assert reading.temperature == pytest.approx(DEFAULT_TEMPERATURE, abs=0.005)
    bus.heat_stable = True
    assert sensor.read().gas_resistance == pytest.approx(DEFAULT_GAS_RESISTANCE, rel=1e-4)


def test_io_error_mid_run_then_recovery() -> None:
    """An I/O error fails one read; reads in the back-off fail fast; then re-init and ok."""
    bus = FakeBme680Bus(addresses=(0x77,))
    clock = FakeClock()
    sensor = make_sensor(bus, clock=clock, rng=FixedJitter(1.0))
    assert sensor.read().source == "bme680"
    assert sensor.health.state == "ok"

    bus.fail_next(1)
    with pytest.raises(SensorError, match="I/O error") as info:
        sensor.read()
    assert isinstance(info.value.__cause__, OSError)
    health = sensor.health
    assert (health.state, health.consecutive_failures, health.reinitialisations) == (
        "degraded",
        1,
        0,
    )
    assert health.last_error is not None and "Input/output error" in health.last_error

    # Inside the back-off: a quick SensorError and no bus traffic at all.
    ops = bus.operations
    clock.now += BACKOFF_BASE_S * 0.9
    with pytest.raises(SensorError, match="next re-initialisation in"):
        sensor.read()
    assert bus.operations == ops
    in_backoff = sensor.health  # a fresh snapshot (mypy narrows repeated property reads)
    assert in_backoff.state == "degraded"

    clock.now += BACKOFF_BASE_S * 0.2
    reading = sensor.read()
    assert reading.temperature == pytest.approx(DEFAULT_TEMPERATURE, abs=0.005)
    health = sensor.health
    assert (health.state, health.consecutive_failures, health.reinitialisations) == ("ok", 0, 1)
    assert health.address == 0x77
    assert health.last_error is not None  # kept, so the twin shows what happened


def test_reinitialisation_delays_grow_with_jitter_and_health_fails() -> None:
    """Unplugged: delays 1, 2, 4, 8, 16 s times a 0.5–1.0 jitter; health ends "failed"."""

    def delays(fraction: float) -> list[float]:
        bus = FakeBme680Bus()
        clock = FakeClock()
        sensor = make_sensor(bus, clock=clock, rng=FixedJitter(fraction))
        sensor.read()
        bus.unplugged = True
        found: list[float] = []
        with pytest.raises(SensorError):
            sensor.read()
        for _ in range(5):
            # Step forward in 10 ms ticks until the sensor touches the bus again.
            start, ops = clock.now, bus.operations
            while bus.operations == ops:
                clock.now += 0.01
                with pytest.raises(SensorError):
                    sensor.read()
                assert clock.now - start < 100, "no re-initialisation attempt within 100 s"
            found.append(clock.now - start)
        assert sensor.health.state == "failed"
        assert sensor.health.consecutive_failures > FAILED_AFTER
        bus.unplugged = False
        clock.now += 100
        sensor.read()
        # A fresh snapshot: mypy would narrow `sensor.health.state` to the "failed" above.
        recovered = sensor.health
        assert recovered.state == "ok"
        assert sensor.health.reinitialisations == 1
        return found

    full = delays(1.0)
    half = delays(0.0)  # uniform(0.5, 1.0) at its low end: half the delay
    for got, want in zip(full, [1.0, 2.0, 4.0, 8.0, 16.0], strict=True):
        assert got == pytest.approx(want, abs=0.02)
    for got, want in zip(half, [0.5, 1.0, 2.0, 4.0, 8.0], strict=True):
        assert got == pytest.approx(want, abs=0.02)


def test_jitter_comes_from_the_rng() -> None:
    """Two sensors with different random generators wait different times after the same error."""

    def first_delay(seed: int) -> float:
        bus = FakeBme680Bus()
        clock = FakeClock()
        sensor = make_sensor(bus, clock=clock, rng=random.Random(seed))
        bus.fail_next(1)
        with pytest.raises(SensorError):
            sensor.read()
        start, ops = clock.now, bus.operations
        while bus.operations == ops:
            clock.now += 0.001
            with contextlib.suppress(SensorError):
                sensor.read()
        return clock.now - start

    values = {round(first_delay(seed), 3) for seed in range(4)}
    assert len(values) > 1
    assert all(0.5 * BACKOFF_BASE_S - 0.002 <= v <= BACKOFF_BASE_S + 0.002 for v in values)


def test_no_chip_at_either_address_names_both_and_the_fixes() -> None:
    """Nothing answers: SensorNotFoundError (a FileNotFoundError) with addresses and fixes."""
    bus = FakeBme680Bus(addresses=())
    with pytest.raises(SensorNotFoundError) as info:
        make_sensor(bus)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert bus.addresses_seen == [0x76, 0x77]
    for needle in ("I2C bus 1", "0x76", "0x77", "raspi-config", "SDO", "SDA", "i2cdetect -y 1"):
        assert needle in message


def test_another_chip_at_0x76_is_named_in_the_message() -> None:
    """A BMP280 (chip id 0x58) at 0x76 and nothing at 0x77: the message says what answered."""
    bus = FakeBme680Bus(addresses=(), other_chips={0x76: 0x58})
    with pytest.raises(SensorNotFoundError, match="Invalid CHIP ID: 0x58"):
        make_sensor(bus)


def test_missing_i2c_device_file_is_not_found() -> None:
    """No /dev/i2c-N: SensorNotFoundError naming the device file, the addresses and the fix."""
    bus_number = 250
    if os.path.exists(f"/dev/i2c-{bus_number}"):
        pytest.skip("this machine has that I2C bus")
    with pytest.raises(SensorNotFoundError) as info:
        Bme680Sensor(settings=SensorSettings(i2c_bus=bus_number))
    message = str(info.value)
    for needle in (f"/dev/i2c-{bus_number}", "0x76", "0x77", "raspi-config", "createOptions"):
        assert needle in message


def test_chip_that_answers_but_fails_set_up_is_an_error_not_not_found() -> None:
    """The chip id matched, then an I/O error: SensorError, but not SensorNotFoundError."""
    bus = FakeBme680Bus()
    bus.fail_next(1, after=1)  # the chip id read works, the next operation fails
    with pytest.raises(SensorError) as info:
        make_sensor(bus)
    assert not isinstance(info.value, SensorNotFoundError)
    assert "0x76" in str(info.value)


def test_health_reported_form_is_json_ready() -> None:
    """to_reported() is plain JSON with camelCase keys and the address in hex."""
    bus = FakeBme680Bus(addresses=(0x77,))
    clock = FakeClock()
    sensor = make_sensor(bus, clock=clock)
    bus.fail_next(1)
    with pytest.raises(SensorError):
        sensor.read()
    reported = json.loads(json.dumps(sensor.health.to_reported()))
    assert reported["state"] == "degraded"
    assert reported["kind"] == "bme680"
    assert reported["address"] == "0x77"
    assert reported["consecutiveFailures"] == 1
    assert reported["reinitialisations"] == 0
    assert "I/O error" in reported["lastError"]


def test_garbled_data_fails_the_read_and_recovers() -> None:
    """A short block from the bus (the library cannot compute): SensorError, re-init, ok."""
    bus = FakeBme680Bus()
    clock = FakeClock()
    sensor = make_sensor(bus, clock=clock)
    bus.short_blocks = True
    with pytest.raises(SensorError, match="unusable data"):
        sensor.read()
    assert sensor.health.state == "degraded"
    bus.short_blocks = False
    clock.now += 60.0
    assert sensor.read().temperature == pytest.approx(DEFAULT_TEMPERATURE, abs=0.005)
    assert sensor.health.reinitialisations == 1


def test_reads_from_two_threads_never_interleave_on_the_bus() -> None:
    """The app loop and a readNow direct method may read at once: bus access is serialised."""
    bus = FakeBme680Bus()
    sensor = make_sensor(bus)
    bus.operation_delay = 0.0005
    results: list[float] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(10):
                results.append(sensor.read().temperature)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert len(results) == 20
    assert all(t == pytest.approx(DEFAULT_TEMPERATURE, abs=0.005) for t in results)
    assert bus.max_concurrent == 1


def test_measurement_time_follows_bosch_formula() -> None:
    """183 ms for the defaults (docs/contract.md: ~185 ms); longer heaters and oversampling add."""
    assert measurement_seconds(SensorSettings()) == pytest.approx(0.183)
    assert measurement_seconds(SensorSettings(heater_duration=1000)) == pytest.approx(1.033)
    assert measurement_seconds(
        SensorSettings(temperature_oversampling=1, pressure_oversampling=1, humidity_oversampling=1)
    ) == pytest.approx(0.161)


def test_short_measurements_sleep_the_minimum_between_retries() -> None:
    """A measurement shorter than the library's own polling gets only the short sleep."""
    bus = FakeBme680Bus()
    sleeps: list[float] = []
    sensor = make_sensor(bus, sleeps=sleeps, heater_duration=20)
    bus.not_ready_reads = 1
    sensor.read()
    assert sleeps == [NOT_READY_SLEEP_S]
