"""Module configuration: a frozen, validated dataclass from the environment, CLI or module twin.

The twin's desired properties have this shape (every key optional in a patch)::

    {"telemetryInterval": 10, "readingsPerMessage": 1,
     "calibration": {"temperature": {"slope": 1.0, "intercept": 0.0},
                     "humidity": {"slope": 1.0, "intercept": 0.0},
                     "pressure": {"slope": 1.0, "intercept": 0.0},
                     "cpuCompensation": {"enabled": false, "factor": 2.25}},
     "alerts": {"temperatureHigh": 30.0}, "led": {"enabled": true},
     "$version": 3}

A patch is validated as a whole: one bad field raises :class:`ConfigError` naming the field and
the reason, and nothing changes. A ``null`` value resets that field to its default (in a twin,
null removes a property). Keys starting with ``$`` other than ``$version`` are ignored (the hub
adds ``$metadata``); any other unknown key is refused, so a typo never goes unnoticed.

Environment variables (read by :meth:`ModuleConfig.from_env`; each is optional):

=============================================  =======================================  =======
variable                                       twin field                               default
=============================================  =======================================  =======
``ENVIRO_TELEMETRY_INTERVAL``                  ``telemetryInterval`` (s, 0.5…86400)     10
``ENVIRO_READINGS_PER_MESSAGE``                ``readingsPerMessage`` (1…500)           1
``ENVIRO_TEMPERATURE_SLOPE`` / ``_INTERCEPT``  ``calibration.temperature``              1 / 0
``ENVIRO_HUMIDITY_SLOPE`` / ``_INTERCEPT``     ``calibration.humidity``                 1 / 0
``ENVIRO_PRESSURE_SLOPE`` / ``_INTERCEPT``     ``calibration.pressure``                 1 / 0
``ENVIRO_CPU_COMPENSATION``                    ``calibration.cpuCompensation.enabled``  false
``ENVIRO_CPU_COMPENSATION_FACTOR``             ``calibration.cpuCompensation.factor``   2.25
``ENVIRO_TEMPERATURE_HIGH``                    ``alerts.temperatureHigh`` (°C)          30
``ENVIRO_LED_ENABLED``                         ``led.enabled``                          true
=============================================  =======================================  =======

The sensor's start-up settings come from the environment too, read by
:meth:`enviro_sensor.sensors.SensorSettings.from_env` (the ``enviro-sensor`` options win over
them). They are deliberately not twin fields: the gas resistance, and so the air-quality baseline,
depends on the heater profile, so changing it means re-initialising the chip and burning in
again; a deployment change (which restarts the module) is the safe way to do that.

=============================  =========================================  ==================
variable                       setting (command-line option)              default
=============================  =========================================  ==================
``ENVIRO_SENSOR``              auto | bme680 | simulated (--sensor)       auto
``ENVIRO_I2C_BUS``             /dev/i2c-N (--bus)                         1
``ENVIRO_I2C_ADDRESS``         0x76 or 0x77 (--address)                   probe both
``ENVIRO_HEATER_TEMPERATURE``  °C, 200…400 (--heater-temp)                320
``ENVIRO_HEATER_DURATION``     ms, 1…4032 (--heater-ms)                   150
``ENVIRO_OVERSAMPLING``        T,H,P, each 0/1/2/4/8/16 (--oversampling)  8,2,4
``ENVIRO_FILTER_SIZE``         0/1/3/7/15/31/63/127 (--filter)            3
``ENVIRO_READ_RETRIES``        0…20 (--read-retries)                      3
``ENVIRO_SIMULATED_SEED``      integer (--seed)                           from the device id
=============================  =========================================  ==================

The last good configuration is persisted by :class:`ConfigStore` (atomically: a temporary file,
then ``os.replace``), so a restart without a network still calibrates.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError
from .metrics import calibrated_keys, metric

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 0.5
MAX_INTERVAL_S = 86_400.0
MAX_READINGS_PER_MESSAGE = 500  # the schema's maxItems for a packed body
MAX_SLOPE = 10.0
MIN_CPU_FACTOR = 0.1
MAX_CPU_FACTOR = 100.0
STORE_FORMAT = 1

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class Linear:
    """``value × slope + intercept`` (the original enviromon calibration table)."""

    slope: float = 1.0
    intercept: float = 0.0


@dataclass(frozen=True, slots=True)
class CpuCompensation:
    """Pimoroni's CPU-heat correction ``raw − (cpu − raw) / factor``."""

    enabled: bool = False
    factor: float = 2.25


@dataclass(frozen=True, slots=True)
class Calibration:
    """Calibration for each calibrated quantity, plus the CPU-heat compensation."""

    temperature: Linear = field(default_factory=Linear)
    humidity: Linear = field(default_factory=Linear)
    pressure: Linear = field(default_factory=Linear)
    cpu_compensation: CpuCompensation = field(default_factory=CpuCompensation)

    def linear(self, key: str) -> Linear:
        """The slope/intercept of a calibrated metric key."""
        value = getattr(self, key)
        assert isinstance(value, Linear)
        return value


@dataclass(frozen=True, slots=True)
class ModuleConfig:
    """The module's validated configuration. Build it with the class methods, not by hand.

    Attributes:
        telemetry_interval: seconds between readings.
        readings_per_message: readings packed into one message body (1 = a single object).
        calibration: slope/intercept per quantity and CPU-heat compensation.
        temperature_high: °C at or above which a reading raises the temperature alert.
        led_enabled: whether the status LED is driven.
        version: the twin ``$version`` of the configuration applied (0 = none); it travels in
            every message as ``calibration``.
    """

    telemetry_interval: float = 10.0
    readings_per_message: int = 1
    calibration: Calibration = field(default_factory=Calibration)
    temperature_high: float = 30.0
    led_enabled: bool = True
    version: int = 0

    def __post_init__(self) -> None:
        # Direct construction is checked too: the same rules as a patch.
        problems = _check(self)
        if problems:
            raise ConfigError("; ".join(problems))

    def apply_patch(self, patch: Mapping[str, Any]) -> ModuleConfig:
        """A new config with a twin desired patch applied; ``self`` is never changed.

        Raises:
            ConfigError: any field is unknown, of the wrong type or out of range; the message
                names every bad field and why.
        """
        if not isinstance(patch, Mapping):
            raise ConfigError(f"desired properties: expected an object, got {_type(patch)}")
        problems: list[str] = []
        merged = _merge(self, patch, problems)
        # A field of the wrong type kept its current value in ``merged``, so the range checks
        # still mean something and the message lists every problem at once.
        problems.extend(_check(merged))
        if problems:
            raise ConfigError("config refused: " + "; ".join(problems))
        return merged

    def to_desired(self) -> dict[str, Any]:
        """The config in the twin's desired shape (with ``$version``)."""
        cal = self.calibration
        out: dict[str, Any] = {
            "telemetryInterval": self.telemetry_interval,
            "readingsPerMessage": self.readings_per_message,
            "calibration": {
                key: {"slope": cal.linear(key).slope, "intercept": cal.linear(key).intercept}
                for key in calibrated_keys()
            },
            "alerts": {"temperatureHigh": self.temperature_high},
            "led": {"enabled": self.led_enabled},
            "$version": self.version,
        }
        out["calibration"]["cpuCompensation"] = {
            "enabled": cal.cpu_compensation.enabled,
            "factor": cal.cpu_compensation.factor,
        }
        return out

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, base: ModuleConfig | None = None
    ) -> ModuleConfig:
        """``base`` (default: the defaults) with the ``ENVIRO_*`` variables applied.

        Raises:
            ConfigError: a variable does not parse or is out of range (named in the message).
        """
        env = os.environ if environ is None else environ
        patch: dict[str, Any] = {}
        problems: list[str] = []

        def put(var: str, path: tuple[str, ...], kind: str) -> None:
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                return
            value: Any
            text = raw.strip()
            if kind == "bool":
                if text.lower() in _TRUE:
                    value = True
                elif text.lower() in _FALSE:
                    value = False
                else:
                    problems.append(f"{var}: expected true/false, got {text!r}")
                    return
            else:
                try:
                    value = int(text) if kind == "int" else float(text)
                except ValueError:
                    problems.append(f"{var}: expected a number, got {text!r}")
                    return
            node = patch
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value

        put("ENVIRO_TELEMETRY_INTERVAL", ("telemetryInterval",), "float")
        put("ENVIRO_READINGS_PER_MESSAGE", ("readingsPerMessage",), "int")
        for key in calibrated_keys():
            upper = _env_name(key)
            put(f"ENVIRO_{upper}_SLOPE", ("calibration", key, "slope"), "float")
            put(f"ENVIRO_{upper}_INTERCEPT", ("calibration", key, "intercept"), "float")
        put("ENVIRO_CPU_COMPENSATION", ("calibration", "cpuCompensation", "enabled"), "bool")
        put("ENVIRO_CPU_COMPENSATION_FACTOR", ("calibration", "cpuCompensation", "factor"), "float")
        put("ENVIRO_TEMPERATURE_HIGH", ("alerts", "temperatureHigh"), "float")
        put("ENVIRO_LED_ENABLED", ("led", "enabled"), "bool")
        if problems:
            raise ConfigError("environment refused: " + "; ".join(problems))
        start = base if base is not None else cls()
        try:
            return start.apply_patch(patch)
        except ConfigError as exc:
            raise ConfigError(f"environment refused: {exc}") from exc


def _env_name(key: str) -> str:
    out = "".join(f"_{c}" if c.isupper() else c for c in key)
    return out.upper()


def _type(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _number(value: object, name: str, problems: list[str]) -> float | None:
    # bool is an int subclass in Python, but true is not a number in a twin.
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(f"{name}: expected a number, got {_type(value)}")
        return None
    number = float(value)
    if not math.isfinite(number):
        problems.append(f"{name}: must be finite, got {value!r}")
        return None
    return number


def _integer(value: object, name: str, problems: list[str]) -> int | None:
    if isinstance(value, bool):
        problems.append(f"{name}: expected an integer, got bool")
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, int):
        problems.append(f"{name}: expected an integer, got {_type(value)}")
        return None
    return value


def _boolean(value: object, name: str, problems: list[str]) -> bool | None:
    if not isinstance(value, bool):
        problems.append(f"{name}: expected true or false, got {_type(value)}")
        return None
    return value


def _section(value: object, name: str, problems: list[str]) -> Mapping[str, Any] | None:
    if not isinstance(value, Mapping):
        problems.append(f"{name}: expected an object, got {_type(value)}")
        return None
    return value


def _unknown(section: Mapping[str, Any], known: set[str], prefix: str, problems: list[str]) -> None:
    for key in section:
        if not isinstance(key, str):
            problems.append(f"{prefix}{key!r}: unknown field")
        elif key not in known and not key.startswith("$"):
            problems.append(f"{prefix}{key}: unknown field")


_T = TypeVar("_T")


def _pick(
    section: Mapping[str, Any],
    key: str,
    name: str,
    *,
    current: _T,
    default: _T,
    parse: Callable[[object, str, list[str]], _T | None],
    problems: list[str],
) -> _T:
    """One field of a patch: absent keeps ``current``, null resets to ``default``.

    A value that does not parse is a problem (recorded) and keeps ``current``, so the range
    checks that follow still mean something and every problem is listed at once.
    """
    if key not in section:
        return current
    raw = section[key]
    if raw is None:
        return default
    got = parse(raw, name, problems)
    return current if got is None else got


def _open(
    parent: Mapping[str, Any], key: str, known: set[str], prefix: str, problems: list[str]
) -> tuple[bool, Mapping[str, Any] | None]:
    """One object of a patch: (reset to defaults?, the object to merge or None)."""
    if key not in parent:
        return False, None
    value = parent[key]
    if value is None:
        return True, None
    name = prefix + key
    section = _section(value, name, problems)
    if section is not None:
        _unknown(section, known, f"{name}.", problems)
    return False, section


_Part = TypeVar("_Part", Linear, CpuCompensation)


def _merge_part(
    part: _Part,
    item: Mapping[str, Any],
    name: str,
    parsers: Mapping[str, Callable[[object, str, list[str]], Any]],
    problems: list[str],
) -> _Part:
    # The twin's field names are the dataclass's attribute names here (slope, enabled, ...).
    fresh = type(part)()
    return replace(
        part,
        **{
            attr: _pick(
                item,
                attr,
                f"{name}.{attr}",
                current=getattr(part, attr),
                default=getattr(fresh, attr),
                parse=parse,
                problems=problems,
            )
            for attr, parse in parsers.items()
        },
    )


def _merge_calibration(
    cal: Calibration, patch: Mapping[str, Any], problems: list[str]
) -> Calibration:
    keys = calibrated_keys()
    reset, section = _open(patch, "calibration", {*keys, "cpuCompensation"}, "", problems)
    if reset:
        return Calibration()
    if section is None:
        return cal
    # twin key -> (Calibration attribute, parser of each field)
    parts: dict[str, tuple[str, dict[str, Callable[[object, str, list[str]], Any]]]] = {
        key: (key, {"slope": _number, "intercept": _number}) for key in keys
    }
    parts["cpuCompensation"] = ("cpu_compensation", {"enabled": _boolean, "factor": _number})
    changes: dict[str, Any] = {}
    for key, (attr, parsers) in parts.items():
        reset, item = _open(section, key, set(parsers), "calibration.", problems)
        part = getattr(cal, attr)
        if reset:
            changes[attr] = type(part)()
        elif item is not None:
            changes[attr] = _merge_part(part, item, f"calibration.{key}", parsers, problems)
    return replace(cal, **changes)


def _merge(current: ModuleConfig, patch: Mapping[str, Any], problems: list[str]) -> ModuleConfig:
    """Apply a patch field by field, collecting every problem instead of stopping at one."""
    defaults = ModuleConfig()
    _unknown(
        patch,
        {"telemetryInterval", "readingsPerMessage", "calibration", "alerts", "led"},
        "",
        problems,
    )
    interval = _pick(
        patch,
        "telemetryInterval",
        "telemetryInterval",
        current=current.telemetry_interval,
        default=defaults.telemetry_interval,
        parse=_number,
        problems=problems,
    )
    per_message = _pick(
        patch,
        "readingsPerMessage",
        "readingsPerMessage",
        current=current.readings_per_message,
        default=defaults.readings_per_message,
        parse=_integer,
        problems=problems,
    )
    cal = _merge_calibration(current.calibration, patch, problems)

    high = current.temperature_high
    reset, section = _open(patch, "alerts", {"temperatureHigh"}, "", problems)
    if reset:
        high = defaults.temperature_high
    elif section is not None:
        high = _pick(
            section,
            "temperatureHigh",
            "alerts.temperatureHigh",
            current=high,
            default=defaults.temperature_high,
            parse=_number,
            problems=problems,
        )

    led = current.led_enabled
    reset, section = _open(patch, "led", {"enabled"}, "", problems)
    if reset:
        led = defaults.led_enabled
    elif section is not None:
        led = _pick(
            section,
            "enabled",
            "led.enabled",
            current=led,
            default=defaults.led_enabled,
            parse=_boolean,
            problems=problems,
        )

    version = current.version
    if "$version" in patch:
        got_v = _integer(patch["$version"], "$version", problems)
        if got_v is not None and got_v < 0:
            problems.append(f"$version: must be >= 0, got {got_v}")
        elif got_v is not None:
            version = got_v

    # object.__new__ + setattr skips __post_init__ on purpose: the caller runs _check itself, so
    # the message can list every problem under one "config refused" prefix.
    candidate = object.__new__(ModuleConfig)
    for name, value in (
        ("telemetry_interval", interval),
        ("readings_per_message", per_message),
        ("calibration", cal),
        ("temperature_high", high),
        ("led_enabled", led),
        ("version", version),
    ):
        object.__setattr__(candidate, name, value)
    return candidate


def _check(config: ModuleConfig) -> list[str]:
    """Range checks on a whole config; each problem names the twin field."""
    problems: list[str] = []
    if not MIN_INTERVAL_S <= config.telemetry_interval <= MAX_INTERVAL_S:
        problems.append(
            f"telemetryInterval: must be {MIN_INTERVAL_S:g}..{MAX_INTERVAL_S:g} s, "
            f"got {config.telemetry_interval!r}"
        )
    if not 1 <= config.readings_per_message <= MAX_READINGS_PER_MESSAGE:
        problems.append(
            f"readingsPerMessage: must be 1..{MAX_READINGS_PER_MESSAGE}, "
            f"got {config.readings_per_message!r}"
        )
    for key in calibrated_keys():
        lin = config.calibration.linear(key)
        m = metric(key)
        span = m.max - m.min
        if not (math.isfinite(lin.slope) and 0 < lin.slope <= MAX_SLOPE):
            problems.append(
                f"calibration.{key}.slope: must be > 0 and <= {MAX_SLOPE:g}, got {lin.slope!r}"
            )
        # An intercept wider than the metric's whole range can only be a mistake.
        if not (math.isfinite(lin.intercept) and abs(lin.intercept) <= span):
            problems.append(
                f"calibration.{key}.intercept: must be within ±{span:g} {m.unit}, "
                f"got {lin.intercept!r}"
            )
    factor = config.calibration.cpu_compensation.factor
    if not (math.isfinite(factor) and MIN_CPU_FACTOR <= factor <= MAX_CPU_FACTOR):
        problems.append(
            f"calibration.cpuCompensation.factor: must be {MIN_CPU_FACTOR:g}..{MAX_CPU_FACTOR:g}, "
            f"got {factor!r}"
        )
    temp = metric("temperature")
    if not (math.isfinite(config.temperature_high) and temp.in_range(config.temperature_high)):
        problems.append(
            f"alerts.temperatureHigh: must be {temp.min:g}..{temp.max:g} {temp.unit}, "
            f"got {config.temperature_high!r}"
        )
    if config.version < 0:
        problems.append(f"$version: must be >= 0, got {config.version!r}")
    return problems


class ConfigStore:
    """The last good configuration on disk, written atomically.

    The file holds the config in the twin's desired shape. A missing file means "no twin config
    yet"; a corrupt or invalid one is logged as a warning and ignored, never fatal: the module
    then runs on its defaults (and the environment) until the next twin patch.
    """

    def __init__(self, *, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)

    @property
    def path(self) -> Path:
        """Where the config is kept."""
        return self._path

    def load(self, base: ModuleConfig) -> ModuleConfig:
        """``base`` with the stored config applied, or ``base`` when there is none usable."""
        try:
            raw = self._path.read_bytes()
        except FileNotFoundError:
            return base
        except OSError as exc:
            log.warning("cannot read stored config %s (%s); using defaults", self._path, exc)
            return base
        try:
            data = json.loads(raw.decode("utf-8"))
            if not isinstance(data, dict) or data.get("format") != STORE_FORMAT:
                raise ConfigError("not a stored config (format)")
            return base.apply_patch(data["desired"])
        except (ValueError, KeyError, TypeError) as exc:
            # ConfigError is a ValueError, as is json.JSONDecodeError.
            log.warning("stored config %s is unusable (%s); using defaults", self._path, exc)
            return base

    def save(self, config: ModuleConfig) -> None:
        """Write ``config`` atomically: a temporary file in the same folder, then os.replace.

        Raises:
            OSError: the folder cannot be created or written.
        """
        body = json.dumps({"format": STORE_FORMAT, "desired": config.to_desired()}, indent=1)
        write_atomic(self._path, body.encode("utf-8"))

    def apply(self, current: ModuleConfig, patch: Mapping[str, Any]) -> ModuleConfig:
        """Validate a patch against ``current``, persist the result, and return it.

        Nothing is written when the patch is refused. When the write itself fails, the new
        config is still returned (it is valid) and the failure is logged: it takes effect now
        and is lost only if the module restarts before the next successful save.

        Raises:
            ConfigError: the patch was refused; nothing changed, in memory or on disk.
        """
        new = current.apply_patch(patch)
        try:
            self.save(new)
        except OSError as exc:
            log.error(
                "config version %d applied but not persisted to %s: %s",
                new.version,
                self._path,
                exc,
            )
        return new


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old file or the new, never half.

    Raises:
        OSError: the write failed; ``path`` is unchanged.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
