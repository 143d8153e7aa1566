"""Direct methods: ``readNow``, ``identify``, ``resetAirQualityBaseline``.

Each answers ``(status, payload)``: 200 on success, 400 for a payload it refuses (with the
reason), 404 for a method it does not know, 503 when the device cannot do it right now (no LED,
a failed sensor read). Nothing a caller sends can raise out of :meth:`Methods.handle`.

Payloads (JSON):

- ``readNow``: none (``null`` or ``{}``). Takes a reading at once; it goes to the hub like every
  other (next seq) and comes back in the answer.
- ``identify``: ``{"seconds": N}`` with 0 < N <= 300 (default 10 when there is no payload).
  Blinks the status LED very fast for N seconds.
- ``resetAirQualityBaseline``: none. Forgets the gas baseline and burns in again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .led import MAX_IDENTIFY_S
from .message import Reading

log = logging.getLogger(__name__)

DEFAULT_IDENTIFY_S = 10.0
MAX_NAME_SHOWN = 64

Answer = tuple[int, Any]


class MethodTarget(Protocol):
    """What the methods drive (the App fits)."""

    def step(self, *, flush: bool = False) -> Reading | None:
        """Read once and buffer the reading (``flush``: send it without waiting for a pack)."""
        ...

    def reset_air_quality(self) -> None:
        """Forget the air-quality baseline."""
        ...

    def reported(self) -> dict[str, Any]:
        """State for reported properties."""
        ...


class Identifier(Protocol):
    """The status LED as ``identify`` sees it (enviro_sensor.led.StatusLed fits)."""

    @property
    def available(self) -> bool:
        """Whether an LED is really driven."""
        ...

    @property
    def pattern(self) -> str:
        """What the LED shows now."""
        ...

    def identify(self, seconds: float = 10.0) -> None:
        """Blink very fast for ``seconds``."""
        ...


def _error(status: int, message: str) -> Answer:
    return status, {"error": message}


def _no_payload(payload: Any, name: str) -> Answer | None:
    if payload is None or payload == {} or payload == "":
        return None
    return _error(400, f"{name} takes no payload (send null or {{}}), got {_shape(payload)}")


def _shape(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Methods:
    """The direct-method table. Thread-safe as far as its targets are."""

    def __init__(self, *, app: MethodTarget, led: Identifier | None) -> None:
        """Wire the methods to the app and the LED (None: no LED on this device)."""
        self._app = app
        self._led = led
        self._table: dict[str, Callable[[Any], Answer]] = {
            "readNow": self.read_now,
            "identify": self.identify,
            "resetAirQualityBaseline": self.reset_air_quality_baseline,
        }

    @property
    def names(self) -> tuple[str, ...]:
        """The methods this module answers."""
        return tuple(self._table)

    def handle(self, name: Any, payload: Any) -> Answer:
        """Answer one call; never raises."""
        method = self._table.get(name) if isinstance(name, str) else None
        if method is None:
            shown = name[:MAX_NAME_SHOWN] if isinstance(name, str) else _shape(name)
            return _error(
                404, f"unknown method {shown!r}; this module answers {', '.join(self._table)}"
            )
        try:
            return method(payload)
        except Exception as exc:  # a bug here must not end the module: answer 500
            log.exception("direct method %s failed", name)
            return _error(500, f"{name} failed: {type(exc).__name__}")

    def read_now(self, payload: Any) -> Answer:
        """Take a reading now; it is sent like any other and returned."""
        refused = _no_payload(payload, "readNow")
        if refused is not None:
            return refused
        reading = self._app.step(flush=True)
        if reading is None:
            sensor = self._app.reported().get("sensor", {})
            return _error(
                503, f"the sensor read failed: {sensor.get('lastError') or 'see reported sensor'}"
            )
        return 200, {"reading": reading.payload}

    def identify(self, payload: Any) -> Answer:
        """Blink the status LED for ``seconds``."""
        if payload is None or payload == {} or payload == "":
            seconds = DEFAULT_IDENTIFY_S
        elif isinstance(payload, Mapping):
            unknown = sorted(str(k)[:MAX_NAME_SHOWN] for k in payload if k != "seconds")
            if unknown:
                return _error(
                    400, f"identify: unknown field(s) {unknown}; expected {{'seconds': N}}"
                )
            value = payload.get("seconds")
            if isinstance(value, bool) or not isinstance(value, int | float):
                return _error(400, f"identify: seconds must be a number, got {_shape(value)}")
            seconds = float(value)
            if not (math.isfinite(seconds) and 0 < seconds <= MAX_IDENTIFY_S):
                return _error(400, f"identify: seconds must be in (0, {MAX_IDENTIFY_S:g}]")
        else:
            return _error(400, f"identify: expected {{'seconds': N}}, got {_shape(payload)}")
        led = self._led
        if led is None or not led.available:
            return _error(503, "identify: this device has no status LED (no GPIO, or disabled)")
        led.identify(seconds)
        return 200, {"seconds": seconds, "pattern": led.pattern}

    def reset_air_quality_baseline(self, payload: Any) -> Answer:
        """Forget the gas baseline; the burn-in starts again."""
        refused = _no_payload(payload, "resetAirQualityBaseline")
        if refused is not None:
            return refused
        self._app.reset_air_quality()
        return 200, {"airQuality": self._app.reported().get("airQuality")}
