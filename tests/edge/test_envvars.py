"""The one table of ENVIRO_* variables: everything the package reads is in it."""

from __future__ import annotations

import re
from pathlib import Path

import enviro_sensor
from enviro_sensor.config import ModuleConfig, desired_schema
from enviro_sensor.envvars import VARIABLES, known_names, twin_variables, unknown_names
from enviro_sensor.sensors.settings import SOURCES

PACKAGE = Path(enviro_sensor.__file__).parent
NAME = re.compile(r"\bENVIRO_[A-Z0-9_]*[A-Z0-9]\b")


def test_every_variable_the_code_names_is_in_the_table() -> None:
    """No module reads an ENVIRO_* name the table (and so the unknown-name warning) lacks."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "envvars.py":
            continue
        for name in NAME.findall(path.read_text("utf-8")):
            found.setdefault(name, set()).add(path.name)
    missing = {name: files for name, files in found.items() if name not in known_names()}
    assert not missing, f"add these to enviro_sensor/envvars.py: {missing}"


def test_names_are_unique_and_sensor_settings_are_listed() -> None:
    """One row per name; every sensor setting's variable is a row."""
    names = [v.name for v in VARIABLES]
    assert len(names) == len(set(names))
    assert {var for _, var, _ in SOURCES} <= known_names()


def test_twin_rows_name_real_schema_fields_of_the_right_type() -> None:
    """Each twin row's field exists in the desired schema, and its kind is the field's type."""
    schema = desired_schema()
    for var in twin_variables():
        assert var.field is not None
        node = schema
        for part in var.field.split("."):
            node = node["properties"][part]
            if "$ref" in node:
                target = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
                node = {**target, "properties": target["properties"]}
        assert node["type"] == var.kind, var.name


def test_every_twin_row_sets_its_field() -> None:
    """Setting a twin row's variable changes the config (so the row is really read)."""
    samples = {"number": ("3",), "integer": ("3",), "boolean": ("true", "false")}
    for var in twin_variables():
        configs = [ModuleConfig.from_env({var.name: text}) for text in samples[var.kind]]
        assert any(c != ModuleConfig() for c in configs), var.name


def test_unknown_names() -> None:
    """Only ENVIRO_* names outside the table are unknown."""
    env = {"ENVIRO_SENSOR": "real", "ENVIRO_SENSR": "x", "HOME": "/root", "ENVIRO_": "y"}
    assert unknown_names(env) == ["ENVIRO_", "ENVIRO_SENSR"]
