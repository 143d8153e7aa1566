"""The metrics table (contract/metrics.json), loaded once: keys, labels, units, ranges, decimals.

The sink ships its own copy of the contract (``make contract``) because cloud/sink is deployed as
a folder of its own; ``importlib.resources`` finds it both in the repo and in a deployed app.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any


@dataclass(frozen=True, slots=True)
class Metric:
    """One row of the metrics table."""

    key: str
    label: str
    unit: str
    min: float
    max: float
    decimals: int
    edge: bool = False
    optional: bool = False

    def accepts(self, value: float) -> bool:
        """Whether ``value`` lies inside the sensor's valid range (inclusive)."""
        return self.min <= value <= self.max


def _parse(raw: Any) -> tuple[Metric, ...]:
    rows = raw["metrics"]
    out = []
    for row in rows:
        metric = Metric(
            key=str(row["key"]),
            label=str(row["label"]),
            unit=str(row["unit"]),
            min=float(row["min"]),
            max=float(row["max"]),
            decimals=int(row["decimals"]),
            edge=bool(row.get("edge", False)),
            optional=bool(row.get("optional", False)),
        )
        if metric.min > metric.max or metric.decimals < 0:
            raise ValueError(f"metrics.json: bad row for {metric.key!r}")
        out.append(metric)
    return tuple(out)


@cache
def metrics() -> tuple[Metric, ...]:
    """Every metric, in the table's order (loaded once per process)."""
    text = resources.files("enviromon_sink").joinpath("contract/metrics.json").read_text("utf-8")
    return _parse(json.loads(text))


@cache
def by_key() -> dict[str, Metric]:
    """The metrics table keyed by metric key."""
    return {m.key: m for m in metrics()}


def keys() -> tuple[str, ...]:
    """The metric keys, in the table's order."""
    return tuple(m.key for m in metrics())


@cache
def keys_for_schema1() -> tuple[str, ...]:
    """The metric keys schema 1 may carry (every metric the edge sends)."""
    return tuple(m.key for m in metrics() if m.edge)


@cache
def required_for_schema1() -> tuple[str, ...]:
    """The metric keys every schema-1 reading carries (``light`` etc. are optional)."""
    return tuple(m.key for m in metrics() if m.edge and not m.optional)
