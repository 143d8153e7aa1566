"""Module configuration: the twin shape, validation as a whole, the environment, persistence."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest
from enviro_sensor.config import (
    ConfigStore,
    CpuCompensation,
    Linear,
    ModuleConfig,
    write_atomic,
)
from enviro_sensor.errors import ConfigError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FULL = {
    "telemetryInterval": 30,
    "readingsPerMessage": 5,
    "calibration": {
        "temperature": {"slope": 1.02, "intercept": -0.5},
        "humidity": {"slope": 0.98, "intercept": 1.5},
        "pressure": {"slope": 1.0, "intercept": 2.1},
        "cpuCompensation": {"enabled": True, "factor": 2.0},
    },
    "alerts": {"temperatureHigh": 27.5},
    "led": {"enabled": False},
    "$version": 4,
}


def test_defaults_match_design() -> None:
    """The defaults are docs/contract.md's twin example, version 0."""
    config = ModuleConfig()
    desired = config.to_desired()
    assert desired == {
        "telemetryInterval": 10.0,
        "readingsPerMessage": 1,
        "calibration": {
            "temperature": {"slope": 1.0, "intercept": 0.0},
            "humidity": {"slope": 1.0, "intercept": 0.0},
            "pressure": {"slope": 1.0, "intercept": 0.0},
            "cpuCompensation": {"enabled": False, "factor": 2.25},
        },
        "alerts": {"temperatureHigh": 30.0},
        "led": {"enabled": True},
        "$version": 0,
    }


def test_full_patch_applies_every_field() -> None:
    """A full desired document sets every field and the version."""
    config = ModuleConfig().apply_patch(FULL)
    assert config.telemetry_interval == 30
    assert config.readings_per_message == 5
    assert config.calibration.temperature == Linear(slope=1.02, intercept=-0.5)
    assert config.calibration.humidity == Linear(slope=0.98, intercept=1.5)
    assert config.calibration.pressure == Linear(slope=1.0, intercept=2.1)
    assert config.calibration.cpu_compensation == CpuCompensation(enabled=True, factor=2.0)
    assert config.temperature_high == 27.5
    assert config.led_enabled is False
    assert config.version == 4
    assert ModuleConfig().apply_patch(config.to_desired()) == config


def test_partial_patch_keeps_other_fields() -> None:
    """A twin patch carries only what changed; everything else is kept."""
    base = ModuleConfig().apply_patch(FULL)
    patched = base.apply_patch({"calibration": {"humidity": {"intercept": 0.0}}, "$version": 5})
    assert patched.calibration.humidity == Linear(slope=0.98, intercept=0.0)
    assert patched.calibration.temperature == base.calibration.temperature
    assert patched.telemetry_interval == 30
    assert patched.version == 5
    assert base.version == 4  # the original is untouched


def test_null_resets_to_default_and_metadata_is_ignored() -> None:
    """A null removes a twin property (back to the default); $metadata is not a field."""
    base = ModuleConfig().apply_patch(FULL)
    patched = base.apply_patch(
        {"calibration": {"temperature": None}, "alerts": None, "$metadata": {"x": 1}}
    )
    assert patched.calibration.temperature == Linear()
    assert patched.temperature_high == 30.0
    assert patched.calibration.humidity == base.calibration.humidity


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"telemetryInterval": "10"}, "telemetryInterval: expected a number"),
        ({"telemetryInterval": 0.1}, "telemetryInterval: must be"),
        ({"telemetryInterval": float("nan")}, "telemetryInterval: must be finite"),
        ({"readingsPerMessage": 0}, "readingsPerMessage: must be 1..500"),
        ({"readingsPerMessage": 1.5}, "readingsPerMessage: expected an integer"),
        ({"readingsPerMessage": True}, "readingsPerMessage: expected an integer"),
        ({"calibration": []}, "calibration: expected an object"),
        ({"calibration": {"temperature": {"slope": 0}}}, "calibration.temperature.slope"),
        ({"calibration": {"humidity": {"slope": -1}}}, "calibration.humidity.slope"),
        ({"calibration": {"pressure": {"intercept": 5000}}}, "calibration.pressure.intercept"),
        ({"calibration": {"pressure": {"slope": "1"}}}, "calibration.pressure.slope"),
        ({"calibration": {"gas": {"slope": 1}}}, "calibration.gas: unknown field"),
        ({"calibration": {"cpuCompensation": {"factor": 0}}}, "cpuCompensation.factor"),
        ({"calibration": {"cpuCompensation": {"enabled": "yes"}}}, "cpuCompensation.enabled"),
        ({"alerts": {"temperatureHigh": 200}}, "alerts.temperatureHigh: must be"),
        ({"alerts": {"temperatureHigh": float("inf")}}, "alerts.temperatureHigh"),
        ({"led": {"enabled": 1}}, "led.enabled: expected true or false"),
        ({"led": {"colour": "red"}}, "led.colour: unknown field"),
        ({"telemetryIntreval": 5}, "telemetryIntreval: unknown field"),
        # The heater profile is a start-up setting, not a twin field (docs/edge.md says why).
        ({"sensor": {"heaterTemperature": 250}}, "sensor: unknown field"),
        ({"$version": -1}, "$version: must be >= 0"),
        ({"$version": "7"}, "$version: expected an integer"),
    ],
)
def test_bad_field_is_named(patch: dict[str, Any], field: str) -> None:
    """Each bad field is refused with its name and the reason."""
    with pytest.raises(ConfigError) as info:
        ModuleConfig().apply_patch(patch)
    assert field in str(info.value)


def test_every_problem_is_reported_and_nothing_applied() -> None:
    """A patch with several problems names all of them, and a good field in it is not applied."""
    base = ModuleConfig()
    patch = {
        "telemetryInterval": 60,
        "calibration": {"humidity": {"slope": 0}},
        "led": {"enabled": "no"},
    }
    with pytest.raises(ConfigError) as info:
        base.apply_patch(patch)
    message = str(info.value)
    assert "calibration.humidity.slope" in message
    assert "led.enabled" in message
    assert "telemetryInterval" not in message
    assert base == ModuleConfig()


def test_non_object_patch_is_refused() -> None:
    """A desired patch that is not an object is refused."""
    with pytest.raises(ConfigError, match="expected an object"):
        ModuleConfig().apply_patch([1, 2])  # type: ignore[arg-type]


def test_direct_construction_is_checked() -> None:
    """Building the dataclass by hand runs the same range checks."""
    with pytest.raises(ConfigError, match="telemetryInterval"):
        ModuleConfig(telemetry_interval=0)


def test_from_env_reads_documented_variables() -> None:
    """ENVIRO_* variables set the matching fields."""
    config = ModuleConfig.from_env(
        {
            "ENVIRO_TELEMETRY_INTERVAL": "5",
            "ENVIRO_READINGS_PER_MESSAGE": "3",
            "ENVIRO_TEMPERATURE_SLOPE": "1.1",
            "ENVIRO_TEMPERATURE_INTERCEPT": "-0.3",
            "ENVIRO_HUMIDITY_INTERCEPT": "2",
            "ENVIRO_PRESSURE_SLOPE": "0.999",
            "ENVIRO_CPU_COMPENSATION": "on",
            "ENVIRO_CPU_COMPENSATION_FACTOR": "1.8",
            "ENVIRO_TEMPERATURE_HIGH": "25",
            "ENVIRO_LED_ENABLED": "false",
            "UNRELATED": "x",
        }
    )
    assert config.telemetry_interval == 5
    assert config.readings_per_message == 3
    assert config.calibration.temperature == Linear(1.1, -0.3)
    assert config.calibration.humidity == Linear(1.0, 2.0)
    assert config.calibration.pressure.slope == 0.999
    assert config.calibration.cpu_compensation == CpuCompensation(True, 1.8)
    assert config.temperature_high == 25
    assert config.led_enabled is False
    assert config.version == 0


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ENVIRO_TELEMETRY_INTERVAL": "ten"}, "ENVIRO_TELEMETRY_INTERVAL"),
        ({"ENVIRO_LED_ENABLED": "maybe"}, "ENVIRO_LED_ENABLED"),
        ({"ENVIRO_TELEMETRY_INTERVAL": "0"}, "telemetryInterval"),
    ],
)
def test_from_env_names_bad_variable(env: dict[str, str], named: str) -> None:
    """A bad environment variable is refused with its name (or its field's)."""
    with pytest.raises(ConfigError, match=named):
        ModuleConfig.from_env(env)


def test_store_round_trip(tmp_path: Path) -> None:
    """A saved config loads back equal, and no temporary file is left behind."""
    store = ConfigStore(path=tmp_path / "state" / "config.json")
    config = ModuleConfig().apply_patch(FULL)
    store.save(config)
    assert store.load(ModuleConfig()) == config
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["config.json"]


def test_store_missing_file_gives_base(tmp_path: Path) -> None:
    """No stored config: the base (environment) config is used."""
    base = ModuleConfig(telemetry_interval=3)
    assert ConfigStore(path=tmp_path / "none.json").load(base) == base


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b"[]",
        b'{"format": 99, "desired": {}}',
        b'{"format": 1}',
        b'{"format": 1, "desired": {"telemetryInterval": -5}}',
        b"\xff\xfe",
    ],
)
def test_store_corrupt_file_falls_back_with_warning(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupt or invalid stored config is ignored with a warning, never fatal."""
    path = tmp_path / "config.json"
    path.write_bytes(content)
    base = ModuleConfig(telemetry_interval=7)
    with caplog.at_level(logging.WARNING, logger="enviro_sensor.config"):
        assert ConfigStore(path=path).load(base) == base
    assert any("unusable" in r.getMessage() for r in caplog.records)


def test_store_apply_persists_good_patch(tmp_path: Path) -> None:
    """An accepted patch is written, so a restart without network still calibrates."""
    store = ConfigStore(path=tmp_path / "config.json")
    new = store.apply(
        ModuleConfig(), {"calibration": {"temperature": {"intercept": -1.5}}, "$version": 9}
    )
    restarted = ConfigStore(path=tmp_path / "config.json").load(ModuleConfig())
    assert restarted == new
    assert restarted.version == 9
    assert restarted.calibration.temperature.intercept == -1.5


def test_store_apply_write_failure_still_applies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A valid patch that cannot be written is applied in memory and the failure logged."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = ConfigStore(path=blocker / "config.json")  # parent is a file: mkdir fails
    with caplog.at_level(logging.ERROR, logger="enviro_sensor.config"):
        new = store.apply(ModuleConfig(), {"telemetryInterval": 20, "$version": 2})
    assert new.telemetry_interval == 20
    assert any("not persisted" in r.getMessage() for r in caplog.records)


def test_write_atomic_failure_leaves_old_file(tmp_path: Path) -> None:
    """A failed atomic write leaves the previous file intact and no temporary file."""
    path = tmp_path / "f.json"
    path.write_bytes(b"old")

    with pytest.raises(TypeError):
        write_atomic(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


# --- hypothesis: a refused config changes nothing --------------------------------------------

_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.text(max_size=3),
    st.booleans(),
    st.none(),
)
_linear = st.fixed_dictionaries({}, optional={"slope": _numbers, "intercept": _numbers})
_patches = st.fixed_dictionaries(
    {},
    optional={
        "telemetryInterval": _numbers,
        "readingsPerMessage": _numbers,
        "calibration": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {},
                optional={
                    "temperature": _linear,
                    "humidity": _linear,
                    "pressure": _linear,
                    "cpuCompensation": st.fixed_dictionaries(
                        {}, optional={"enabled": _numbers, "factor": _numbers}
                    ),
                },
            ),
        ),
        "alerts": st.fixed_dictionaries({}, optional={"temperatureHigh": _numbers}),
        "led": st.fixed_dictionaries({}, optional={"enabled": _numbers}),
        "$version": st.integers(min_value=-3, max_value=1000),
        "bogus": st.just(1),
    },
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(patch=_patches)
def test_refused_patch_changes_nothing(tmp_path: Path, patch: dict[str, Any]) -> None:
    """Any patch is applied whole or refused whole: a refusal leaves memory and disk unchanged."""
    path = tmp_path / "config.json"
    store = ConfigStore(path=path)
    current = ModuleConfig().apply_patch(FULL)
    store.save(current)
    before_bytes = path.read_bytes()
    before = ModuleConfig().apply_patch(FULL)  # built apart, so the comparison can fail
    try:
        new = store.apply(current, patch)
    except ConfigError as exc:
        assert str(exc).startswith("config refused: ")
        assert current == before
        assert current.to_desired() == before.to_desired()
        assert path.read_bytes() == before_bytes
        assert store.load(ModuleConfig()) == before
        return
    # Accepted: every value is in range and the file holds exactly the new config.
    assert 0.5 <= new.telemetry_interval <= 86_400
    assert 1 <= new.readings_per_message <= 500
    for lin in (new.calibration.temperature, new.calibration.humidity, new.calibration.pressure):
        assert math.isfinite(lin.slope) and 0 < lin.slope <= 10
        assert math.isfinite(lin.intercept)
    assert -40 <= new.temperature_high <= 85
    assert store.load(ModuleConfig()) == new
    assert json.loads(path.read_bytes())["desired"] == new.to_desired()


# --- the desired document as a JSON Schema ------------------------------------------------


def _schema_defaults(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """The document the schema's own ``default``s describe (absent keys are not defaults)."""
    if "$ref" in node:
        target = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        node = {**target, **node, "properties": target.get("properties", {})}
    out: dict[str, Any] = {}
    for key, sub in node.get("properties", {}).items():
        if "default" in sub:
            out[key] = sub["default"]
        elif "properties" in sub or "$ref" in sub:
            out[key] = _schema_defaults(schema, sub)
    return out


def test_schema_defaults_are_the_dataclass_defaults() -> None:
    """The schema's defaults (for operators and the deployment template) are the module's."""
    from enviro_sensor.config import desired_schema

    schema = desired_schema()
    defaults = _schema_defaults(schema, schema)
    expected = ModuleConfig().to_desired()
    del expected["$version"]
    assert defaults == expected


def test_schema_is_the_contract_and_matches_the_metrics_table() -> None:
    """The shipped schema is contract/'s, a valid 2020-12 schema, its ranges from metrics.json."""
    import jsonschema
    from enviro_sensor.config import desired_schema
    from enviro_sensor.metrics import metric

    root = Path(__file__).resolve().parents[2]
    canonical = json.loads((root / "contract/twin-desired-v1.schema.json").read_text("utf-8"))
    assert desired_schema() == canonical
    jsonschema.Draft202012Validator.check_schema(canonical)
    cal = canonical["properties"]["calibration"]["properties"]
    for key in ("temperature", "humidity", "pressure"):
        m = metric(key)
        span = m.max - m.min
        assert cal[key]["properties"]["intercept"]["minimum"] == -span, key
        assert cal[key]["properties"]["intercept"]["maximum"] == span, key
    high = canonical["properties"]["alerts"]["properties"]["temperatureHigh"]
    assert (high["minimum"], high["maximum"]) == (
        metric("temperature").min,
        metric("temperature").max,
    )
    jsonschema.validate(FULL, canonical)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**FULL, "telemetryInterval": 0}, canonical)


def test_full_document_on_a_base_is_apply_patch() -> None:
    """A whole desired document replaces what it names; a deleted property is back to default."""
    base = ModuleConfig().apply_patch(FULL)
    doc = {"telemetryInterval": 20, "$version": 9}
    assert ModuleConfig().apply_patch(doc) == ModuleConfig.from_desired(doc)
    fresh = ModuleConfig.from_desired(doc)
    assert fresh.led_enabled is True and fresh.calibration == ModuleConfig().calibration
    assert base.apply_patch(doc).led_enabled is False  # a patch keeps what it does not name


def test_altitude_is_optional_and_checked() -> None:
    """altitude (m) is absent by default, set by a patch, removed by null, range-checked."""
    assert "altitude" not in ModuleConfig().to_desired()
    high = ModuleConfig().apply_patch({"altitude": 350})
    assert high.altitude == 350.0 and high.to_desired()["altitude"] == 350.0
    assert high.apply_patch({"altitude": None}).altitude is None
    with pytest.raises(ConfigError, match=r"altitude: must be -500\.\.9000 m"):
        ModuleConfig().apply_patch({"altitude": 12000})
    assert ModuleConfig.from_env({"ENVIRO_ALTITUDE": "120.5"}).altitude == 120.5


def test_env_problems_are_named_by_variable_all_at_once() -> None:
    """Every bad twin-field variable is named by its variable name, in one error."""
    with pytest.raises(ConfigError) as info:
        ModuleConfig.from_env(
            {
                "ENVIRO_TELEMETRY_INTERVAL": "0",
                "ENVIRO_LED_ENABLED": "maybe",
                "ENVIRO_HUMIDITY_SLOPE": "-2",
                "ENVIRO_READINGS_PER_MESSAGE": "1.5",
            }
        )
    problems = info.value.problems
    assert len(problems) == 4
    for name in (
        "ENVIRO_TELEMETRY_INTERVAL",
        "ENVIRO_LED_ENABLED",
        "ENVIRO_HUMIDITY_SLOPE",
        "ENVIRO_READINGS_PER_MESSAGE",
    ):
        assert sum(p.startswith(name) for p in problems) == 1, name
