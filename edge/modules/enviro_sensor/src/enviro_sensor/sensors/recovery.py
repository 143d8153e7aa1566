"""Failure bookkeeping shared by the real sensors: back-off, health, the last error.

Not thread-safe on its own: each driver calls it under its own lock.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from enviro_sensor.errors import SensorError
from enviro_sensor.reading import SourceKind
from enviro_sensor.sensors.health import HealthState, SensorHealth

logger = logging.getLogger(__name__)

#: Re-initialisation delays: 1 s, 2 s, 4 s … capped at 60 s, each scaled by a random 0.5–1.0.
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
#: Consecutive failed reads after which health says "failed" rather than "degraded".
FAILED_AFTER = 5


class Recovery:
    """Counts failures, spaces re-initialisations out, and says how healthy a sensor is."""

    def __init__(
        self, *, kind: SourceKind, monotonic: Callable[[], float], rng: random.Random
    ) -> None:
        """Start healthy.

        Args:
            kind: the sensor kind its health reports.
            monotonic: the clock the delays are measured on.
            rng: jitter source for the delays.
        """
        self._kind: SourceKind = kind
        self._monotonic = monotonic
        self._rng = rng
        self.consecutive_failures = 0
        # I/O errors and failed re-initialisations since the last good read: the back-off
        # exponent. Reads refused during a back-off do not count here, or a fast caller would
        # stretch it.
        self._backoff_failures = 0
        self.reinitialisations = 0
        self.last_error: str | None = None
        self._next_attempt_at = 0.0

    def wait_left(self) -> float:
        """Seconds until the next re-initialisation may be tried (0: now)."""
        return max(0.0, self._next_attempt_at - self._monotonic())

    def fail(self, message: str, *, backoff: bool, during_backoff: bool = False) -> SensorError:
        """Count a failed read and return the error to raise.

        Args:
            message: what went wrong.
            backoff: start (or grow) a delay before the next re-initialisation.
            during_backoff: the read was refused because a delay runs (logged at debug only,
                and not kept as the last error).
        """
        self.consecutive_failures += 1
        if during_backoff:
            logger.debug("%s", message)
            return SensorError(message)
        self.last_error = message
        if backoff:
            self._backoff_failures += 1
            # The exponent is capped too: 2.0 ** 2000 would overflow a float on a long outage.
            exponent = min(self._backoff_failures - 1, 16)
            delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0**exponent)
            delay *= self._rng.uniform(0.5, 1.0)
            self._next_attempt_at = self._monotonic() + delay
            logger.warning("%s; re-initialising in %.1f s", message, delay)
        else:
            logger.warning("%s", message)
        return SensorError(message)

    def succeeded(self) -> int:
        """Record a good read; returns how many reads had failed in a row before it."""
        before = self.consecutive_failures
        self.consecutive_failures = 0
        self._backoff_failures = 0
        return before

    def health(self, address: int | None) -> SensorHealth:
        """The health right now."""
        state: HealthState
        if self.consecutive_failures == 0:
            state = "ok"
        elif self.consecutive_failures < FAILED_AFTER:
            state = "degraded"
        else:
            state = "failed"
        return SensorHealth(
            state=state,
            kind=self._kind,
            address=address,
            last_error=self.last_error,
            consecutive_failures=self.consecutive_failures,
            reinitialisations=self.reinitialisations,
        )
