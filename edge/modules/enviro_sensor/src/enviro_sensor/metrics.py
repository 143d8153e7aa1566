"""The one metrics table (contract/metrics.json): payload keys, ranges, rounding.

The module ships a copy of the canonical ``contract/metrics.json`` as package data. Everything
that needs a payload key, a valid range or a number of decimals reads it from here, so the edge
payload, its validation and the dashboard's labels cannot drift apart.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

CONTRACT_PACKAGE = "enviro_sensor"


@dataclass(frozen=True, slots=True)
class Metric:
    """One row of the metrics table.

    Attributes:
        key: payload key, e.g. ``"temperature"``.
        label: human label for dashboards.
        unit: unit symbol, e.g. ``"°C"``.
        min: smallest physically valid value (inclusive).
        max: largest physically valid value (inclusive).
        decimals: digits kept after the decimal point (0 means an integer is sent).
        calibrated: whether slope/intercept calibration applies to it.
        edge: whether the edge module sends it.
        optional: schema 1 may leave it out (sent only when the sensor or config gives it).
        clamp_margin: how far past min/max a value is clamped to the bound (and flagged)
            rather than refused.
    """

    key: str
    label: str
    unit: str
    min: float
    max: float
    decimals: int
    calibrated: bool
    edge: bool
    optional: bool = False
    clamp_margin: float = 0.0

    def in_range(self, value: float) -> bool:
        """Whether a finite value lies inside the valid range (bounds included)."""
        return self.min <= value <= self.max

    def round(self, value: float) -> float | int:
        """Round to the table's decimals; an int when decimals is 0. Never returns ``-0.0``."""
        if self.decimals == 0:
            return round(value)
        # Adding 0.0 turns -0.0 into 0.0, so "-0.0" never appears in a payload.
        return round(value, self.decimals) + 0.0


def read_contract(name: str) -> Any:
    """A JSON file of the contract the package ships (contract/<name>)."""
    text = resources.files(CONTRACT_PACKAGE).joinpath("contract", name).read_text("utf-8")
    return json.loads(text)


def _metric(row: dict[str, Any]) -> Metric:
    metric = Metric(
        key=str(row["key"]),
        label=str(row["label"]),
        unit=str(row["unit"]),
        min=float(row["min"]),
        max=float(row["max"]),
        decimals=int(row["decimals"]),
        calibrated=bool(row["calibrated"]),
        edge=bool(row["edge"]),
        optional=bool(row.get("optional", False)),
        clamp_margin=float(row.get("clampMargin", 0)),
    )
    if not (math.isfinite(metric.min) and math.isfinite(metric.max) and metric.min < metric.max):
        raise ValueError(f"metrics.json: bad range for {metric.key!r}")
    if not (math.isfinite(metric.clamp_margin) and metric.clamp_margin >= 0):
        raise ValueError(f"metrics.json: bad clampMargin for {metric.key!r}")
    if metric.decimals < 0:
        raise ValueError(f"metrics.json: negative decimals for {metric.key!r}")
    return metric


@cache
def all_metrics() -> tuple[Metric, ...]:
    """Every metric in the table, in table order (loaded once)."""
    return tuple(_metric(row) for row in read_contract("metrics.json")["metrics"])


@cache
def edge_metrics() -> tuple[Metric, ...]:
    """The metrics the edge module sends, in table order."""
    return tuple(m for m in all_metrics() if m.edge)


@cache
def metric(key: str) -> Metric:
    """The metric with this payload key.

    Raises:
        KeyError: no such metric in the table.
    """
    for m in all_metrics():
        if m.key == key:
            return m
    raise KeyError(key)


@cache
def calibrated_keys() -> tuple[str, ...]:
    """Keys of the edge metrics that take slope/intercept calibration."""
    return tuple(m.key for m in edge_metrics() if m.calibrated)


def telemetry_schema() -> dict[str, Any]:
    """The schema-1 JSON Schema (Draft 2020-12) the module's messages follow."""
    schema: dict[str, Any] = read_contract("telemetry-v1.schema.json")
    return schema
