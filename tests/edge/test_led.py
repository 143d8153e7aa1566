"""StatusLed with gpiozero's MockFactory: patterns, precedence, identify, no-GPIO no-op."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import pytest
from enviro_sensor import led as led_module
from enviro_sensor.led import StatusLed
from gpiozero import LED, Device
from gpiozero.pins.mock import MockFactory, MockPin

LED_LOGGER = "enviro_sensor.led"


def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    """Poll until predicate() is true or the timeout passes; return the last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def states(pin: MockPin) -> list[bool]:
    return [bool(s.state) for s in pin.states]


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    mock = MockFactory()
    yield mock
    mock.close()


@pytest.fixture
def status(factory: MockFactory) -> Iterator[StatusLed]:
    led = StatusLed(pin=17, pin_factory=factory)
    yield led
    led.close()


def led_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LED_LOGGER]


def steady_error(
    status: StatusLed, factory: MockFactory, monkeypatch: pytest.MonkeyPatch
) -> MockPin:
    """Show the error pattern with a 30 s "on": the pin stays on, its history cleared."""
    monkeypatch.setattr(led_module, "ERROR_BLINK_S", (30.0, 30.0))
    pin = factory.pin(17)
    status.error(True)
    assert wait_for(lambda: pin.state is True)
    pin.clear_states()
    return pin


def pattern_of(status: StatusLed) -> str:
    # Read the property afresh: mypy narrows a repeated `status.pattern` to its first value.
    return status.pattern


def test_starts_off_and_available(status: StatusLed, factory: MockFactory) -> None:
    """A new status LED drives its pin as an output, off, in the normal pattern."""
    pin = factory.pin(17)
    assert status.available
    assert pin.function == "output"
    assert pin.state is False
    assert status.pattern == "normal"


def test_reading_sent_is_one_short_blink(status: StatusLed, factory: MockFactory) -> None:
    """reading_sent(): off → on → off once, on for about 0.08 s."""
    pin = factory.pin(17)
    pin.clear_states()
    status.reading_sent()
    assert wait_for(lambda: states(pin) == [False, True, False])
    time.sleep(0.2)
    assert states(pin) == [False, True, False]  # once, not repeatedly
    on_time = pin.states[2].timestamp
    assert 0.05 <= on_time <= 0.5


def test_error_is_a_slow_blink(status: StatusLed, factory: MockFactory) -> None:
    """error(True): on for about a second, then off, repeating; error(False): off and still."""
    pin = factory.pin(17)
    pin.clear_states()
    status.error(True)
    assert status.pattern == "error"
    assert wait_for(lambda: len(pin.states) >= 3, timeout=4.0)
    assert states(pin)[:3] == [False, True, False]
    on_time = pin.states[2].timestamp
    assert led_module.ERROR_BLINK_S[0] - 0.1 <= on_time <= led_module.ERROR_BLINK_S[0] + 0.4
    status.error(False)
    assert wait_for(lambda: pin.state is False)
    settled = len(pin.states)
    time.sleep(0.3)
    assert len(pin.states) == settled
    assert pattern_of(status) == "normal"


def test_alert_on_a_single_led_is_a_fast_blink(status: StatusLed, factory: MockFactory) -> None:
    """alert(True) without an alert pin: the status LED blinks fast (0.2 s on/off)."""
    pin = factory.pin(17)
    pin.clear_states()
    status.alert(True)
    assert status.pattern == "alert"
    assert wait_for(lambda: len(pin.states) >= 6, timeout=3.0)
    durations = [s.timestamp for s in pin.states[2:6]]
    for duration in durations:
        # A busy machine can only make a blink step late, never early.
        assert led_module.ALERT_BLINK_S[0] - 0.05 <= duration <= led_module.ALERT_BLINK_S[0] + 0.25


def test_error_takes_precedence_over_alert(
    status: StatusLed, factory: MockFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Error beats alert; clearing the error shows the alert; clearing both goes normal."""
    monkeypatch.setattr(led_module, "ERROR_BLINK_S", (30.0, 30.0))  # on, and staying on
    monkeypatch.setattr(led_module, "ALERT_BLINK_S", (0.02, 0.02))
    pin = factory.pin(17)
    status.alert(True)
    status.error(True)
    assert status.pattern == "error"
    assert wait_for(lambda: pin.state is True)
    pin.clear_states()
    time.sleep(0.15)
    assert states(pin) == [True]  # steady: the alert's fast blink is not showing
    status.error(False)
    assert pattern_of(status) == "alert"
    assert wait_for(lambda: len(pin.states) >= 5)
    status.alert(False)
    assert pattern_of(status) == "normal"
    assert wait_for(lambda: pin.state is False)


def test_reading_blinks_do_not_garble_error_or_alert(
    status: StatusLed, factory: MockFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While error shows, reading_sent() leaves the pin alone."""
    pin = steady_error(status, factory, monkeypatch)
    status.reading_sent()
    time.sleep(0.2)
    assert states(pin) == [True]


def test_alert_pin_has_its_own_steady_led(factory: MockFactory) -> None:
    """With alert_pin, the alert LED is steady on and the status LED keeps blinking readings."""
    led = StatusLed(pin=17, alert_pin=27, pin_factory=factory)
    try:
        status_pin, alert_pin = factory.pin(17), factory.pin(27)
        assert alert_pin.state is False
        led.alert(True)
        assert alert_pin.state is True
        assert led.pattern == "normal"
        status_pin.clear_states()
        led.reading_sent()
        assert wait_for(lambda: states(status_pin) == [False, True, False])
        assert alert_pin.state is True
        led.alert(False)
        assert alert_pin.state is False
    finally:
        led.close()


def test_identify_blinks_fast_then_restores(
    status: StatusLed, factory: MockFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """identify(s) wins over error for s seconds, then the error pattern comes back."""
    pin = steady_error(status, factory, monkeypatch)
    status.identify(1.0)
    assert status.pattern == "identify"
    assert wait_for(lambda: len(pin.states) >= 6, timeout=1.0)
    assert wait_for(lambda: status.pattern == "error", timeout=2.0)
    assert wait_for(lambda: pin.state is True)
    settled = len(pin.states)
    time.sleep(0.2)
    assert len(pin.states) == settled  # back to the (steady, patched) error pattern


def test_identify_also_blinks_the_alert_led(factory: MockFactory) -> None:
    """identify blinks the alert LED too, then puts it back as it was."""
    led = StatusLed(pin=17, alert_pin=27, pin_factory=factory)
    try:
        alert_pin = factory.pin(27)
        led.alert(True)
        alert_pin.clear_states()
        led.identify(1.0)
        assert wait_for(lambda: len(alert_pin.states) >= 4, timeout=1.0)
        assert wait_for(lambda: led.pattern == "normal", timeout=2.0)
        assert wait_for(lambda: alert_pin.state is True)
    finally:
        led.close()


@pytest.mark.parametrize("seconds", [0, -1, 301, float("nan"), "5", True])
def test_identify_refuses_bad_durations(status: StatusLed, seconds: object) -> None:
    """identify() takes 0 < seconds <= 300."""
    with pytest.raises(ValueError):
        status.identify(seconds)  # type: ignore[arg-type]


def test_no_gpio_is_a_noop_with_one_log_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No pin factory loads: one WARNING at start, then every call is a silent no-op."""
    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no-such-factory")
    caplog.set_level(logging.DEBUG, logger=LED_LOGGER)
    led = StatusLed(pin=17)
    assert not led.available
    led.reading_sent()
    led.error(True)
    led.alert(True)
    led.identify(1)
    led.error(False)
    led.close()
    records = led_records(caplog)
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert "no GPIO available" in records[0].getMessage()
    assert "BadPinFactory" in records[0].getMessage()


def test_disabled_is_a_noop_with_one_log_line(
    factory: MockFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """enabled=False: the pin is never claimed; one INFO line says the LED is off."""
    caplog.set_level(logging.DEBUG, logger=LED_LOGGER)
    led = StatusLed(pin=17, pin_factory=factory, enabled=False)
    led.reading_sent()
    led.error(True)
    led.identify(1)
    led.close()
    pin = factory.pin(17)
    assert pin.function == "input"
    assert states(pin) == [False]
    records = led_records(caplog)
    assert len(records) == 1
    assert "disabled" in records[0].getMessage()


class FlakyPin(MockPin):  # type: ignore[misc]  # gpiozero ships no type hints
    """A mock pin whose writes fail once `broken` is set (a GPIO line lost mid-run)."""

    broken = False

    def _set_state(self, value: bool) -> None:
        if FlakyPin.broken:
            raise OSError(5, "Input/output error")
        super()._set_state(value)


def test_gpio_failing_mid_run_becomes_a_noop_with_one_log_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pin write failing: one WARNING, later calls do nothing and raise nothing."""
    monkeypatch.setattr(FlakyPin, "broken", False)
    factory = MockFactory(pin_class=FlakyPin)
    caplog.set_level(logging.DEBUG, logger=LED_LOGGER)
    led = StatusLed(pin=17, alert_pin=27, pin_factory=factory)
    try:
        assert led.available
        FlakyPin.broken = True
        led.alert(True)  # the alert LED's on() runs in this thread, and fails
        led.error(True)
        led.reading_sent()
        led.identify(1)
        assert not led.available
        records = [r for r in led_records(caplog) if r.levelno >= logging.WARNING]
        assert len(records) == 1
        assert "GPIO failed" in records[0].getMessage()
        assert "OSError" in records[0].getMessage()
    finally:
        FlakyPin.broken = False
        led.close()
        factory.close()


def test_close_releases_the_pins(factory: MockFactory) -> None:
    """After close() the pins can be claimed again; closing twice is fine."""
    led = StatusLed(pin=17, alert_pin=27, pin_factory=factory)
    led.alert(True)
    led.close()
    led.close()
    assert not led.available
    again = LED(27, pin_factory=factory)
    assert again.value == 0
    again.close()


@pytest.mark.parametrize(
    "kwargs",
    [{"pin": -1}, {"pin": "17"}, {"pin": True}, {"pin": 17, "alert_pin": 17}],
)
def test_bad_pins_are_refused(factory: MockFactory, kwargs: dict[str, object]) -> None:
    """Pins are GPIO numbers, and the two LEDs need two different pins."""
    with pytest.raises(ValueError):
        StatusLed(pin_factory=factory, **kwargs)  # type: ignore[arg-type]
