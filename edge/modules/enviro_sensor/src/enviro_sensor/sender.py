"""The sender: drains the reading buffer to a Publisher on its own thread, in order.

The reading loop only appends to the buffer and wakes the sender; it never waits on the network.
The sender takes the oldest readings (holding them so the buffer cannot drop them meanwhile),
packs them (:func:`enviro_sensor.message.plan_message`), and calls ``Publisher.send``, which
returns only once the hub acknowledged. Only then are the readings deleted from the buffer. A
failed or timed-out send is retried, the same message again, after a growing, jittered delay
(capped at a few seconds, so the first message after an outage goes soon after the hub is back);
nothing is dropped or reordered here. A send that hangs blocks only this thread: the loop keeps
reading into the buffer, and :meth:`Sender.drain` still returns at its deadline.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .buffer import ReadingBuffer
from .errors import BufferStoreError
from .message import OutgoingMessage, plan_message
from .reading import Publisher

log = logging.getLogger(__name__)
_T = TypeVar("_T")

PEEK_LIMIT = 64  # more readings than ever fit in 4 KB (a reading is ~230 bytes)
FAILURE_LOG_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Delays between attempts: ``initial_s`` doubling up to ``max_s``, each times 0.5–1 at random.

    Attributes:
        initial_s: the first delay.
        max_s: the cap (keep it a few seconds: it bounds how late the first message after an
            outage goes).
    """

    initial_s: float = 0.2
    max_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("initial_s", "max_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        if self.initial_s > self.max_s:
            raise ValueError(f"initial_s {self.initial_s} is above max_s {self.max_s}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The delay after failed attempt number ``attempt`` (1 = the first failure)."""
        base = min(self.max_s, self.initial_s * 2.0 ** min(max(attempt - 1, 0), 30))
        return float(base * rng.uniform(0.5, 1.0))


@dataclass(frozen=True, slots=True)
class SenderStats:
    """What the sender did (for the twin's reported properties).

    Attributes:
        messages: messages acknowledged.
        readings: readings in them.
        failed_attempts: sends that raised or timed out (each retried).
        failing: the last attempt failed and a retry is pending.
        last_error: the last send error, or None.
    """

    messages: int
    readings: int
    failed_attempts: int
    failing: bool
    last_error: str | None


class Sender:
    """One thread that drains ``buffer`` to ``publisher``."""

    def __init__(
        self,
        *,
        buffer: ReadingBuffer,
        publisher: Publisher,
        readings_per_message: Callable[[], int],
        retry: RetryPolicy | None = None,
        on_sent: Callable[[OutgoingMessage], None] | None = None,
        on_failing: Callable[[bool], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """Wire the sender (the thread starts with :meth:`start`).

        Args:
            buffer: where readings wait.
            publisher: where messages go; ``send`` returns once acknowledged, raises otherwise.
            readings_per_message: the configured readingsPerMessage, read before each message.
            retry: delays between attempts; default :class:`RetryPolicy`.
            on_sent: called (on the sender thread) after a message was acknowledged.
            on_failing: called with True when sends start failing, False when one works again.
            rng: jitter source (seed it in tests).

        Raises:
            TypeError: a required collaborator is missing.
        """
        if not isinstance(buffer, ReadingBuffer):
            raise TypeError(f"buffer must be a ReadingBuffer, got {type(buffer).__name__}")
        if not callable(getattr(publisher, "send", None)):
            raise TypeError("publisher must have a send(body, *, message_id, properties) method")
        if not callable(readings_per_message):
            raise TypeError("readings_per_message must be a callable returning an int")
        self._buffer = buffer
        self._publisher = publisher
        self._per_message = readings_per_message
        self._retry = retry if retry is not None else RetryPolicy()
        self._on_sent = on_sent
        self._on_failing = on_failing
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 (jitter, not secrets)
        self._cond = threading.Condition()
        self._closing = False
        self._flush_upto = 0  # readings with an id up to this go without waiting for a full pack
        self._thread: threading.Thread | None = None
        self._messages = 0
        self._readings = 0
        self._failed = 0
        self._failing = False
        self._last_error: str | None = None
        self._failing_since = 0.0
        self._last_failure_log = 0.0

    def start(self) -> None:
        """Start the thread (idempotent)."""
        with self._cond:
            if self._thread is not None or self._closing:
                return
            self._thread = threading.Thread(target=self._run, name="enviro-sender", daemon=True)
            self._thread.start()

    @property
    def running(self) -> bool:
        """The thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def notify(self, *, flush: bool = False) -> None:
        """A reading was appended; with ``flush`` it goes without waiting for a full pack."""
        with self._cond:
            if flush:
                self._flush_upto = max(self._flush_upto, self._buffer.last_id)
            self._cond.notify_all()

    def drain(self, timeout_s: float) -> int:
        """Send every reading buffered now (short packs too) or until ``timeout_s`` passes.

        Readings appended meanwhile are sent too if there is time, but not waited for.

        Returns:
            Readings still in the buffer (they stay on disk for the next start).

        Raises:
            ValueError: ``timeout_s`` is negative or not a number.
        """
        if not isinstance(timeout_s, int | float) or not timeout_s >= 0:
            raise ValueError(f"timeout_s must be a number >= 0, got {timeout_s!r}")
        deadline = time.monotonic() + min(float(timeout_s), 1e9)
        self.start()
        with self._cond:
            target = self._buffer.last_id
            self._flush_upto = max(self._flush_upto, target)
            self._cond.notify_all()
            while not self._closing and self._waiting_upto(target):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        return len(self._buffer)

    def close(self, timeout_s: float = 2.0) -> bool:
        """Stop the thread; a send in progress is not interrupted (the thread is a daemon).

        Returns:
            True when the thread ended within ``timeout_s``.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout_s)
        if thread.is_alive():
            log.warning("sender still inside a send after %.1f s; leaving it", timeout_s)
            return False
        return True

    def stats(self) -> SenderStats:
        """Counters so far."""
        with self._cond:
            return SenderStats(
                messages=self._messages,
                readings=self._readings,
                failed_attempts=self._failed,
                failing=self._failing,
                last_error=self._last_error,
            )

    # -- the thread --------------------------------------------------------------------------

    def _waiting_upto(self, target: int) -> bool:
        head = self._buffer.peek(1, hold=False)
        return bool(head) and head[0].id <= target

    def _run(self) -> None:
        while not self._closing:
            try:
                self._loop()
            except Exception:  # a bug must not silently stop sending: log it and go on
                log.exception("sender: unexpected error; going on in %.1f s", self._retry.max_s)
                self._pause(self._retry.max_s)

    def _loop(self) -> None:
        attempt = 0
        while True:
            message, last_id = self._next_message()
            if message is None:
                return  # closing
            while True:
                try:
                    self._publisher.send(
                        message.body, message_id=message.message_id, properties=message.properties
                    )
                    # Under the lock drain() waits on: it must never see the buffer empty
                    # before the counters say the readings were sent.
                    with self._cond:
                        self._buffer.ack(last_id)
                        self._messages += 1
                        self._readings += message.count
                except BufferStoreError as exc:
                    # Sent but not deleted: it goes again (the sink counts a resend once).
                    log.error("buffer: %s; the message will be sent again", exc)
                    if self._closing:
                        return
                    attempt += 1
                    self._pause(self._retry.delay(attempt, self._rng))
                    break
                except Exception as exc:  # a publisher may raise anything: keep the readings
                    attempt += 1
                    self._failure(message, attempt, exc)
                    if self._pause(self._retry.delay(attempt, self._rng)):
                        self._buffer.release()
                        return
                    continue
                self._success(message, attempt)
                attempt = 0
                break

    def _next_message(self) -> tuple[OutgoingMessage | None, int]:
        """Wait for a message that is ready to go; (None, 0) when closing."""
        with self._cond:
            while not self._closing:
                try:
                    waiting = self._buffer.peek(PEEK_LIMIT)
                except BufferStoreError as exc:
                    log.error("buffer: %s", exc)
                    self._cond.wait(self._retry.max_s)
                    continue
                if waiting:
                    per_message = min(max(int(self._per_message()), 1), PEEK_LIMIT)
                    message = plan_message(
                        waiting,
                        readings_per_message=per_message,
                        flush=waiting[0].id <= self._flush_upto or len(waiting) >= PEEK_LIMIT,
                    )
                    if message is not None:
                        last_id = waiting[message.count - 1].id
                        self._buffer.hold(last_id)  # the rest may be dropped if the buffer fills
                        return message, last_id
                    self._buffer.release()
                self._cond.wait()
            return None, 0

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (or until closing); True when closing."""
        deadline = time.monotonic() + seconds
        with self._cond:
            while not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def _failure(self, message: OutgoingMessage, attempt: int, exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        with self._cond:
            self._failed += 1
            self._last_error = text
            first = not self._failing
            self._failing = True
        if first:
            self._failing_since = time.monotonic()
            self._last_failure_log = self._failing_since
            log.warning(
                "send of %s failed, kept in the buffer and retried: %s", message.message_id, text
            )
            self._call(self._on_failing, True)
        elif time.monotonic() - self._last_failure_log >= FAILURE_LOG_EVERY_S:
            self._last_failure_log = time.monotonic()
            log.warning(
                "still failing to send (%d attempts, %.0f s; %d readings buffered): %s",
                attempt,
                time.monotonic() - self._failing_since,
                len(self._buffer),
                text,
            )
        else:
            log.debug("send of %s failed (attempt %d): %s", message.message_id, attempt, text)

    def _success(self, message: OutgoingMessage, attempts: int) -> None:
        with self._cond:
            was_failing = self._failing
            self._failing = False
            self._cond.notify_all()  # drain() waits on this
        if was_failing:
            log.info(
                "sending again after %d failed attempts (%.1f s)",
                attempts,
                time.monotonic() - self._failing_since,
            )
            self._call(self._on_failing, False)
        self._call(self._on_sent, message)

    @staticmethod
    def _call(callback: Callable[[_T], None] | None, arg: _T) -> None:
        if callback is None:
            return
        try:
            callback(arg)
        except Exception:  # an LED or a report must never stop the sending
            log.exception("sender: callback %r failed", callback)
