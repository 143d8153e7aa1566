"""One pass (read → calibrate → validate → air quality → envelope) and the app loop."""

from __future__ import annotations

import json
import math
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from enviro_sensor.airquality import AirQuality
from enviro_sensor.calibration import CpuTemperature
from enviro_sensor.config import ConfigStore, ModuleConfig
from enviro_sensor.errors import ConfigError, SensorError
from enviro_sensor.pipeline import App, Pipeline, SystemClock
from enviro_sensor.reading import RawReading
from enviro_sensor.sender import RetryPolicy
from enviro_sensor.sensors import SimulatedSensor
from hypothesis import given, settings
from hypothesis import strategies as st

from .pipeline_doubles import (
    FakeClock,
    RecordingLed,
    RecordingPublisher,
    ScriptedSensor,
    assert_valid,
    raw,
    read_error,
    wait_for,
)

FAST_RETRY = RetryPolicy(initial_s=0.001, max_s=0.01)


def make_pipeline(
    clock: FakeClock,
    config: ModuleConfig | None = None,
    *,
    burn_in: float = 300.0,
    cpu: CpuTemperature | None = None,
    state: Path | None = None,
) -> Pipeline:
    return Pipeline(
        device_id="pi-test",
        config=config or ModuleConfig(),
        air_quality=AirQuality(
            source="bme680", state_path=state, clock=clock.monotonic, burn_in_seconds=burn_in
        ),
        clock=clock,
        cpu_temperature=cpu,
        boot="0badcafe",
    )


def make_app(
    script: list[RawReading | Exception],
    config: ModuleConfig | None = None,
    **kwargs: object,
) -> tuple[App, RecordingPublisher, RecordingLed, FakeClock, ScriptedSensor]:
    clock = FakeClock()
    sensor = ScriptedSensor(script)
    publisher = RecordingPublisher()
    led = RecordingLed()
    app = App(
        sensor=sensor,
        publisher=publisher,
        pipeline=make_pipeline(clock, config),
        clock=clock,
        led=led,
        retry=FAST_RETRY,
        **kwargs,  # type: ignore[arg-type]
    )
    return app, publisher, led, clock, sensor


def test_simulated_sensor_messages_validate() -> None:
    """The real simulated sensor through the pipeline: valid schema-1, seq 1..N, simulated."""
    clock = FakeClock()
    sensor = SimulatedSensor(seed=7, device_id="pi-test", now=clock.now)
    publisher = RecordingPublisher()
    app = App(
        sensor=sensor,
        publisher=publisher,
        pipeline=make_pipeline(clock, burn_in=60.0),
        clock=clock,
    )
    summary = app.run(count=40, interval=10.0)
    assert summary.readings == 40 and summary.failures == 0
    assert app.drain(timeout_s=10) == 0
    readings = publisher.readings()
    assert [r["seq"] for r in readings] == list(range(1, 41))
    for body, message_id, props in publisher.sent:
        decoded = json.loads(body)
        assert_valid(decoded)
        first = decoded[0] if isinstance(decoded, list) else decoded
        assert props["source"] == "simulated"
        assert message_id == f"0badcafe:{first['seq']}"
    for r in readings:
        assert r["source"] == "simulated"
        assert r["boot"] == "0badcafe"
    assert readings[0]["gasResistance"] is None and "gas_unstable" in readings[0]["flags"]
    assert readings[-1]["iaq"] is not None  # burn-in over (60 s in this test)
    assert readings[1]["ts"] == "2026-11-25T03:20:10.000Z"


def test_pass_applies_calibration_and_version() -> None:
    """A pass calibrates, rounds, and carries the config version as `calibration`."""
    clock = FakeClock()
    config = ModuleConfig().apply_patch(
        {
            "calibration": {
                "temperature": {"slope": 1.0, "intercept": -1.234},
                "pressure": {"slope": 1.001, "intercept": 0.0},
            },
            "$version": 12,
        }
    )
    reading = make_pipeline(clock, config).process(raw(22.0, 45.556, 1000.0, 123456.7))
    payload = reading.payload
    assert payload["temperature"] == 20.77
    assert payload["humidity"] == 45.56
    assert payload["pressure"] == 1001.0
    assert payload["gasResistance"] == 123457
    assert payload["iaq"] is None  # burning in
    assert payload["calibration"] == 12
    assert payload["flags"] == []
    assert_valid(payload)


def test_cpu_compensation_in_pass() -> None:
    """With compensation on, the smoothed CPU temperature corrects the temperature."""
    clock = FakeClock()
    config = ModuleConfig().apply_patch(
        {"calibration": {"cpuCompensation": {"enabled": True, "factor": 2.0}}}
    )
    cpu = CpuTemperature(source=lambda: 50.0)
    payload = make_pipeline(clock, config, cpu=cpu).process(raw(30.0)).payload
    assert payload["temperature"] == 20.0
    no_cpu = make_pipeline(clock, config, cpu=CpuTemperature(source=None)).process(raw(30.0))
    assert no_cpu.payload["temperature"] == 30.0
    assert "cpu_temperature_unavailable" in no_cpu.payload["flags"]


def test_cpu_compensation_switched_on_at_run_time() -> None:
    """A twin patch that turns compensation on takes effect at the next reading."""
    clock = FakeClock()
    cpu = CpuTemperature(source=None, find=lambda: lambda: 50.0)
    pipeline = make_pipeline(clock, ModuleConfig(), cpu=cpu)
    assert pipeline.process(raw(30.0)).payload["temperature"] == 30.0
    pipeline.set_config(
        ModuleConfig().apply_patch(
            {"calibration": {"cpuCompensation": {"enabled": True, "factor": 2.0}}, "$version": 2}
        )
    )
    payload = pipeline.process(raw(30.0)).payload
    assert (payload["temperature"], payload["calibration"], payload["flags"]) == (20.0, 2, [])


def test_impossible_values_are_flagged_not_sent() -> None:
    """NaN and out-of-range values become null plus a flag; the message still validates."""
    clock = FakeClock()
    payload = make_pipeline(clock).process(raw(math.nan, 140.0, 1000.0, None)).payload
    assert payload["temperature"] is None and payload["humidity"] is None
    assert payload["flags"] == ["temperature_invalid", "humidity_out_of_range"]
    assert_valid(payload)


finite_or_not = st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=200, deadline=None)
@given(
    t=finite_or_not,
    h=finite_or_not,
    p=finite_or_not,
    gas=st.one_of(st.none(), finite_or_not),
    heat_stable=st.booleans(),
    slope=st.floats(min_value=0.01, max_value=10),
    intercept=st.floats(min_value=-100, max_value=100),
    cpu_enabled=st.booleans(),
)
def test_every_message_validates(
    t: float,
    h: float,
    p: float,
    gas: float | None,
    heat_stable: bool,
    slope: float,
    intercept: float,
    cpu_enabled: bool,
) -> None:
    """Whatever the sensor returns and whatever valid calibration: the message is schema-1."""
    clock = FakeClock()
    lin = {"slope": slope, "intercept": intercept}
    config = ModuleConfig().apply_patch(
        {
            "calibration": {
                "temperature": lin,
                "humidity": lin,
                "pressure": lin,
                "cpuCompensation": {"enabled": cpu_enabled},
            },
            "$version": 1,
        }
    )
    pipeline = make_pipeline(clock, config, burn_in=0.0, cpu=CpuTemperature(source=lambda: 60.0))
    for _ in range(6):  # past the minimum burn-in samples, so iaq is computed too
        reading = pipeline.process(raw(t, h, p, gas, heat_stable=heat_stable))
        assert_valid(reading.payload)
        for key, value in (("temperature", t), ("humidity", h), ("pressure", p)):
            if not math.isfinite(value):  # never sent as a value: null, and flagged
                assert reading.payload[key] is None
                assert f"{key}_invalid" in reading.payload["flags"]


def test_read_failure_sends_nothing_and_shows_error() -> None:
    """A SensorError gives no message (nothing made up), no seq gap, error LED, health counted."""
    app, publisher, led, _, _ = make_app([raw(), read_error(), read_error(), raw()])
    results = [app.step() for _ in range(4)]
    assert [r is None for r in results] == [False, True, True, False]
    assert app.drain(timeout_s=10) == 0
    assert [r["seq"] for r in publisher.readings()] == [1, 2]
    assert ("error", True) in led.calls
    assert led.error_state is False  # cleared by the good read
    reported = app.reported()
    assert reported["reads"] == {
        "ok": 2,
        "failed": 2,
        "consecutiveFailures": 0,
        "lastError": "I2C read failed: [Errno 121] Remote I/O error",
    }
    assert reported["messages"]["readingsSent"] == 2


def test_error_state_stays_while_failing() -> None:
    """While reads keep failing the error state stays on and the health shows it."""
    app, publisher, led, _, _ = make_app([read_error("bus gone")])
    for _ in range(3):
        assert app.step() is None
    assert publisher.sent == []
    assert led.error_state is True
    assert led.calls.count(("error", True)) == 1
    assert app.reported()["reads"]["consecutiveFailures"] == 3


def test_other_exceptions_are_not_swallowed() -> None:
    """A bug in a sensor (not a SensorError) is not hidden as a read failure."""
    app, *_ = make_app([ZeroDivisionError("bug")])
    with pytest.raises(ZeroDivisionError):
        app.step()


def test_alert_at_threshold() -> None:
    """temperature >= alerts.temperatureHigh sets the alert property and LED state."""
    config = ModuleConfig().apply_patch({"alerts": {"temperatureHigh": 25.0}})
    app, publisher, led, _, _ = make_app([raw(24.99), raw(25.0), raw(math.nan)], config)
    for _ in range(3):
        app.step()
        app.drain(timeout_s=10)  # one message per reading, so each has its own property
    alerts = [props["temperatureAlert"] for _, _, props in publisher.sent]
    assert alerts == ["false", "true", "false"]
    assert [c for c in led.calls if c[0] == "alert"] == [
        ("alert", False),
        ("alert", True),
        ("alert", False),
    ]
    assert led.calls.count(("sent", None)) == 3


def test_packing_readings_per_message() -> None:
    """readingsPerMessage 3: arrays of 3, the rest drained as a short pack; ids of firsts."""
    config = ModuleConfig().apply_patch({"readingsPerMessage": 3})
    app, publisher, _, _, _ = make_app([raw()], config)
    for n in range(1, 8):
        app.step()
        if n % 3 == 0:  # a full pack goes without a drain; wait for it
            wait_for(lambda: len(app.buffer) == 0)
        else:
            assert not wait_for(lambda: len(app.buffer) == 0, timeout=0.05), "sent a short pack"
    assert app.drain(timeout_s=10) == 0
    bodies = publisher.bodies()
    assert [[r["seq"] for r in b] for b in bodies] == [[1, 2, 3], [4, 5, 6], [7]]
    assert [mid for _, mid, _ in publisher.sent] == ["0badcafe:1", "0badcafe:4", "0badcafe:7"]
    for body in bodies:
        assert_valid(body)


def test_publisher_failure_keeps_messages_in_order() -> None:
    """Refused sends keep the readings; they go out in order once the publisher is back, and
    the LED shows the failure meanwhile."""
    app, publisher, led, _, _ = make_app([raw()])
    publisher.fail_next = 3
    for _ in range(3):
        app.step()
    assert app.drain(timeout_s=10) == 0
    assert [r["seq"] for r in publisher.readings()] == [1, 2, 3]
    assert ("error", True) in led.calls
    assert led.error_state is False
    reported = app.reported()["messages"]
    assert (reported["failedAttempts"], reported["readingsSent"], reported["failing"]) == (
        3,
        3,
        False,
    )
    assert reported["lastError"] == "ConnectionError: hub unreachable"


def test_full_buffer_drops_oldest_and_counts_them() -> None:
    """With the publisher down and a buffer of 2, the oldest go (but not the message being
    retried); every reading is either delivered, in order, or counted dropped."""
    from enviro_sensor.buffer import ReadingBuffer

    buffer = ReadingBuffer(path=None, max_readings=2, max_bytes=10**6)
    app, publisher, _, _, _ = make_app([raw()], buffer=buffer)
    publisher.fail_next = 10**9
    app.step()
    assert wait_for(lambda: publisher.attempts >= 1)  # reading 1 is in flight: held
    for _ in range(4):
        app.step()
    reported = app.reported()["buffer"]
    assert (reported["depth"], reported["dropped"]) == (2, 3)
    publisher.fail_next = 0
    assert app.drain(timeout_s=10) == 0
    assert [r["seq"] for r in publisher.readings()] == [1, 5]
    reported = app.reported()["buffer"]
    assert (reported["depth"], reported["dropped"]) == (0, 3)


def test_run_schedule_and_stop() -> None:
    """run(): first read at once, then every interval; stop() ends it at the next wait."""
    app, _, _, clock, sensor = make_app([raw()])
    original = sensor.read

    def read_and_stop_at_4() -> RawReading:
        if sensor.reads == 3:
            app.stop()
        return original()

    sensor.read = read_and_stop_at_4  # type: ignore[method-assign]
    summary = app.run(count=0, interval=5.0)
    assert summary.stopped and summary.readings == 4
    assert clock.waits == [5.0, 5.0, 5.0, 5.0]


def test_run_uses_config_interval_and_skips_overrun() -> None:
    """Without an override the config interval is used; an overrunning read skips ahead."""
    config = ModuleConfig().apply_patch({"telemetryInterval": 10})

    app, _, _, clock, sensor = make_app([raw()], config)
    original = sensor.read

    def slow_read() -> RawReading:
        if sensor.reads == 1:
            clock.advance(25.0)  # the second read takes 25 s
        return original()

    sensor.read = slow_read  # type: ignore[method-assign]
    app.run(count=3)
    assert clock.waits == [10.0, 0.0]


def test_run_arguments_checked() -> None:
    """A negative count or non-positive interval is refused."""
    app, *_ = make_app([raw()])
    with pytest.raises(ValueError):
        app.run(count=-1)
    with pytest.raises(ValueError):
        app.run(count=1, interval=0.0)


def test_apply_desired_takes_effect_and_persists(tmp_path: Path) -> None:
    """A twin patch applies from the next reading, and is on disk for the next start."""
    store = ConfigStore(path=tmp_path / "config.json")
    app, publisher, _, _, _ = make_app([raw(20.0)], config_store=store)
    app.step()
    app.apply_desired({"calibration": {"temperature": {"intercept": 1.5}}, "$version": 3})
    app.step()
    app.drain(timeout_s=10)
    first, second = publisher.readings()
    assert (first["temperature"], first["calibration"]) == (20.0, 0)
    assert (second["temperature"], second["calibration"]) == (21.5, 3)
    assert store.load(ModuleConfig()).version == 3
    assert app.reported()["configVersion"] == 3


def test_refused_desired_changes_nothing(tmp_path: Path) -> None:
    """A bad twin patch is refused whole: same config, same file bytes, same next reading."""
    store = ConfigStore(path=tmp_path / "config.json")
    app, publisher, _, _, _ = make_app([raw(20.0)], config_store=store)
    app.apply_desired({"calibration": {"temperature": {"intercept": 1.0}}, "$version": 2})
    before = app.config
    file_before = store.path.read_bytes()
    with pytest.raises(ConfigError, match=r"calibration\.humidity\.slope"):
        app.apply_desired(
            {
                "calibration": {"temperature": {"intercept": 5.0}, "humidity": {"slope": -1}},
                "$version": 3,
            }
        )
    assert app.config == before
    assert store.path.read_bytes() == file_before
    app.step()
    app.drain(timeout_s=10)
    assert publisher.readings()[0]["temperature"] == 21.0
    assert publisher.readings()[0]["calibration"] == 2


def test_led_disabled_by_config() -> None:
    """led.enabled false: the loop leaves the LED alone (and turns it off when switched)."""
    config = ModuleConfig().apply_patch({"led": {"enabled": False}})
    app, _, led, _, _ = make_app([raw(), read_error()], config)
    app.step()
    app.step()
    app.drain(timeout_s=10)
    assert led.calls == []
    app2, _, led2, _, _ = make_app([raw()])
    app2.step()
    app2.drain(timeout_s=10)
    # The sender thread tells the LED after the send: drain() can return just before that.
    assert wait_for(lambda: ("sent", None) in led2.calls, timeout=5), led2.calls
    led2.calls.clear()
    app2.apply_desired({"led": {"enabled": False}})
    assert led2.calls == [("error", False), ("alert", False)]
    app2.step()
    app2.drain(timeout_s=10)
    assert led2.calls == [("error", False), ("alert", False)]


def test_reset_air_quality_and_reported_health() -> None:
    """resetAirQualityBaseline and the reported state (sensor health included)."""
    clock = FakeClock()
    sensor = SimulatedSensor(seed=1, device_id="pi-test", now=clock.now)
    app = App(
        sensor=sensor,
        publisher=RecordingPublisher(),
        pipeline=make_pipeline(clock, burn_in=0.0),
        clock=clock,
    )
    app.run(count=10, interval=1.0)
    assert app.reported()["airQuality"]["state"] == "ready"
    app.reset_air_quality()
    reported = app.reported()
    assert reported["airQuality"]["state"] == "burning_in"
    assert reported["sensor"]["state"] == "simulated"  # never "ok": not a real sensor
    assert reported["sensor"]["kind"] == "simulated"
    assert reported["boot"] == "0badcafe"
    json.dumps(reported)  # JSON-ready


def test_bad_device_id_refused() -> None:
    """A device id that cannot travel in a message is refused when the pipeline is built."""
    clock = FakeClock()
    with pytest.raises(ValueError):
        Pipeline(
            device_id="bad\nid",
            config=ModuleConfig(),
            air_quality=AirQuality(source="bme680", state_path=None),
            clock=clock,
        )


def test_system_clock_is_utc_and_stoppable() -> None:
    """The real clock: aware UTC time, and wait() returns at once when stopped."""
    clock = SystemClock()
    now = clock.now()
    assert now.tzinfo is UTC and abs(now - datetime.now(UTC)) < timedelta(seconds=5)
    stop = threading.Event()
    stop.set()
    assert clock.wait(30.0, stop) is True


def test_sensor_error_subclasses() -> None:
    """SensorError is an OSError, so I/O errors from drivers fit the same handling."""
    assert issubclass(SensorError, OSError)


def test_i2c_error_mid_run_nothing_lost_or_doubled() -> None:
    """Real bme680 library on a fake bus, unplugged mid-run: no message while failing, no
    made-up values, seq without gaps or repeats, health and LED show it, recovery resumes."""
    import random

    from enviro_sensor.sensors import SensorSettings, open_sensor

    from .fake_bme680 import DEFAULT_TEMPERATURE, FakeBme680Bus

    bus = FakeBme680Bus(addresses=(0x77,))
    clock = FakeClock()
    sensor = open_sensor(
        SensorSettings(kind="bme680"),
        device_id="pi-test",
        i2c_device=bus,
        sleep=lambda _s: None,
        monotonic=clock.monotonic,
        rng=random.Random(1),
    )
    publisher = RecordingPublisher()
    led = RecordingLed()
    app = App(
        sensor=sensor, publisher=publisher, pipeline=make_pipeline(clock), clock=clock, led=led
    )

    def steps(n: int) -> list[bool]:
        out = []
        for _ in range(n):
            out.append(app.step() is not None)
            clock.advance(10.0)
        return out

    assert steps(3) == [True, True, True]
    bus.unplugged = True
    assert steps(4) == [False] * 4
    assert led.error_state is True
    reported = app.reported()
    assert reported["sensor"]["state"] in ("degraded", "failed")
    assert reported["sensor"]["address"] == "0x77"
    assert reported["reads"]["failed"] == 4
    app.drain(timeout_s=10)
    assert len(publisher.readings()) == 3

    bus.unplugged = False
    clock.advance(60.0)  # past the driver's re-initialisation back-off
    assert steps(3) == [True, True, True]
    assert led.error_state is False
    app.drain(timeout_s=10)
    readings = publisher.readings()
    assert [r["seq"] for r in readings] == [1, 2, 3, 4, 5, 6]
    assert len({(r["boot"], r["seq"]) for r in readings}) == 6
    for r in readings:
        assert_valid(r)
        assert r["source"] == "bme680"
        assert r["temperature"] == pytest.approx(DEFAULT_TEMPERATURE, abs=0.01)
    assert app.reported()["sensor"]["state"] == "ok"
