"""One pass of the edge pipeline, and the app loop around it.

One pass: read → calibrate → validate → air quality → envelope. :class:`Pipeline` does the pure-ish
part (it keeps the boot id, the seq counter and the air-quality state); :class:`App` is the loop:
it reads the sensor on a fixed schedule into the durable buffer (:mod:`enviro_sensor.buffer`),
and a sender thread (:mod:`enviro_sensor.sender`) packs and hands them to a Publisher. The loop
only sees small protocols (Sensor, Publisher, Clock, StatusIndicator), never an SDK or driver
object: the hub connection plugs in as a Publisher.

A failed read (SensorError) gives no message: no value is ever made up. It is logged, counted in
the loop's health, and the LED shows the error state until a read works again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from . import __version__
from .airquality import AirQuality
from .buffer import ReadingBuffer
from .calibration import CpuTemperature, calibrate, derived
from .config import ConfigStore, ModuleConfig
from .errors import BufferStoreError, SensorError
from .message import OutgoingMessage, Reading, build_reading, check_device_id, new_boot_id
from .metrics import metric
from .reading import Publisher, RawReading, Sensor
from .sender import RetryPolicy, Sender
from .validation import check_value, validate

log = logging.getLogger(__name__)


class Clock(Protocol):
    """Time, as the loop sees it (injectable for tests)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    def now(self) -> datetime:
        """The current UTC time (timezone-aware)."""
        ...

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        """Sleep up to ``seconds``, waking early when ``stop`` is set; True when stopped."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        """time.monotonic()."""
        return time.monotonic()

    def now(self) -> datetime:
        """datetime.now(UTC)."""
        return datetime.now(UTC)

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        """stop.wait(seconds)."""
        return stop.wait(max(0.0, seconds))


class StatusIndicator(Protocol):
    """The status LED as the loop sees it (enviro_sensor.led.StatusLed fits)."""

    def reading_sent(self) -> None:
        """A short blink: a message went out."""
        ...

    def error(self, active: bool) -> None:
        """Show or clear the error state."""
        ...

    def alert(self, active: bool) -> None:
        """Show or clear the temperature alert."""
        ...


class NullIndicator:
    """No LED."""

    def reading_sent(self) -> None:
        """Do nothing."""

    def error(self, active: bool) -> None:
        """Do nothing."""

    def alert(self, active: bool) -> None:
        """Do nothing."""


@runtime_checkable
class HealthReport(Protocol):
    """Anything that reports itself for the twin (the sensors' SensorHealth fits)."""

    def to_reported(self) -> dict[str, Any]:
        """JSON-ready dict."""
        ...


class Pipeline:
    """read → calibrate → validate → air quality → envelope, for one boot of the module."""

    def __init__(
        self,
        *,
        device_id: str,
        config: ModuleConfig,
        air_quality: AirQuality,
        clock: Clock,
        cpu_temperature: CpuTemperature | None = None,
        boot: str | None = None,
    ) -> None:
        """Create the pipeline for one module start.

        Args:
            device_id: label carried in every message (the hub's id is the identity).
            config: the configuration to apply (replace it with :meth:`set_config`).
            air_quality: the air-quality scorer (keeps the burn-in and baseline).
            clock: gives each reading's timestamp.
            cpu_temperature: smoothed CPU temperature for heat compensation; None = none here.
            boot: the boot id; default a new random one.

        Raises:
            ValueError: the device id cannot travel in a message.
        """
        self._device_id = check_device_id(device_id)
        self._config = config
        self._air_quality = air_quality
        self._clock = clock
        self._cpu = cpu_temperature
        self._boot = boot if boot is not None else new_boot_id()
        self._seq = 0
        self._iaq = metric("iaq")

    @property
    def boot(self) -> str:
        """The boot id of this module start."""
        return self._boot

    @property
    def seq(self) -> int:
        """The seq of the last reading produced (0 before the first)."""
        return self._seq

    @property
    def config(self) -> ModuleConfig:
        """The configuration in force."""
        return self._config

    @property
    def air_quality(self) -> AirQuality:
        """The air-quality scorer."""
        return self._air_quality

    def set_config(self, config: ModuleConfig) -> None:
        """Use ``config`` from the next reading on."""
        self._config = config

    def process(self, raw: RawReading) -> Reading:
        """One reading → one schema-1 reading (the next seq)."""
        config = self._config
        cpu: float | None = None
        if config.calibration.cpu_compensation.enabled and self._cpu is not None:
            cpu = self._cpu.sample()
        calibrated = calibrate(raw, config.calibration, cpu_temperature=cpu)
        checked = validate(calibrated.values, heat_stable=raw.heat_stable)
        values: dict[str, float | int | None] = dict(checked.values)
        extra = validate(derived(values, altitude=config.altitude), heat_stable=True)
        values.update(extra.values)
        gas = values["gasResistance"]
        humidity = values["humidity"]
        iaq_raw = self._air_quality.update(
            None if gas is None else float(gas), None if humidity is None else float(humidity)
        )
        iaq, iaq_flag = check_value(self._iaq, iaq_raw)
        values["iaq"] = iaq
        flags = [*raw.flags, *calibrated.flags, *checked.flags, *extra.flags]
        if iaq_flag is not None:
            flags.append(iaq_flag)
        temperature = values["temperature"]
        alert = temperature is not None and temperature >= config.temperature_high
        self._seq += 1
        return build_reading(
            device_id=self._device_id,
            boot=self._boot,
            seq=self._seq,
            ts=self._clock.now(),
            source=raw.source,
            values=values,
            calibration=config.version,
            flags=flags,
            alert=alert,
        )


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a run did.

    Attributes:
        readings: readings produced (each has a seq).
        failures: reads that failed (no message for them).
        unsent: readings still in the buffer when the run ended (:meth:`App.drain` sends them).
        stopped: the run ended because stop() was called (Ctrl-C, SIGTERM).
    """

    readings: int
    failures: int
    unsent: int
    stopped: bool


class App:
    """The loop: read on a fixed schedule into the buffer; a sender thread publishes from it.

    :meth:`step` reads, processes and appends the reading to the :class:`ReadingBuffer`
    (durably, when the buffer has a file) and wakes the :class:`Sender`, which packs and sends in
    order on its own thread and deletes readings only once the publisher returned (the hub
    acknowledged). So the reading schedule never waits on the network: through an outage, or a
    send that hangs, the loop keeps reading into the buffer.

    Stopping: :meth:`stop` ends :meth:`run`; :meth:`drain` then sends what can be sent within a
    deadline (SIGTERM); :meth:`close` stops the sender. What is left stays in the buffer.
    """

    def __init__(
        self,
        *,
        sensor: Sensor,
        publisher: Publisher,
        pipeline: Pipeline,
        clock: Clock,
        led: StatusIndicator | None = None,
        config_store: ConfigStore | None = None,
        buffer: ReadingBuffer | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Wire the loop (the sender thread starts at the first step, run or drain).

        Args:
            sensor: what to read.
            publisher: where messages go; ``send`` returns once acknowledged, raises otherwise.
            pipeline: turns a raw reading into a schema-1 reading.
            clock: the schedule's clock.
            led: the status LED; None = no LED.
            config_store: where an applied twin patch is persisted; None = not persisted.
            buffer: where readings wait until acknowledged; None = a new in-memory buffer with
                the default bounds (not durable: for the command and tests). The caller closes
                a buffer it passed in.
            retry: delays between send attempts; default :class:`RetryPolicy`.

        Raises:
            TypeError: ``buffer`` is not a ReadingBuffer.
        """
        if buffer is not None and not isinstance(buffer, ReadingBuffer):
            raise TypeError(f"buffer must be a ReadingBuffer, got {type(buffer).__name__}")
        self._sensor = sensor
        self._pipeline = pipeline
        self._clock = clock
        self._led: StatusIndicator = led if led is not None else NullIndicator()
        self._store = config_store
        self._owns_buffer = buffer is None
        self._buffer = buffer if buffer is not None else ReadingBuffer(path=None)
        self._stop = threading.Event()
        self._lock = threading.RLock()  # twin callbacks and direct methods run on other threads
        self._led_lock = threading.Lock()  # the sender thread drives the LED too
        self._reads_ok = 0
        self._reads_failed = 0
        self._consecutive_failures = 0
        self._last_error: str | None = None
        self._write_failures = 0
        self._last_write_error: str | None = None
        self._read_error = False
        self._send_error = False
        self._in_error = False
        self._sender = Sender(
            buffer=self._buffer,
            publisher=publisher,
            readings_per_message=lambda: self.config.readings_per_message,
            retry=retry,
            on_sent=self._sent,
            on_failing=self._sending_fails,
        )

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline."""
        return self._pipeline

    @property
    def config(self) -> ModuleConfig:
        """The configuration in force."""
        return self._pipeline.config

    @property
    def buffer(self) -> ReadingBuffer:
        """The reading buffer."""
        return self._buffer

    def stop(self) -> None:
        """Ask :meth:`run` to finish after the current step (safe from any thread or a signal).

        The sender goes on: call :meth:`drain`, then :meth:`close`.
        """
        self._stop.set()

    def step(self, *, flush: bool = False) -> Reading | None:
        """Read once; process the reading and append it to the buffer; wake the sender.

        Never waits on the network: the sender thread sends.

        Args:
            flush: send this reading (and those before it) without waiting for a full pack of
                ``readingsPerMessage`` (``readNow``).

        Returns:
            The reading, or None when the read failed, or the buffer could not store it (both
            logged and counted in :meth:`reported`; nothing is sent for it).
        """
        with self._lock:
            try:
                raw = self._sensor.read()
            except SensorError as exc:
                self._reads_failed += 1
                self._consecutive_failures += 1
                self._last_error = str(exc)
                log.warning(
                    "sensor read failed (%d in a row), no message for it: %s",
                    self._consecutive_failures,
                    exc,
                )
                self._set_error(read=True)
                return None
            self._reads_ok += 1
            if self._consecutive_failures:
                log.info("sensor reads again after %d failures", self._consecutive_failures)
            self._consecutive_failures = 0
            reading = self._pipeline.process(raw)
            if self.config.led_enabled:
                self._led.alert(reading.alert)
            try:
                self._buffer.append(
                    reading.body,
                    boot=reading.boot,
                    seq=reading.seq,
                    source=reading.source,
                    alert=reading.alert,
                )
            except BufferStoreError as exc:
                self._write_failures += 1
                self._last_write_error = str(exc)
                log.error("reading %s:%d lost: %s", reading.boot, reading.seq, exc)
                self._set_error(read=True)
                return None
            self._set_error(read=False)
        self._sender.start()
        self._sender.notify(flush=flush)
        return reading

    def run(self, *, count: int = 0, interval: float | None = None) -> RunSummary:
        """Read on a fixed schedule until ``count`` reads (0 = until stop()).

        The first read happens at once. Reads are scheduled at fixed intervals from the start, so
        a slow read does not make the schedule drift; a read that overruns skips ahead instead of
        bursting to catch up. Sending happens meanwhile on the sender thread; the run does not
        wait for it at the end (:meth:`drain` does).

        Args:
            count: number of reads (successful or not) to attempt; 0 = run until stop().
            interval: seconds between reads; None = the config's telemetryInterval (re-read
                every time, so a twin patch takes effect at the next read).

        Raises:
            ValueError: ``count`` < 0 or ``interval`` <= 0.
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if interval is not None and not interval > 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        start_ok, start_failed = self._reads_ok, self._reads_failed
        self._sender.start()  # readings left by an earlier run go out first
        next_at = self._clock.monotonic()
        done = 0
        while not self._stop.is_set():
            self.step()
            done += 1
            if count and done >= count:
                break
            next_at += interval if interval is not None else self.config.telemetry_interval
            now = self._clock.monotonic()
            if next_at < now:
                next_at = now
            if self._clock.wait(next_at - now, self._stop):
                break
        return RunSummary(
            readings=self._reads_ok - start_ok,
            failures=self._reads_failed - start_failed,
            unsent=len(self._buffer),
            stopped=self._stop.is_set(),
        )

    def drain(self, timeout_s: float) -> int:
        """Send what is buffered now, short packs included, until done or ``timeout_s`` passed.

        For SIGTERM: stop(), then drain(a few seconds), then close(). Returns at the deadline
        even when a send hangs.

        Returns:
            Readings still in the buffer (on disk for the next start when it has a file).

        Raises:
            ValueError: ``timeout_s`` is negative or not a number.
        """
        left = self._sender.drain(timeout_s)
        if left:
            log.warning("%d readings not sent within %.1f s; kept in the buffer", left, timeout_s)
        return left

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the sender thread (and close the buffer when the App made it). Idempotent."""
        self._sender.close(timeout_s)
        if self._owns_buffer:
            self._buffer.close()

    def apply_desired(self, patch: Mapping[str, Any]) -> ModuleConfig:
        """Apply a twin desired patch as a whole (persisted when a store is set).

        A new ``readingsPerMessage`` applies to the messages packed from then on; readings
        already waiting are packed by the new rule.

        Raises:
            ConfigError: the patch was refused; nothing changed.
        """
        with self._lock:
            old = self.config
            if self._store is not None:
                new = self._store.apply(old, patch)
            else:
                new = old.apply_patch(patch)
            self._pipeline.set_config(new)
            if old.led_enabled and not new.led_enabled:
                with self._led_lock:
                    self._led.error(False)
                    self._led.alert(False)
            log.info("config version %d applied", new.version)
        self._sender.notify()  # a smaller readingsPerMessage may make a pack ready
        return new

    def reset_air_quality(self) -> None:
        """Forget the air-quality baseline and burn in again (direct method)."""
        with self._lock:
            self._pipeline.air_quality.reset()

    def reported(self) -> dict[str, Any]:
        """State for the twin's reported properties (JSON-ready)."""
        buffered = self._buffer.stats()
        sent = self._sender.stats()
        with self._lock:
            health = getattr(self._sensor, "health", None)
            sensor: dict[str, Any] = {"source": self._sensor.source}
            if isinstance(health, HealthReport):
                sensor.update(health.to_reported())
            return {
                "moduleVersion": __version__,
                "configVersion": self.config.version,
                "boot": self._pipeline.boot,
                "sensor": sensor,
                "reads": {
                    "ok": self._reads_ok,
                    "failed": self._reads_failed,
                    "consecutiveFailures": self._consecutive_failures,
                    "lastError": self._last_error,
                },
                "messages": {
                    "sent": sent.messages,
                    "readingsSent": sent.readings,
                    "failedAttempts": sent.failed_attempts,
                    "failing": sent.failing,
                    "lastError": sent.last_error,
                },
                "buffer": {
                    "depth": buffered.depth,
                    "bytes": buffered.bytes,
                    "dropped": buffered.dropped,
                    "maxReadings": self._buffer.limits.max_readings,
                    "maxBytes": self._buffer.limits.max_bytes,
                    "durable": self._buffer.path is not None,
                    "writeFailures": self._write_failures,
                    "lastWriteError": self._last_write_error,
                },
                "airQuality": self._pipeline.air_quality.state(),
            }

    def _sent(self, message: OutgoingMessage) -> None:
        if self.config.led_enabled:
            with self._led_lock:
                self._led.reading_sent()

    def _sending_fails(self, failing: bool) -> None:
        self._set_error(send=failing)

    def _set_error(self, *, read: bool | None = None, send: bool | None = None) -> None:
        with self._led_lock:
            if read is not None:
                self._read_error = read
            if send is not None:
                self._send_error = send
            active = self._read_error or self._send_error
            if active == self._in_error:
                return
            self._in_error = active
            if self.config.led_enabled:
                self._led.error(active)
