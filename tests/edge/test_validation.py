"""Validation against the metrics table: null plus a flag instead of an impossible value."""

from __future__ import annotations

import math

import pytest
from enviro_sensor.metrics import all_metrics, edge_metrics, metric
from enviro_sensor.validation import FLAG_GAS_UNSTABLE, check_value, validate
from hypothesis import given, settings
from hypothesis import strategies as st

any_float = st.floats(allow_nan=True, allow_infinity=True)


def test_table_drives_the_edge_keys() -> None:
    """The edge sends the table's edge metrics; light and pressureSeaLevel only when it has them."""
    keys = [m.key for m in edge_metrics()]
    assert keys == [
        "temperature",
        "humidity",
        "pressure",
        "gasResistance",
        "iaq",
        "light",
        "pressureSeaLevel",
    ]
    assert [m.key for m in edge_metrics() if m.optional] == ["light", "pressureSeaLevel"]
    assert [m.key for m in all_metrics()] == keys


@pytest.mark.parametrize(
    ("key", "value", "expected", "flag"),
    [
        ("temperature", 21.456, 21.46, None),
        ("temperature", -40.0, -40.0, None),
        ("temperature", 85.0, 85.0, None),
        # Just past a bound (within the table's clampMargin): the bound, flagged.
        ("temperature", 85.01, 85.0, "temperature_clamped"),
        ("temperature", 86.0, 85.0, "temperature_clamped"),
        ("temperature", 86.01, None, "temperature_out_of_range"),
        ("temperature", -273.0, None, "temperature_out_of_range"),
        ("temperature", math.nan, None, "temperature_invalid"),
        ("humidity", math.inf, None, "humidity_invalid"),
        ("humidity", 100.3, 100.0, "humidity_clamped"),
        ("humidity", -0.001, 0.0, "humidity_clamped"),
        ("humidity", 103.01, None, "humidity_out_of_range"),
        ("humidity", -3.5, None, "humidity_out_of_range"),
        ("pressure", 1100.9, 1100.0, "pressure_clamped"),
        ("pressure", 1101.5, None, "pressure_out_of_range"),
        ("gasResistance", 0.5, None, "gasResistance_out_of_range"),  # no margin
        ("pressure", 1012.844, 1012.84, None),
        ("pressure", 250.0, None, "pressure_out_of_range"),
        ("gasResistance", 152000.4, 152000, None),
        ("gasResistance", 0.5, None, "gasResistance_out_of_range"),
        ("iaq", 87.54, 87.5, None),
        ("temperature", None, None, None),
    ],
)
def test_check_value(
    key: str, value: float | None, expected: float | None, flag: str | None
) -> None:
    """Each value is rounded to the table's decimals, or nulled with the right flag."""
    assert check_value(metric(key), value) == (expected, flag)


def test_gas_is_an_integer_and_no_negative_zero() -> None:
    """0 decimals sends an int; -0.0 never appears."""
    value, _ = check_value(metric("gasResistance"), 152000.0)
    assert isinstance(value, int)
    value, _ = check_value(metric("temperature"), -0.001)
    assert value == 0.0 and math.copysign(1.0, value) == 1.0


def test_booleans_are_not_numbers() -> None:
    """A bool is flagged invalid, not sent as 1/0."""
    assert check_value(metric("humidity"), True) == (None, "humidity_invalid")


def test_heat_not_stable_nulls_gas() -> None:
    """Heat not stable: gasResistance null and gas_unstable, whatever the gas value."""
    result = validate(
        {"temperature": 20.0, "humidity": 40.0, "pressure": 1000.0, "gasResistance": 5000.0},
        heat_stable=False,
    )
    assert result.values["gasResistance"] is None
    assert result.flags == (FLAG_GAS_UNSTABLE,)
    assert result.values["temperature"] == 20.0


def test_flags_in_table_order() -> None:
    """Several problems give several flags, in table order."""
    result = validate(
        {"temperature": math.nan, "humidity": 120.0, "pressure": 1000.0, "gasResistance": 0.0},
        heat_stable=True,
    )
    assert result.flags == (
        "temperature_invalid",
        "humidity_out_of_range",
        "gasResistance_out_of_range",
    )
    assert result.values == {
        "temperature": None,
        "humidity": None,
        "pressure": 1000.0,
        "gasResistance": None,
    }


@settings(deadline=None)  # timing belongs in bench/, not in tests
@given(
    values=st.fixed_dictionaries(
        {
            "temperature": any_float,
            "humidity": any_float,
            "pressure": any_float,
            "gasResistance": st.one_of(st.none(), any_float),
        }
    ),
    heat_stable=st.booleans(),
)
def test_any_value_is_sent_in_range_or_flagged(
    values: dict[str, float | None], heat_stable: bool
) -> None:
    """Any float (NaN and inf included) comes out finite, in range and rounded, or null + flag."""
    result = validate(values, heat_stable=heat_stable)
    assert set(result.values) == set(values)
    for key, out in result.values.items():
        m = metric(key)
        given_value = values[key]
        if key == "gasResistance" and not heat_stable:
            assert out is None and FLAG_GAS_UNSTABLE in result.flags
            continue
        if out is None:
            if given_value is None:
                continue
            if math.isfinite(given_value):
                assert f"{key}_out_of_range" in result.flags
                assert not m.min - m.clamp_margin <= given_value <= m.max + m.clamp_margin
            else:
                assert f"{key}_invalid" in result.flags
        else:
            assert given_value is not None and math.isfinite(given_value)
            assert m.min <= out <= m.max
            assert out == round(out, m.decimals)
            if f"{key}_clamped" in result.flags:  # just past a bound: the bound itself
                assert out in (m.min, m.max)
                assert abs(out - given_value) <= m.clamp_margin + 1e-9
            else:
                assert abs(out - given_value) <= 0.5 * 10 ** (-m.decimals) + 1e-9
    assert len(result.flags) == len(set(result.flags))
