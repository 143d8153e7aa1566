"""Every ``ENVIRO_*`` environment variable the module reads, in one table.

This is the one list of known names: the command warns about any other ``ENVIRO_*`` variable it
finds (a typo such as ``ENVIRO_TELEMETRY_INTERVALL`` would otherwise be ignored silently), and
``tests/edge/test_envvars.py`` fails when the package's code reads an ``ENVIRO_*`` name that is
not here. A part that adds a variable appends one row to :data:`VARIABLES`.

Rows with a ``field`` set a module-twin desired field (read by
:meth:`enviro_sensor.config.ModuleConfig.from_env`; ``kind`` says how the text is parsed); the
others are read where their ``reader`` says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

PREFIX = "ENVIRO_"

Kind = Literal["number", "integer", "boolean", "text"]


@dataclass(frozen=True, slots=True)
class EnvVar:
    """One environment variable.

    Attributes:
        name: the variable, e.g. ``ENVIRO_TELEMETRY_INTERVAL``.
        meaning: what it sets, for the docs and ``--help``.
        reader: the module that reads it.
        field: the twin desired field it sets (dotted), or None when it is not a twin field.
        kind: how a twin field's text is parsed.
    """

    name: str
    meaning: str
    reader: str
    field: str | None = None
    kind: Kind = "text"


def _twin(name: str, field: str, kind: Kind, meaning: str) -> EnvVar:
    return EnvVar(name=name, meaning=meaning, reader="config", field=field, kind=kind)


def _sensor(name: str, meaning: str) -> EnvVar:
    return EnvVar(name=name, meaning=meaning, reader="sensors.settings")


def _cli(name: str, meaning: str) -> EnvVar:
    return EnvVar(name=name, meaning=meaning, reader="cli")


VARIABLES: tuple[EnvVar, ...] = (
    # -- module twin fields (config.py): the twin's desired properties override them ----------
    _twin("ENVIRO_TELEMETRY_INTERVAL", "telemetryInterval", "number", "seconds between readings"),
    _twin("ENVIRO_READINGS_PER_MESSAGE", "readingsPerMessage", "integer", "readings per message"),
    _twin("ENVIRO_ALTITUDE", "altitude", "number", "metres above sea level"),
    _twin(
        "ENVIRO_TEMPERATURE_SLOPE", "calibration.temperature.slope", "number", "temperature slope"
    ),
    _twin(
        "ENVIRO_TEMPERATURE_INTERCEPT",
        "calibration.temperature.intercept",
        "number",
        "temperature intercept, °C",
    ),
    _twin("ENVIRO_HUMIDITY_SLOPE", "calibration.humidity.slope", "number", "humidity slope"),
    _twin(
        "ENVIRO_HUMIDITY_INTERCEPT",
        "calibration.humidity.intercept",
        "number",
        "humidity intercept, %RH",
    ),
    _twin("ENVIRO_PRESSURE_SLOPE", "calibration.pressure.slope", "number", "pressure slope"),
    _twin(
        "ENVIRO_PRESSURE_INTERCEPT",
        "calibration.pressure.intercept",
        "number",
        "pressure intercept, hPa",
    ),
    _twin(
        "ENVIRO_CPU_COMPENSATION",
        "calibration.cpuCompensation.enabled",
        "boolean",
        "CPU-heat compensation on/off",
    ),
    _twin(
        "ENVIRO_CPU_COMPENSATION_FACTOR",
        "calibration.cpuCompensation.factor",
        "number",
        "CPU-heat compensation factor",
    ),
    _twin("ENVIRO_TEMPERATURE_HIGH", "alerts.temperatureHigh", "number", "alert threshold, °C"),
    _twin("ENVIRO_LED_ENABLED", "led.enabled", "boolean", "status LED on/off"),
    # -- sensor start-up settings (sensors/settings.py) ----------------------------------------
    _sensor("ENVIRO_SENSOR", "sensor kind: real, bme680, enviro, auto or simulated"),
    _sensor("ENVIRO_I2C_BUS", "I2C bus number"),
    _sensor("ENVIRO_I2C_ADDRESS", "I2C address of the BME680 / BME280"),
    _sensor("ENVIRO_HEATER_TEMPERATURE", "BME680 gas heater, °C"),
    _sensor("ENVIRO_HEATER_DURATION", "BME680 gas heater, ms"),
    _sensor("ENVIRO_OVERSAMPLING", "oversampling T,H,P"),
    _sensor("ENVIRO_FILTER_SIZE", "IIR filter size"),
    _sensor("ENVIRO_READ_RETRIES", "extra attempts when no new data"),
    _sensor("ENVIRO_SIMULATED_SEED", "seed of the simulated sensor"),
    # -- the command (cli.py) ------------------------------------------------------------------
    _cli("ENVIRO_LED_PIN", "BCM GPIO of the status LED"),
    _cli("ENVIRO_ALERT_PIN", "BCM GPIO of a separate alert LED"),
    _cli("ENVIRO_STATE_DIR", "folder for the stored config and air-quality baseline"),
    _cli("ENVIRO_LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR"),
    # -- the reading buffer (buffer.py) --------------------------------------------------------
    EnvVar(name="ENVIRO_BUFFER_MAX_READINGS", meaning="most readings buffered", reader="buffer"),
    EnvVar(name="ENVIRO_BUFFER_MAX_MB", meaning="most MiB of buffered readings", reader="buffer"),
    # -- the hub connection (hubclient.py) -----------------------------------------------------
    EnvVar(name="ENVIRO_HUB_CA_FILE", meaning="PEM file of a CA to trust", reader="hubclient"),
    EnvVar(name="ENVIRO_HUB_PROXY", meaning="proxy URL for the hub", reader="hubclient"),
    EnvVar(
        name="ENVIRO_HUB_RETRY_INTERVAL", meaning="seconds between reconnects", reader="hubclient"
    ),
    EnvVar(
        name="ENVIRO_HUB_REPORT_INTERVAL",
        meaning="reported properties at most this often, s",
        reader="hubclient",
    ),
)


def known_names() -> frozenset[str]:
    """Every variable name in the table."""
    return frozenset(v.name for v in VARIABLES)


def twin_variables() -> tuple[EnvVar, ...]:
    """The rows that set a twin desired field, in table order."""
    return tuple(v for v in VARIABLES if v.field is not None)


def unknown_names(environ: Mapping[str, str], known: Iterable[str] | None = None) -> list[str]:
    """The ``ENVIRO_*`` names in ``environ`` that nothing reads, sorted."""
    names = known_names() if known is None else frozenset(known)
    return sorted(k for k in environ if k.startswith(PREFIX) and k not in names)
