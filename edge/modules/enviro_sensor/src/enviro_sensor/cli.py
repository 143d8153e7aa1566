"""``enviro-sensor``: run the edge pipeline from a shell, e.g. to check a Pi's wiring.

Telemetry JSON goes to stdout (with ``--print``), one message per line; logs go to stderr.
Without ``--print`` this is the module itself: it sends to IoT Hub, under IoT Edge or with a
device connection string (see :mod:`enviro_sensor.hubclient`), and says what to set when
neither is there.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, get_args

from . import __version__
from .envvars import unknown_names
from .errors import ConfigError, SensorError, SensorNotFoundError
from .sensors.settings import SensorKind

if TYPE_CHECKING:
    from .config import ConfigStore, ModuleConfig
    from .hubclient import HubClient, HubSettings
    from .reading import Publisher
    from .runner import HubRunner
    from .sensors import SensorSettings

log = logging.getLogger("enviro_sensor")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NO_SENSOR = 3
EXIT_READ_FAILED = 4
EXIT_CONFIG = 5
EXIT_INTERRUPTED = 130

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
CHECK_INTERVAL_S = 1.0
DRAIN_TIMEOUT_S = 3.0  # on SIGTERM: what is not sent by then stays in the buffer
MIN_INTERVAL_S = 0.5  # same bounds as the twin's telemetryInterval (config.py)
MAX_INTERVAL_S = 86_400.0

DESCRIPTION = """\
Read a BME680 or a Pimoroni Enviro board (BME280 + LTR-559 light), or the simulated sensor,
calibrate on the device, and produce schema-1 telemetry. On a Raspberry Pi, run this before
deploying the IoT Edge module to check the wiring: it reads the sensor the same way the module
does."""

EPILOG = """\
examples:
  check the wiring on a Pi (3 readings, 1 s apart; exit code 0 means all went well; the
  default sensor kind "real" finds a BME680 or an Enviro board, or stops with exit code 3):
    enviro-sensor --count 3 --print
  insist on one board:
    enviro-sensor --sensor bme680 --count 3 --print
    enviro-sensor --sensor enviro --count 3 --print
  the sensor answers at 0x77 (Adafruit boards, or Pimoroni's address jumper cut):
    enviro-sensor --sensor bme680 --address 0x77 --count 3 --print
  no hardware: simulated readings, every 2 s until Ctrl-C:
    enviro-sensor --sensor simulated --count 0 --interval 2 --print
  a plain device app (no IoT Edge), sending to IoT Hub:
    IOTHUB_DEVICE_CONNECTION_STRING='HostName=…;DeviceId=…;SharedAccessKey=…' enviro-sensor

The configuration (telemetry interval, calibration, alert threshold) comes from ENVIRO_*
environment variables and the last configuration the module twin sent, kept in --state-dir;
see docs/edge.md. Every message says "source": "simulated" when it is not a real measurement.

exit codes:
  0  every read worked (or stopped with Ctrl-C)
  1  unexpected error
  2  bad option
  3  no sensor found (no /dev/i2c-N, or no chip at 0x76/0x77; the Enviro board's LTR-559 at 0x23)
  4  a read failed during a run with --count
  5  bad configuration (every bad ENVIRO_* variable or setting is named)
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse's own format, but with a pointer to --help instead of the whole usage block.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def _address(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an I2C address (0x76 or 0x77)") from None
    if value not in (0x76, 0x77):
        raise argparse.ArgumentTypeError(
            f"{text} is not a BME680/BME280 address: they answer only at 0x76 or 0x77"
        )
    return value


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not MIN_INTERVAL_S <= value <= MAX_INTERVAL_S:
        raise argparse.ArgumentTypeError(
            f"must be {MIN_INTERVAL_S:g}..{MAX_INTERVAL_S:g} seconds, got {text}"
        )
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (forever) or more, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _oversampling(text: str) -> tuple[int, int, int]:
    from .sensors.settings import parse_oversampling

    try:
        return parse_oversampling(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _default_state_dir() -> Path:
    explicit = _env("ENVIRO_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = _env("XDG_STATE_HOME")
    return (Path(base) if base else Path.home() / ".local" / "state") / "enviro_sensor"


def build_parser() -> argparse.ArgumentParser:
    """The command line (exposed for tests and docs)."""
    parser = _Parser(
        prog="enviro-sensor",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sensor = parser.add_argument_group("sensor")
    sensor.add_argument(
        "--sensor",
        choices=get_args(SensorKind),
        default=None,
        help="real: a BME680, else an Enviro board's BME280 (+ LTR-559), else an error; bme680 / "
        "enviro: that board or an error; auto: like real, but simulated readings (loudly "
        "logged, health 'simulated') when no chip answers at start; simulated: no hardware "
        "(default: $ENVIRO_SENSOR or real)",
    )
    sensor.add_argument(
        "--address",
        type=_address,
        default=None,
        metavar="0x76|0x77",
        help="I2C address of the BME680 or BME280 (default: $ENVIRO_I2C_ADDRESS, or try 0x76 "
        "then 0x77)",
    )
    sensor.add_argument(
        "--bus",
        type=_int,
        default=None,
        metavar="N",
        help="I2C bus number, /dev/i2c-N (default: $ENVIRO_I2C_BUS or 1)",
    )
    sensor.add_argument(
        "--seed",
        type=_int,
        default=None,
        help="seed of the simulated sensor (default: $ENVIRO_SIMULATED_SEED, else derived "
        "from the device id, so devices differ)",
    )
    chip = parser.add_argument_group(
        "BME680 measurement",
        "Start-up settings (a new heater profile means a new air-quality burn-in). "
        "A value out of range is a configuration error (exit code 5).",
    )
    chip.add_argument(
        "--heater-temp",
        type=_int,
        default=None,
        metavar="CELSIUS",
        help="gas heater target, 200..400 °C (default: $ENVIRO_HEATER_TEMPERATURE or 320)",
    )
    chip.add_argument(
        "--heater-ms",
        type=_int,
        default=None,
        metavar="MS",
        help="gas heater duration, 1..4032 ms (default: $ENVIRO_HEATER_DURATION or 150)",
    )
    chip.add_argument(
        "--oversampling",
        type=_oversampling,
        default=None,
        metavar="T,H,P",
        help="oversampling of temperature, humidity and pressure, each 0 (off), 1, 2, 4, 8 or 16 "
        "(default: $ENVIRO_OVERSAMPLING or 8,2,4)",
    )
    chip.add_argument(
        "--filter",
        type=_int,
        default=None,
        metavar="N",
        help="IIR filter size: 0 (off), 1, 3, 7, 15, 31, 63 or 127 "
        "(default: $ENVIRO_FILTER_SIZE or 3)",
    )
    chip.add_argument(
        "--read-retries",
        type=_int,
        default=None,
        metavar="N",
        help="extra attempts when the chip has no new data yet, 0..20 "
        "(default: $ENVIRO_READ_RETRIES or 3)",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--count",
        type=_count,
        default=0,
        metavar="N",
        help="number of readings to take, 0 = until Ctrl-C (default: 0)",
    )
    run.add_argument(
        "--interval",
        type=_interval,
        default=None,
        metavar="SECONDS",
        help=f"seconds between readings (default: {CHECK_INTERVAL_S:g} with --count N, so a "
        "wiring check is quick; the configured telemetryInterval, 10 s unless changed, with "
        "--count 0)",
    )
    run.add_argument(
        "--print",
        action="store_true",
        dest="print_",
        help="print each message's JSON body to stdout, one per line, instead of sending it "
        "to IoT Hub (without --print: under IoT Edge, or $IOTHUB_DEVICE_CONNECTION_STRING)",
    )
    run.add_argument(
        "--device-id",
        default=None,
        help="label in every message (default: $IOTEDGE_DEVICEID, else the host name)",
    )
    run.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the last twin configuration and the air-quality baseline are kept "
        "(default: $ENVIRO_STATE_DIR, else ~/.local/state/enviro_sensor)",
    )
    led = parser.add_argument_group("status LED")
    led.add_argument(
        "--led-pin",
        type=_int,
        default=None,
        metavar="GPIO",
        help="BCM GPIO number of the status LED (default: $ENVIRO_LED_PIN or 17)",
    )
    led.add_argument(
        "--alert-pin",
        type=_int,
        default=None,
        metavar="GPIO",
        help="BCM GPIO of a separate alert LED (default: $ENVIRO_ALERT_PIN, else alerts "
        "blink the status LED fast)",
    )
    led.add_argument("--no-led", action="store_true", help="do not touch GPIO at all")
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=None,
        help="log detail on stderr (default: $ENVIRO_LOG_LEVEL or INFO)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _log_level(option: str | None) -> tuple[str, str | None]:
    """The log level (the option, else $ENVIRO_LOG_LEVEL, else INFO) and any problem with it."""
    if option is not None:
        return option, None
    text = (_env("ENVIRO_LOG_LEVEL") or "INFO").strip().upper()
    if text not in LOG_LEVELS:
        return "INFO", f"ENVIRO_LOG_LEVEL: must be one of {', '.join(LOG_LEVELS)}, got {text!r}"
    return text, None


def _env_int(name: str, value: int | None) -> int | None:
    if value is not None:
        return value
    text = _env(name)
    if text is None:
        return None
    try:
        return int(text, 10)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not a whole number") from None


def _environment(
    args: argparse.Namespace, state_dir: Path
) -> tuple[ModuleConfig, Path, SensorSettings, int, int | None, HubSettings | None]:
    """Everything the options and the environment configure, checked together.

    The config and where it is stored, the sensor settings, the LED pins and (without
    ``--print``) the hub settings.

    Raises:
        ConfigError: naming every bad variable and option at once.
    """
    from .buffer import BufferLimits
    from .config import ConfigStore, ModuleConfig
    from .sensors import SensorSettings

    level_problem = _log_level(args.log_level)[1]
    problems: list[str] = [level_problem] if level_problem else []

    def gather(make: Callable[[], object]) -> object:
        try:
            return make()
        except ConfigError as exc:
            problems.extend(exc.problems)
            return None

    base = gather(ModuleConfig.from_env)
    settings = gather(
        lambda: SensorSettings.from_env(
            overrides={
                "kind": args.sensor,
                "i2c_bus": args.bus,
                "i2c_address": args.address,
                "heater_temperature": args.heater_temp,
                "heater_duration": args.heater_ms,
                "oversampling": args.oversampling,
                "filter_size": args.filter,
                "read_retries": args.read_retries,
                "simulated_seed": args.seed,
            }
        )
    )
    led_pin = gather(lambda: _or(_env_int("ENVIRO_LED_PIN", args.led_pin), 17))
    alert_pin = gather(lambda: _env_int("ENVIRO_ALERT_PIN", args.alert_pin))
    hub: object = None
    if not args.print_:
        from .hubclient import HubSettings

        hub = gather(HubSettings.from_env)
    gather(lambda: BufferLimits.from_env(os.environ))  # used in hub mode; named with the rest
    if problems:
        raise ConfigError("; ".join(problems), problems=problems)
    assert isinstance(base, ModuleConfig) and isinstance(settings, SensorSettings)
    assert isinstance(led_pin, int) and (alert_pin is None or isinstance(alert_pin, int))
    assert hub is None or isinstance(hub, HubSettings)
    store = ConfigStore(path=state_dir / "config.json")
    return store.load(base), store.path, settings, led_pin, alert_pin, hub


def _or(value: int | None, default: int) -> int:
    # Not `value or default`: bus 0 and GPIO 0 are real numbers.
    return default if value is None else value


class PrintPublisher:
    """A Publisher that writes each body as one line to a stream (stdout)."""

    def __init__(self, *, stream: IO[str], on_closed: Callable[[], None]) -> None:
        self._stream = stream
        self._on_closed = on_closed
        self.closed = False

    def send(self, body: bytes, *, message_id: str, properties: dict[str, str]) -> None:
        """Write the body and a newline, flushed so a pipe sees each message at once."""
        if self.closed:
            raise BrokenPipeError("stdout is closed")
        try:
            self._stream.write(body.decode("utf-8") + "\n")
            self._stream.flush()
        except BrokenPipeError:
            # The reader went away (`| head -1`): stop like other Unix tools, quietly.
            self.closed = True
            self._on_closed()
            raise


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.captureWarnings(True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``enviro-sensor`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # A bad $ENVIRO_LOG_LEVEL is reported with the other bad variables (_environment).
    _configure_logging(_log_level(args.log_level)[0])
    for name in unknown_names(os.environ):
        log.warning("unknown environment variable %s is ignored (see docs/edge.md)", name)
    try:
        return _run(args)
    except KeyboardInterrupt:
        # Ctrl-C before the loop started (e.g. while probing the bus).
        print("enviro-sensor: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SensorNotFoundError as exc:
        print(f"enviro-sensor: error: {exc}", file=sys.stderr)
        return EXIT_NO_SENSOR
    except SensorError as exc:
        print(f"enviro-sensor: error: the sensor could not be set up: {exc}", file=sys.stderr)
        return EXIT_NO_SENSOR
    except ConfigError as exc:
        print(f"enviro-sensor: error: bad configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:  # the one place a traceback would otherwise reach the user
        log.debug("unexpected error", exc_info=True)
        print(
            f"enviro-sensor: unexpected error: {type(exc).__name__}: {exc} "
            "(run with --log-level DEBUG for details)",
            file=sys.stderr,
        )
        return EXIT_ERROR


def _run(args: argparse.Namespace) -> int:
    # Imported here, not at the top, so `--help` and bad options answer instantly.
    from .airquality import AirQuality
    from .buffer import FILE_NAME as BUFFER_FILE
    from .buffer import BufferLimits, ReadingBuffer
    from .calibration import CpuTemperature, default_cpu_temperature
    from .message import check_device_id
    from .pipeline import App, Pipeline, StatusIndicator, SystemClock
    from .sensors import open_sensor

    state_dir: Path = args.state_dir or _default_state_dir()
    config, config_path, settings, led_pin, alert_pin, hub_settings = _environment(args, state_dir)
    log.debug("config %s (from environment and %s)", config, config_path)
    hub_device = hub_settings.identity.split("/")[0] if hub_settings is not None else None
    device_id = (
        args.device_id or _env("IOTEDGE_DEVICEID") or hub_device or socket.gethostname() or "enviro"
    )
    try:
        check_device_id(device_id)
    except ValueError as exc:
        raise ConfigError(f"device id {device_id!r}: {exc}") from exc
    if not args.print_ and hub_settings is None:
        # Before the sensor is opened: a module with nowhere to send says so at once.
        from .hubclient import MISSING_HUB_HELP

        raise ConfigError(MISSING_HUB_HELP)
    sensor = open_sensor(settings, device_id=device_id)
    clock = SystemClock()
    led_obj = None
    buffer: ReadingBuffer | None = None  # hub mode: on disk; --print: the App's, in memory
    try:
        # Always there, found at its first use: compensation may be switched on by a twin patch
        # at run time, and a module that never uses it should not pay for importing gpiozero.
        cpu = CpuTemperature(source=None, find=default_cpu_temperature)
        air_quality = AirQuality(
            source=sensor.source,
            state_path=state_dir / f"airquality-{sensor.source}.json",
            # A baseline holds only for the heater profile it was learnt with.
            profile=settings.heater_profile if sensor.source == "bme680" else None,
            clock=clock.monotonic,
            gas_sensor=sensor.source != "bme280",  # the Enviro board has none
        )
        pipeline = Pipeline(
            device_id=device_id,
            config=config,
            air_quality=air_quality,
            clock=clock,
            cpu_temperature=cpu,
        )
        led: StatusIndicator | None = None
        if not args.no_led and config.led_enabled:
            from .led import StatusLed

            led_obj = StatusLed(pin=led_pin, alert_pin=alert_pin)
            led = led_obj
        app_holder: list[App] = []
        publisher: Publisher
        hub_client: HubClient | None = None
        store: ConfigStore | None = None
        if hub_settings is not None:
            from .config import ConfigStore
            from .hubclient import HubClient

            publisher = hub_client = HubClient(settings=hub_settings)
            store = ConfigStore(path=config_path)
            limits = BufferLimits.from_env(os.environ)  # checked with the others in _environment
            buffer = ReadingBuffer(
                path=state_dir / BUFFER_FILE,
                max_readings=limits.max_readings,
                max_bytes=limits.max_bytes,
            )
        else:
            publisher = PrintPublisher(stream=sys.stdout, on_closed=lambda: app_holder[0].stop())
        app = App(
            sensor=sensor,
            publisher=publisher,
            pipeline=pipeline,
            clock=clock,
            led=led,
            config_store=store,
            buffer=buffer,
        )
        app_holder.append(app)
        interval = args.interval
        if interval is None and args.count > 0:
            interval = CHECK_INTERVAL_S
        log.info(
            "enviro-sensor %s: device %s, boot %s, source %s, %s every %s s",
            __version__,
            device_id,
            pipeline.boot,
            sensor.source,
            f"{args.count} readings" if args.count else "readings until Ctrl-C",
            f"{interval:g}" if interval is not None else f"{config.telemetry_interval:g}",
        )
        runner: HubRunner | None = None
        with _StopOnSignals(app.stop):
            try:
                if hub_client is not None and hub_settings is not None:
                    from .config import ModuleConfig
                    from .runner import start_hub

                    log.info("hub: %r", hub_settings)
                    runner = start_hub(
                        client=hub_client,
                        app=app,
                        base=ModuleConfig.from_env(),
                        led=led_obj,
                        report_interval=hub_settings.report_interval,
                    )
                summary = app.run(count=args.count, interval=interval)
                if hub_client is None and not getattr(publisher, "closed", False):
                    app.drain(DRAIN_TIMEOUT_S)  # --print: the buffer is in memory, print it all
            finally:
                if hub_client is not None:
                    from .runner import stop_hub

                    if runner is None:
                        hub_client.close()
                    else:
                        stop_hub(runner, hub_client, app, drain_timeout=DRAIN_TIMEOUT_S)
                app.close()
    finally:
        if led_obj is not None:
            led_obj.close()
        if buffer is not None:
            buffer.close()
        sensor.close()
    if isinstance(publisher, PrintPublisher) and publisher.closed:
        # Keep the interpreter from complaining about the closed pipe when it flushes at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    if summary.failures and args.count and not summary.stopped:
        print(
            f"enviro-sensor: error: {summary.failures} of {summary.failures + summary.readings} "
            "reads failed (see the log above)",
            file=sys.stderr,
        )
        return EXIT_READ_FAILED
    return EXIT_OK


class _StopOnSignals:
    """Route SIGINT and SIGTERM to ``stop`` while the loop runs (main thread only).

    A second Ctrl-C raises KeyboardInterrupt, for when the current step does not finish.
    """

    def __init__(self, stop: Callable[[], None]) -> None:
        self._stop = stop
        self._stopping = False
        self._saved: dict[int, object] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping and signum == signal.SIGINT:
            # A second Ctrl-C: the user does not want to wait (e.g. an I2C read hangs).
            raise KeyboardInterrupt
        self._stopping = True
        log.info("%s: stopping after the current reading", signal.Signals(signum).name)
        self._stop()

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._saved[sig] = signal.signal(sig, self._handler)

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._saved.items():
            signal.signal(sig, old)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
