"""Settings: built from the environment, validated, errors name the setting."""

from __future__ import annotations

import dataclasses

import pytest
from enviromon_sink.errors import SettingsError
from enviromon_sink.settings import Settings
from hypothesis import given
from hypothesis import strategies as st

from tests.support.azurite import connection_string

WPS = "WEBPUBSUB_CONNECTION_STRING"
AZURITE = connection_string(10002)  # a settings value only: nothing listens there
PUBSUB = "Endpoint=http://127.0.0.1;Port=8080;AccessKey=c2VjcmV0;Version=1.0;"


def env(**extra: str) -> dict[str, str]:
    return {"AZURE_TABLES_CONNECTION_STRING": AZURITE, **extra}


def test_defaults_from_minimal_environment() -> None:
    """Only the Tables connection is required; the rest has documented defaults."""
    s = Settings.from_env(env())
    assert s.tables_connection_string == AZURITE
    assert s.webpubsub_connection_string is None
    assert s.webpubsub_hub == "enviromon"
    assert s.table_prefix == "enviromon"
    assert s.alert_temperature_high == 30.0
    assert s.history_retention_days == 30
    assert s.cors_origins == ()
    assert s.negotiate_minutes == 60
    assert s.table_calls == "pipeline"


def test_every_setting_is_read() -> None:
    """Each app setting lands in its field."""
    s = Settings.from_env(
        env(
            WEBPUBSUB_CONNECTION_STRING=PUBSUB,
            WEBPUBSUB_HUB="live_1",
            ENVIROMON_TABLE_PREFIX="test42",
            ENVIROMON_ALERT_TEMPERATURE_HIGH="27.5",
            ENVIROMON_HISTORY_RETENTION_DAYS="7",
            ENVIROMON_CORS_ORIGINS="https://dash.example.com, http://127.0.0.1:8080/",
            ENVIROMON_NEGOTIATE_MINUTES="15",
            ENVIROMON_PUBLISH_TIMEOUT_SECONDS="2.5",
            ENVIROMON_TABLE_CALLS="SDK",
        )
    )
    assert s.webpubsub_connection_string == PUBSUB
    assert s.webpubsub_hub == "live_1"
    assert s.table_prefix == "test42"
    assert s.alert_temperature_high == 27.5
    assert s.history_retention_days == 7
    assert s.cors_origins == ("https://dash.example.com", "http://127.0.0.1:8080")
    assert s.negotiate_minutes == 15
    assert s.publish_timeout_seconds == 2.5
    assert s.table_calls == "sdk" and s.sink_options()["table_calls"] == "sdk"


def test_azurewebjobsstorage_is_the_fallback() -> None:
    """Without AZURE_TABLES_CONNECTION_STRING the Functions storage account is used."""
    s = Settings.from_env({"AzureWebJobsStorage": AZURITE})
    assert s.tables_connection_string == AZURITE


def test_alert_can_be_switched_off() -> None:
    """'off' disables the temperature threshold."""
    assert (
        Settings.from_env(env(ENVIROMON_ALERT_TEMPERATURE_HIGH="off")).alert_temperature_high
        is None
    )


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({}, "AZURE_TABLES_CONNECTION_STRING"),
        ({"AZURE_TABLES_CONNECTION_STRING": "   "}, "AZURE_TABLES_CONNECTION_STRING"),
        ({"AZURE_TABLES_CONNECTION_STRING": "nonsense"}, "AZURE_TABLES_CONNECTION_STRING"),
        (
            env(WEBPUBSUB_CONNECTION_STRING="Endpoint=ftp://x;AccessKey=k"),
            "WEBPUBSUB_CONNECTION_STRING",
        ),
        (
            env(WEBPUBSUB_CONNECTION_STRING="Endpoint=https://x.example"),
            "WEBPUBSUB_CONNECTION_STRING",
        ),
        (
            env(WEBPUBSUB_CONNECTION_STRING=PUBSUB.replace("8080", "99999")),
            "WEBPUBSUB_CONNECTION_STRING",
        ),
        (env(WEBPUBSUB_HUB="9lives"), "WEBPUBSUB_HUB"),
        (env(WEBPUBSUB_HUB="a-b"), "WEBPUBSUB_HUB"),
        (env(ENVIROMON_TABLE_PREFIX="bad_prefix"), "ENVIROMON_TABLE_PREFIX"),
        (env(ENVIROMON_TABLE_PREFIX="x" * 41), "ENVIROMON_TABLE_PREFIX"),
        (env(ENVIROMON_ALERT_TEMPERATURE_HIGH="hot"), "ENVIROMON_ALERT_TEMPERATURE_HIGH"),
        (env(ENVIROMON_ALERT_TEMPERATURE_HIGH="nan"), "ENVIROMON_ALERT_TEMPERATURE_HIGH"),
        (env(ENVIROMON_ALERT_TEMPERATURE_HIGH="200"), "ENVIROMON_ALERT_TEMPERATURE_HIGH"),
        (env(ENVIROMON_HISTORY_RETENTION_DAYS="0"), "ENVIROMON_HISTORY_RETENTION_DAYS"),
        (env(ENVIROMON_HISTORY_RETENTION_DAYS="1.5"), "ENVIROMON_HISTORY_RETENTION_DAYS"),
        (env(ENVIROMON_CORS_ORIGINS="https://x.example/path"), "ENVIROMON_CORS_ORIGINS"),
        (env(ENVIROMON_CORS_ORIGINS="javascript:alert(1)"), "ENVIROMON_CORS_ORIGINS"),
        (env(ENVIROMON_NEGOTIATE_MINUTES="61"), "ENVIROMON_NEGOTIATE_MINUTES"),
        (env(ENVIROMON_NEGOTIATE_MINUTES="0"), "ENVIROMON_NEGOTIATE_MINUTES"),
        (env(ENVIROMON_PUBLISH_TIMEOUT_SECONDS="-1"), "ENVIROMON_PUBLISH_TIMEOUT_SECONDS"),
        (env(ENVIROMON_TABLE_CALLS="fast"), "ENVIROMON_TABLE_CALLS"),
    ],
)
def test_bad_setting_is_named(environ: dict[str, str], named: str) -> None:
    """A missing or malformed setting raises SettingsError naming it."""
    with pytest.raises(SettingsError) as info:
        Settings.from_env(environ)
    assert named in str(info.value)
    assert isinstance(info.value, ValueError)


def test_connection_string_secret_is_not_echoed() -> None:
    """A malformed connection string's error does not repeat its key."""
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"AZURE_TABLES_CONNECTION_STRING": "AccountKey=s3cr3tvalue;junk"})
    assert "s3cr3tvalue" not in str(info.value)


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after start-up."""
    s = Settings.from_env(env())
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.table_prefix = "other"  # type: ignore[misc]


def test_allowed_origin() -> None:
    """Only configured origins get a CORS grant; '*' grants any."""
    s = Settings.from_env(env(ENVIROMON_CORS_ORIGINS="https://dash.example.com"))
    assert s.allowed_origin("https://dash.example.com") == "https://dash.example.com"
    assert s.allowed_origin("https://evil.example.com") is None
    assert s.allowed_origin(None) is None
    star = Settings.from_env(env(ENVIROMON_CORS_ORIGINS="*"))
    assert star.allowed_origin("https://anything.example") == "*"


@given(st.text(max_size=30))
def test_any_negotiate_minutes_string_is_accepted_or_named(raw: str) -> None:
    """Whatever the string, the result is a valid setting or a SettingsError naming it."""
    try:
        s = Settings.from_env(env(ENVIROMON_NEGOTIATE_MINUTES=raw))
    except SettingsError as exc:
        assert "ENVIROMON_NEGOTIATE_MINUTES" in str(exc)
    else:
        assert 1 <= s.negotiate_minutes <= 60
