"""Validation against the sensor's physical ranges, driven by the metrics table. Pure.

An impossible value is never sent as a value: it becomes ``null`` plus a flag.

* NaN or ±inf → ``<key>_invalid``
* finite, past ``min``/``max`` by at most the table's ``clampMargin`` → the bound, and
  ``<key>_clamped`` (a humidity of 100.3 %RH after slope and intercept is 100 %RH, flagged)
* finite and farther outside → ``<key>_out_of_range``
* gas heater not stable → ``gasResistance`` null and ``gas_unstable``
* every value that passes is rounded to the table's ``decimals``
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .metrics import Metric, edge_metrics, metric

FLAG_GAS_UNSTABLE = "gas_unstable"
GAS_KEY = "gasResistance"

Value = float | int | None


@dataclass(frozen=True, slots=True)
class Validated:
    """Values safe to send, and why any of them is null.

    Attributes:
        values: metric key → rounded in-range value or None.
        flags: flags raised, in table order.
    """

    values: dict[str, Value]
    flags: tuple[str, ...]


def check_value(m: Metric, value: float | None) -> tuple[Value, str | None]:
    """One value against its metric: (value to send, flag or None).

    ``None`` in gives ``None`` out with no flag: a missing value says nothing is wrong with it.
    """
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"{m.key}_invalid"
    number = float(value)
    if not math.isfinite(number):
        return None, f"{m.key}_invalid"
    if not m.in_range(number):
        if m.min - m.clamp_margin <= number <= m.max + m.clamp_margin:
            return m.round(m.min if number < m.min else m.max), f"{m.key}_clamped"
        return None, f"{m.key}_out_of_range"
    rounded = m.round(number)
    # The table's bounds are whole numbers today, so rounding cannot leave the range; clamp
    # anyway so a future table with finer bounds cannot make us send an out-of-range value.
    if rounded < m.min:
        rounded = m.round(m.min)
    elif rounded > m.max:
        rounded = m.round(m.max)
    return rounded, None


def validate(
    values: Mapping[str, float | None], *, heat_stable: bool, keys: tuple[str, ...] | None = None
) -> Validated:
    """Check every edge metric present in ``values`` (or only ``keys``) against the table.

    Args:
        values: metric key → value (calibrated, not yet rounded).
        heat_stable: whether the gas heater reached its target; when False the gas resistance
            is not trusted and is sent as null with ``gas_unstable``.
        keys: the metric keys to check; default: every edge metric in ``values``.
    """
    out: dict[str, Value] = {}
    flags: list[str] = []
    selected = keys if keys is not None else tuple(m.key for m in edge_metrics() if m.key in values)
    for key in selected:
        m = metric(key)
        raw = values.get(key)
        if key == GAS_KEY and not heat_stable:
            out[key] = None
            flags.append(FLAG_GAS_UNSTABLE)
            continue
        value, flag = check_value(m, raw)
        out[key] = value
        if flag is not None:
            flags.append(flag)
    return Validated(values=out, flags=tuple(flags))
