"""The sink's configuration: one frozen, validated dataclass built from the environment.

Azure Functions hands app settings to the worker as environment variables; the local runner
reads the same names, so one table of settings serves both hosts. Every problem is reported
as a :class:`SettingsError` that names the setting, so a misconfigured deployment says what
to fix instead of failing on the first request.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from enviromon_sink.errors import SettingsError
from enviromon_sink.keys import table_name
from enviromon_sink.rest import CALL_KINDS as TABLE_CALL_KINDS

# The names, in one place: docs/sink-deploy.md lists them for operators.
TABLES_CONNECTION = "AZURE_TABLES_CONNECTION_STRING"
TABLES_CONNECTION_FALLBACK = "AzureWebJobsStorage"
WEBPUBSUB_CONNECTION = "WEBPUBSUB_CONNECTION_STRING"
WEBPUBSUB_HUB = "WEBPUBSUB_HUB"
TABLE_PREFIX = "ENVIROMON_TABLE_PREFIX"
ALERT_TEMPERATURE_HIGH = "ENVIROMON_ALERT_TEMPERATURE_HIGH"
HISTORY_RETENTION_DAYS = "ENVIROMON_HISTORY_RETENTION_DAYS"
CORS_ORIGINS = "ENVIROMON_CORS_ORIGINS"
NEGOTIATE_MINUTES = "ENVIROMON_NEGOTIATE_MINUTES"
PUBLISH_TIMEOUT_SECONDS = "ENVIROMON_PUBLISH_TIMEOUT_SECONDS"
TABLE_CALLS = "ENVIROMON_TABLE_CALLS"

# Web PubSub hub names: start with a letter, then letters, digits or underscores.
_HUB_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")

MAX_NEGOTIATE_MINUTES = 60


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the sink's hosts need, checked once at start-up.

    Attributes:
        tables_connection_string: Azure Storage connection string for Tables
            (``AZURE_TABLES_CONNECTION_STRING``, else ``AzureWebJobsStorage``).
        webpubsub_connection_string: Web PubSub connection string, or None to run without
            live publishing (negotiate then answers 503).
        webpubsub_hub: the Web PubSub hub the dashboard listens on.
        table_prefix: prefix of every table name the sink creates.
        alert_temperature_high: °C above which a reading is marked as an alert, or None.
        history_retention_days: how long history rows are kept.
        cors_origins: origins allowed to call the HTTP API from a browser (the dashboard is
            a static site on another origin); ``("*",)`` allows any.
        negotiate_minutes: lifetime of a dashboard token, 1 to 60.
        publish_timeout_seconds: connect/read timeout of one publish to Web PubSub.
        table_calls: how the hot path's Table transactions and state queries are sent:
            ``pipeline`` (enviromon_sink/rest.py, the default) or ``sdk`` (the storage
            SDK's own calls, ~2x the client CPU; for an account where the hand-written
            requests misbehave).
    """

    tables_connection_string: str
    webpubsub_connection_string: str | None = None
    webpubsub_hub: str = "enviromon"
    table_prefix: str = "enviromon"
    alert_temperature_high: float | None = 30.0
    history_retention_days: int = 30
    cors_origins: tuple[str, ...] = ()
    negotiate_minutes: int = MAX_NEGOTIATE_MINUTES
    publish_timeout_seconds: float = 5.0
    table_calls: str = "pipeline"

    def __post_init__(self) -> None:
        if not self.tables_connection_string.strip():
            raise SettingsError(f"{TABLES_CONNECTION} is empty")
        _check_connection_string(TABLES_CONNECTION, self.tables_connection_string)
        if self.webpubsub_connection_string is not None:
            _check_connection_string(WEBPUBSUB_CONNECTION, self.webpubsub_connection_string)
            _check_webpubsub(self.webpubsub_connection_string)
        if not _HUB_RE.fullmatch(self.webpubsub_hub):
            raise SettingsError(
                f"{WEBPUBSUB_HUB}={self.webpubsub_hub!r}: a hub name starts with a letter and"
                " has only letters, digits and underscores"
            )
        try:
            table_name(self.table_prefix, "devices")  # the one rule for table names
        except ValueError:
            raise SettingsError(
                f"{TABLE_PREFIX}={self.table_prefix!r}: 1-40 letters and digits, starting"
                " with a letter (Azure table names are alphanumeric)"
            ) from None
        if self.alert_temperature_high is not None and not (
            math.isfinite(self.alert_temperature_high)
            and -40.0 <= self.alert_temperature_high <= 85.0
        ):
            raise SettingsError(
                f"{ALERT_TEMPERATURE_HIGH}={self.alert_temperature_high!r}: a temperature in"
                " °C within the sensor's range, -40 to 85"
            )
        if not 1 <= self.history_retention_days <= 3650:
            raise SettingsError(
                f"{HISTORY_RETENTION_DAYS}={self.history_retention_days!r}: 1 to 3650 days"
            )
        for origin in self.cors_origins:
            _check_origin(origin)
        if not 1 <= self.negotiate_minutes <= MAX_NEGOTIATE_MINUTES:
            raise SettingsError(
                f"{NEGOTIATE_MINUTES}={self.negotiate_minutes!r}: 1 to {MAX_NEGOTIATE_MINUTES}"
                " (dashboard tokens expire within the hour)"
            )
        if not (
            math.isfinite(self.publish_timeout_seconds) and 0 < self.publish_timeout_seconds <= 60
        ):
            raise SettingsError(
                f"{PUBLISH_TIMEOUT_SECONDS}={self.publish_timeout_seconds!r}: above 0, at most 60"
            )
        if self.table_calls not in TABLE_CALL_KINDS:
            raise SettingsError(
                f"{TABLE_CALLS}={self.table_calls!r}: one of {', '.join(TABLE_CALL_KINDS)}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from environment variables (Functions app settings).

        Raises:
            SettingsError: a setting is missing or malformed; the message names it.
        """
        env = os.environ if environ is None else environ
        tables = _get(env, TABLES_CONNECTION) or _get(env, TABLES_CONNECTION_FALLBACK)
        if tables is None:
            raise SettingsError(
                f"{TABLES_CONNECTION} (or {TABLES_CONNECTION_FALLBACK}) is not set: the Azure"
                " Storage connection string for the sink's tables"
            )
        alert_raw = _get(env, ALERT_TEMPERATURE_HIGH)
        alert: float | None
        if alert_raw is None:
            alert = 30.0
        elif alert_raw.lower() in ("off", "none"):
            alert = None
        else:
            alert = _parse_float(ALERT_TEMPERATURE_HIGH, alert_raw)
        origins_raw = _get(env, CORS_ORIGINS)
        origins = (
            tuple(o.strip().rstrip("/") for o in origins_raw.split(",") if o.strip())
            if origins_raw
            else ()
        )
        return cls(
            tables_connection_string=tables,
            webpubsub_connection_string=_get(env, WEBPUBSUB_CONNECTION),
            webpubsub_hub=_get(env, WEBPUBSUB_HUB) or "enviromon",
            table_prefix=_get(env, TABLE_PREFIX) or "enviromon",
            alert_temperature_high=alert,
            history_retention_days=_parse_int(
                HISTORY_RETENTION_DAYS, _get(env, HISTORY_RETENTION_DAYS), 30
            ),
            cors_origins=origins,
            negotiate_minutes=_parse_int(
                NEGOTIATE_MINUTES, _get(env, NEGOTIATE_MINUTES), MAX_NEGOTIATE_MINUTES
            ),
            publish_timeout_seconds=_parse_float(
                PUBLISH_TIMEOUT_SECONDS, _get(env, PUBLISH_TIMEOUT_SECONDS) or "5"
            ),
            table_calls=(_get(env, TABLE_CALLS) or "pipeline").lower(),
        )

    def sink_options(self) -> dict[str, Any]:
        """Keyword arguments for ``processor.Sink.from_connection_string``."""
        return {
            "table_prefix": self.table_prefix,
            "temperature_alert": self.alert_temperature_high,
            "retention": timedelta(days=self.history_retention_days),
            "table_calls": self.table_calls,
        }

    def allowed_origin(self, origin: str | None) -> str | None:
        """The value for ``Access-Control-Allow-Origin`` for a request from ``origin``."""
        if "*" in self.cors_origins:
            return "*"
        if origin is not None and origin.rstrip("/") in self.cors_origins:
            return origin.rstrip("/")
        return None


def _get(env: Mapping[str, str], name: str) -> str | None:
    """A setting's value, with an empty or blank value read as unset."""
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _parse_int(name: str, raw: str | None, default: int) -> int:
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r}: not a whole number") from exc


def _parse_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r}: not a number") from exc
    if not math.isfinite(value):
        raise SettingsError(f"{name}={raw!r}: not a finite number")
    return value


def _check_connection_string(name: str, value: str) -> None:
    """A connection string is ``key=value`` segments separated by ``;``."""
    for segment in value.split(";"):
        if segment.strip() and "=" not in segment:
            # Never echo the value: it may hold a key.
            raise SettingsError(f"{name} is malformed: expected key=value segments")
    if value.strip().lower() == "usedevelopmentstorage=true":
        return
    keys = {seg.split("=", 1)[0].strip().lower() for seg in value.split(";") if "=" in seg}
    if name == TABLES_CONNECTION and not keys & {"accountname", "tableendpoint"}:
        raise SettingsError(f"{name} is malformed: no AccountName or TableEndpoint")


def _check_webpubsub(value: str) -> None:
    parts = {
        k.strip().lower(): v.strip()
        for k, v in (seg.split("=", 1) for seg in value.split(";") if "=" in seg)
    }
    endpoint = parts.get("endpoint", "")
    if urlsplit(endpoint).scheme not in ("http", "https") or not urlsplit(endpoint).hostname:
        raise SettingsError(f"{WEBPUBSUB_CONNECTION} is malformed: Endpoint must be an http(s) URL")
    if not parts.get("accesskey"):
        raise SettingsError(
            f"{WEBPUBSUB_CONNECTION} has no AccessKey (identity-based connections are not"
            " supported: the sink signs dashboard tokens with the key)"
        )
    port = parts.get("port")
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise SettingsError(f"{WEBPUBSUB_CONNECTION} is malformed: Port must be 1-65535")


def _check_origin(origin: str) -> None:
    if origin == "*":
        return
    parts = urlsplit(origin)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
    ):
        raise SettingsError(
            f"{CORS_ORIGINS}: {origin!r} is not an origin such as https://example.com"
        )
