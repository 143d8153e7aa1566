"""Module configuration: a frozen, validated dataclass from the environment, CLI or module twin.

The twin's desired properties are described once, as a JSON Schema:
``contract/twin-desired-v1.schema.json`` (the package ships a copy). Their shape (every key
optional)::

    {"telemetryInterval": 10, "readingsPerMessage": 1, "altitude": 230,
     "calibration": {"temperature": {"slope": 1.0, "intercept": 0.0},
                     "humidity": {"slope": 1.0, "intercept": 0.0},
                     "pressure": {"slope": 1.0, "intercept": 0.0},
                     "cpuCompensation": {"enabled": false, "factor": 2.25}},
     "alerts": {"temperatureHigh": 30.0}, "led": {"enabled": true},
     "$version": 3}

Applying a patch: the patch is merged onto the config in force the JSON Merge Patch way
(RFC 7396: an object merges key by key, a ``null`` removes the property, so it goes back to its
default, anything else replaces), and the result is validated against the schema with
``jsonschema``. One bad field refuses the patch as a whole, and :class:`ConfigError` names every
bad field and why, at once; nothing changes. Keys starting with ``$`` other than ``$version``
are dropped first (the hub adds ``$metadata``); any other unknown key is refused, so a typo never
goes unnoticed. A full desired document is a patch like any other: ``base.apply_patch(doc)``.

The environment variables that set twin fields are listed in :mod:`enviro_sensor.envvars` (and
docs/edge.md); :meth:`ModuleConfig.from_env` reads them.

The last good configuration is persisted by :class:`ConfigStore` (atomically: a temporary file,
then ``os.replace``), so a restart without a network still calibrates.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from .envvars import twin_variables
from .errors import ConfigError
from .metrics import calibrated_keys, read_contract

log = logging.getLogger(__name__)

DESIRED_SCHEMA = "twin-desired-v1.schema.json"
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
class Problem:
    """One reason a configuration was refused: the field (dotted twin path) and why."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ModuleConfig:
    """The module's validated configuration.

    Build it with :meth:`apply_patch` / :meth:`from_env`; direct construction is checked against
    the same schema.

    Attributes:
        telemetry_interval: seconds between readings.
        readings_per_message: readings packed into one message body (1 = a single object).
        calibration: slope/intercept per quantity and CPU-heat compensation.
        temperature_high: °C at or above which a reading raises the temperature alert.
        led_enabled: whether the status LED is driven.
        altitude: metres above sea level, or None; when set, readings carry the derived
            sea-level pressure.
        version: the twin ``$version`` of the configuration applied (0 = none); it travels in
            every message as ``calibration``.
    """

    telemetry_interval: float = 10.0
    readings_per_message: int = 1
    calibration: Calibration = field(default_factory=Calibration)
    temperature_high: float = 30.0
    led_enabled: bool = True
    altitude: float | None = None
    version: int = 0

    def __post_init__(self) -> None:
        problems = check_desired(self.to_desired())
        if problems:
            raise ConfigError(
                "; ".join(str(p) for p in problems), problems=[str(p) for p in problems]
            )

    def apply_patch(self, patch: Mapping[str, Any]) -> ModuleConfig:
        """A new config with a twin desired patch (or a whole desired document) applied.

        ``self`` is never changed.

        Raises:
            ConfigError: any field is unknown, of the wrong type or out of range; the message
                names every bad field and why.
        """
        if not isinstance(patch, Mapping):
            raise ConfigError(f"desired properties: expected an object, got {_json_type(patch)}")
        merged = merge_patch(self.to_desired(), _without_metadata(patch))
        if "$version" in patch:
            # Not merge semantics: a null $version is an error, not "back to 0".
            merged["$version"] = patch["$version"]
        problems = check_desired(merged)
        if problems:
            raise ConfigError(
                "config refused: " + "; ".join(str(p) for p in problems),
                problems=[str(p) for p in problems],
            )
        return ModuleConfig.from_desired(merged)

    def to_desired(self) -> dict[str, Any]:
        """The config in the twin's desired shape (with ``$version``)."""
        cal = self.calibration
        calibration: dict[str, Any] = {
            key: {"slope": cal.linear(key).slope, "intercept": cal.linear(key).intercept}
            for key in calibrated_keys()
        }
        calibration["cpuCompensation"] = {
            "enabled": cal.cpu_compensation.enabled,
            "factor": cal.cpu_compensation.factor,
        }
        out: dict[str, Any] = {
            "telemetryInterval": self.telemetry_interval,
            "readingsPerMessage": self.readings_per_message,
            "calibration": calibration,
            "alerts": {"temperatureHigh": self.temperature_high},
            "led": {"enabled": self.led_enabled},
            "$version": self.version,
        }
        if self.altitude is not None:
            out["altitude"] = self.altitude
        return out

    @classmethod
    def from_desired(cls, document: Mapping[str, Any]) -> ModuleConfig:
        """The config a whole desired document describes; absent fields take their defaults.

        Raises:
            ConfigError: the document does not validate (every problem named).
        """
        problems = check_desired(document)
        if problems:
            raise ConfigError(
                "config refused: " + "; ".join(str(p) for p in problems),
                problems=[str(p) for p in problems],
            )
        cal = document.get("calibration", {})

        def linear(key: str) -> Linear:
            item, base = cal.get(key, {}), Linear()
            return Linear(
                slope=float(item.get("slope", base.slope)),
                intercept=float(item.get("intercept", base.intercept)),
            )

        comp, base_comp = cal.get("cpuCompensation", {}), CpuCompensation()
        defaults = cls()
        altitude = document.get("altitude")
        return cls(
            telemetry_interval=float(
                document.get("telemetryInterval", defaults.telemetry_interval)
            ),
            readings_per_message=int(
                document.get("readingsPerMessage", defaults.readings_per_message)
            ),
            calibration=Calibration(
                temperature=linear("temperature"),
                humidity=linear("humidity"),
                pressure=linear("pressure"),
                cpu_compensation=CpuCompensation(
                    enabled=bool(comp.get("enabled", base_comp.enabled)),
                    factor=float(comp.get("factor", base_comp.factor)),
                ),
            ),
            temperature_high=float(
                document.get("alerts", {}).get("temperatureHigh", defaults.temperature_high)
            ),
            led_enabled=bool(document.get("led", {}).get("enabled", defaults.led_enabled)),
            altitude=None if altitude is None else float(altitude),
            version=int(document.get("$version", defaults.version)),
        )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, base: ModuleConfig | None = None
    ) -> ModuleConfig:
        """``base`` (default: the defaults) with the ``ENVIRO_*`` twin-field variables applied.

        Raises:
            ConfigError: naming every variable that does not parse or is out of range.
        """
        env = os.environ if environ is None else environ
        patch: dict[str, Any] = {}
        problems: list[str] = []
        by_field: dict[str, str] = {}
        for var in twin_variables():
            assert var.field is not None
            by_field[var.field] = var.name
            text = env.get(var.name, "").strip()
            if not text:
                continue
            try:
                value = _parse_env(text, var.kind)
            except ValueError as exc:
                problems.append(f"{var.name}: {exc}")
                continue
            node = patch
            *parents, leaf = var.field.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        start = base if base is not None else cls()
        merged = merge_patch(start.to_desired(), patch)
        for problem in check_desired(merged):
            name = by_field.get(problem.field)
            label = f"{name} ({problem.field})" if name else problem.field
            problems.append(f"{label}: {problem.reason}")
        if problems:
            raise ConfigError("environment refused: " + "; ".join(problems), problems=problems)
        return cls.from_desired(merged)


def _parse_env(text: str, kind: str) -> Any:
    if kind == "boolean":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"expected true/false, got {text!r}")
    try:
        return int(text) if kind == "integer" else float(text)
    except ValueError:
        what = "a whole number" if kind == "integer" else "a number"
        raise ValueError(f"expected {what}, got {text!r}") from None


# -- the schema and what its errors say ---------------------------------------------------------


@cache
def desired_schema() -> dict[str, Any]:
    """The module twin's desired-properties JSON Schema (Draft 2020-12)."""
    schema: dict[str, Any] = read_contract(DESIRED_SCHEMA)
    return schema


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(desired_schema())


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7396 JSON Merge Patch: objects merge key by key, null removes, the rest replaces.

    Neither argument is changed.
    """
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_patch(out[key], value)
        elif isinstance(value, Mapping):
            out[key] = merge_patch({}, value)
        else:
            out[key] = value
    return out


def _without_metadata(patch: Mapping[str, Any], *, top: bool = True) -> dict[str, Any]:
    """The patch without the hub's ``$`` keys (``$version`` at the top is kept)."""
    out: dict[str, Any] = {}
    for key, value in patch.items():
        if isinstance(key, str) and key.startswith("$") and not (top and key == "$version"):
            continue
        out[key] = _without_metadata(value, top=False) if isinstance(value, Mapping) else value
    return out


def check_desired(document: Mapping[str, Any]) -> list[Problem]:
    """Every problem with a whole desired document, sorted by field; empty when it is valid."""
    problems = list(_non_finite(document, ()))
    for error in _validator().iter_errors(document):
        problems.extend(_explain(error))
    return sorted(set(problems), key=lambda p: (p.field, p.reason))


def _dotted(path: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in path) or "desired properties"


def _non_finite(node: Any, path: tuple[Any, ...]) -> Iterator[Problem]:
    # JSON has no NaN or infinity, but Python's json module reads them, and a JSON Schema
    # range check lets NaN through (every comparison with it is false).
    if isinstance(node, Mapping):
        for key, value in node.items():
            if not isinstance(key, str):
                yield Problem(_dotted((*path, repr(key))), "unknown field")
            else:
                yield from _non_finite(value, (*path, key))
    elif isinstance(node, float) and not math.isfinite(node):
        yield Problem(_dotted(path), f"must be finite, got {node!r}")


_TYPE_WORDS = {
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "object": "an object",
    "string": "a string",
}


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def _range_text(schema: Mapping[str, Any]) -> str:
    unit = str(schema.get("x-unit", ""))
    low, above, high = schema.get("minimum"), schema.get("exclusiveMinimum"), schema.get("maximum")
    if low is not None and high is not None:
        return f"{low:g}..{high:g}{unit}"
    if above is not None and high is not None:
        return f"> {above:g} and <= {high:g}{unit}"
    if low is not None:
        return f">= {low:g}{unit}"
    if above is not None:
        return f"> {above:g}{unit}"
    return f"<= {high:g}{unit}"


def _explain(error: jsonschema.ValidationError) -> Iterator[Problem]:
    path = list(error.absolute_path)
    where = _dotted(path)
    kind = error.validator
    if kind == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        patterns = list(error.schema.get("patternProperties", {}))
        for key in error.instance:
            if key not in known and not any(re.search(p, str(key)) for p in patterns):
                yield Problem(_dotted([*path, key]), "unknown field")
    elif kind == "type":
        wanted = _TYPE_WORDS.get(str(error.validator_value), str(error.validator_value))
        yield Problem(where, f"expected {wanted}, got {_json_type(error.instance)}")
    elif kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        yield Problem(where, f"must be {_range_text(error.schema)}, got {error.instance!r}")
    else:  # a keyword this schema does not use today: jsonschema's own words
        yield Problem(where, error.message)


# -- persistence --------------------------------------------------------------------------------


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
