"""The status LED (and an optional alert LED), through gpiozero.

What the LED on `pin` shows, highest precedence first:

1. identify — a very fast blink (0.05 s on / 0.05 s off) for the seconds asked, for the
   `identify` direct method; then back to whatever comes below. It wins because someone is
   standing in front of a row of Pis looking for this one.
2. error — a slow blink (1 s on / 1 s off): the sensor or the connection is failing. It beats
   the alert because, while the device is failing, its alert state may be stale.
3. alert — a fast blink (0.2 s on / 0.2 s off), only when there is no `alert_pin`: a reading
   crossed an alert threshold. With an `alert_pin` the alert has its own LED, steady on
   (blinking fast along during identify), and the status LED goes on showing 4 or 2.
4. normal — off, with one short blink (0.08 s) per reading sent. A reading sent while 1–3 is
   showing does not blink, so the pattern stays readable.

Without GPIO (no pin factory loads: not a Pi, /dev/gpiochip* not mapped into the container),
or with `enabled=False`, the LED is a no-op that said so in one log line. A GPIO call that fails
later (from these methods) also turns it into a no-op, with one log line. Blinking runs in
gpiozero's own background thread: a write failing inside that thread ends the blink there and is
reported by Python's thread exception hook, not by this class (GPIO writes to a claimed line do not
fail in practice; the next state change written from here is guarded as above).
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any, Literal

logger = logging.getLogger(__name__)

Pattern = Literal["identify", "error", "alert", "normal"]

READING_BLINK_S = 0.08
ERROR_BLINK_S = (1.0, 1.0)
ALERT_BLINK_S = (0.2, 0.2)
IDENTIFY_BLINK_S = (0.05, 0.05)
#: Longest identify accepted: a direct method payload should not light a Pi up for hours.
MAX_IDENTIFY_S = 300.0


class StatusLed:
    """Status (and optional alert) LED. Every method is safe to call from any thread."""

    def __init__(
        self,
        *,
        pin: int | None = 17,
        alert_pin: int | None = None,
        pin_factory: Any = None,
        enabled: bool = True,
    ) -> None:
        """Claim the pins.

        Args:
            pin: BCM GPIO number of the status LED; None for none.
            alert_pin: BCM GPIO number of a separate alert LED; None shows alerts on `pin`.
            pin_factory: a gpiozero pin factory (MockFactory in tests); None uses gpiozero's
                default.
            enabled: False makes this a no-op (the twin's `led.enabled`).

        Raises:
            ValueError: a pin number is negative, not an int, or both pins are the same.
        """
        for name, value in (("pin", pin), ("alert_pin", alert_pin)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name} must be a GPIO number or None, got {value!r}")
            if value is not None and value < 0:
                raise ValueError(f"{name} must be a GPIO number >= 0, got {value}")
        if pin is not None and pin == alert_pin:
            raise ValueError(f"pin and alert_pin must differ, both are {pin}")
        self._lock = threading.RLock()
        self._error = False
        self._alert = False
        self._identifying = False
        self._identify_timer: threading.Timer | None = None
        self._shown: Pattern | None = None
        self._alert_shown: str | None = None
        self._led: Any = None
        self._alert_led: Any = None
        self._available = False
        if not enabled:
            logger.info("Status LED off: disabled in the configuration")
            return
        if pin is None and alert_pin is None:
            logger.info("Status LED off: no GPIO pin configured")
            return
        try:
            self._led, self._alert_led = self._open(pin, alert_pin, pin_factory)
        except Exception as exc:  # any GPIO failure means "no LED", never a crash
            logger.warning(
                "Status LED off: no GPIO available (%s: %s); carrying on without it",
                type(exc).__name__,
                exc,
            )
            return
        self._available = True
        with self._lock:
            self._apply_locked()

    @property
    def available(self) -> bool:
        """Whether an LED is really driven (False: a no-op)."""
        return self._available

    @property
    def pattern(self) -> Pattern:
        """What the status LED is showing now (see the module docstring for precedence)."""
        with self._lock:
            return self._wanted_locked()

    def reading_sent(self) -> None:
        """One short blink, unless a higher-precedence pattern is showing."""
        with self._lock:
            if not self._available or self._led is None or self._wanted_locked() != "normal":
                return
            self._guard(lambda: self._led.blink(on_time=READING_BLINK_S, off_time=0.0, n=1))

    def error(self, active: bool) -> None:
        """Show (or stop showing) the error pattern."""
        with self._lock:
            self._error = bool(active)
            self._apply_locked()

    def alert(self, active: bool) -> None:
        """Show (or stop showing) the alert: on the alert LED, or the status LED's fast blink."""
        with self._lock:
            self._alert = bool(active)
            self._apply_locked()

    def identify(self, seconds: float = 10.0) -> None:
        """Blink very fast for `seconds` (the identify direct method), then go back.

        Raises:
            ValueError: seconds is not a number in (0, 300].
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ValueError(f"identify seconds must be a number, got {seconds!r}")
        if not 0 < seconds <= MAX_IDENTIFY_S:
            raise ValueError(f"identify seconds must be in (0, {MAX_IDENTIFY_S:g}], got {seconds}")
        with self._lock:
            self._cancel_identify_locked()
            if not self._available:
                return
            self._identifying = True
            timer = threading.Timer(seconds, self._end_identify)
            timer.daemon = True
            self._identify_timer = timer
            self._apply_locked()
            timer.start()

    def close(self) -> None:
        """Turn the LEDs off and release the pins. Safe to call twice."""
        with self._lock:
            self._cancel_identify_locked()
            self._identifying = False
            led, alert_led = self._led, self._alert_led
            self._led = self._alert_led = None
            self._available = False
        for device in (led, alert_led):
            if device is not None:
                try:
                    device.close()
                except Exception:  # closing must not fail shutdown
                    logger.debug("closing an LED failed", exc_info=True)

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _open(pin: int | None, alert_pin: int | None, pin_factory: Any) -> tuple[Any, Any]:
        from gpiozero import LED
        from gpiozero.exc import GPIOZeroWarning

        led = alert_led = None
        # gpiozero warns once per pin factory it falls back from; the one log line below says it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GPIOZeroWarning)
            try:
                if pin is not None:
                    led = LED(pin, pin_factory=pin_factory)
                if alert_pin is not None:
                    alert_led = LED(alert_pin, pin_factory=pin_factory)
            except BaseException:
                if led is not None:
                    led.close()
                raise
        return led, alert_led

    def _wanted_locked(self) -> Pattern:
        if self._identifying:
            return "identify"
        if self._error:
            return "error"
        if self._alert and self._alert_led is None:
            return "alert"
        return "normal"

    def _apply_locked(self) -> None:
        if not self._available:
            return
        wanted = self._wanted_locked()
        if self._led is not None and wanted != self._shown:
            self._shown = wanted
            led = self._led
            if wanted == "identify":
                self._guard(lambda: led.blink(*IDENTIFY_BLINK_S))
            elif wanted == "error":
                self._guard(lambda: led.blink(*ERROR_BLINK_S))
            elif wanted == "alert":
                self._guard(lambda: led.blink(*ALERT_BLINK_S))
            else:
                self._guard(led.off)
        if self._alert_led is not None:
            alert_wanted = "identify" if self._identifying else ("on" if self._alert else "off")
            if alert_wanted != self._alert_shown:
                self._alert_shown = alert_wanted
                alert_led = self._alert_led
                if alert_wanted == "identify":
                    self._guard(lambda: alert_led.blink(*IDENTIFY_BLINK_S))
                elif alert_wanted == "on":
                    self._guard(alert_led.on)
                else:
                    self._guard(alert_led.off)

    def _end_identify(self) -> None:
        with self._lock:
            if self._identify_timer is None:
                return  # cancelled or replaced
            self._identify_timer = None
            self._identifying = False
            self._apply_locked()

    def _cancel_identify_locked(self) -> None:
        timer, self._identify_timer = self._identify_timer, None
        if timer is not None:
            timer.cancel()

    def _guard(self, action: Any) -> None:
        """Run one GPIO call; a failing pin turns the LED into a no-op (one log line)."""
        try:
            action()
        except Exception as exc:  # a broken LED must never stop the readings
            logger.warning(
                "Status LED off: GPIO failed (%s: %s); carrying on without it",
                type(exc).__name__,
                exc,
            )
            self._available = False
            self._shown = self._alert_shown = None
            # Stop any blink thread still running on the other LED and free the pins.
            led, alert_led = self._led, self._alert_led
            self._led = self._alert_led = None
            for device in (led, alert_led):
                if device is not None:
                    try:
                        device.close()
                    except Exception:  # already failing: nothing more to say
                        logger.debug("closing an LED after a GPIO failure failed", exc_info=True)
