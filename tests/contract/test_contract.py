"""The telemetry contract: one canonical copy in contract/, identical copies in each part."""

import json
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[2]
CANONICAL = ROOT / "contract"
COPIES = [
    ROOT / "edge/modules/enviro_sensor/src/enviro_sensor/contract",
    ROOT / "cloud/sink/enviromon_sink/contract",
    ROOT / "dashboard/contract",
    ROOT / "sim/src/enviromon_sim/contract",
]


@pytest.mark.parametrize("copy", COPIES, ids=lambda p: str(p.relative_to(ROOT)))
@pytest.mark.parametrize(
    "name", ["metrics.json", "telemetry-v1.schema.json", "twin-desired-v1.schema.json"]
)
def test_copies_match_canonical(copy: Path, name: str) -> None:
    """Every part ships the canonical contract unchanged (run `make contract` after an edit)."""
    assert (copy / name).read_bytes() == (CANONICAL / name).read_bytes()


def test_schema_is_valid_and_matches_metric_ranges() -> None:
    """The JSON Schema is itself valid, and its value ranges are the metrics table's."""
    schema = json.loads((CANONICAL / "telemetry-v1.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    metrics = json.loads((CANONICAL / "metrics.json").read_text())["metrics"]
    props = schema["$defs"]["reading"]["properties"]
    for metric in metrics:
        if not metric["edge"]:
            assert metric["key"] not in props
            continue
        assert props[metric["key"]]["minimum"] == metric["min"], metric["key"]
        assert props[metric["key"]]["maximum"] == metric["max"], metric["key"]


def test_design_example_validates() -> None:
    """The example message in docs/contract.md is a valid schema-1 message, alone or packed."""
    schema = json.loads((CANONICAL / "telemetry-v1.schema.json").read_text())
    example = json.loads((CANONICAL / "examples/reading-v1.json").read_text())
    jsonschema.validate(example, schema)
    jsonschema.validate([example, {**example, "seq": 43}], schema)
    for bad in (
        {**example, "source": "bmp280"},
        {**example, "seq": 0},
        {**example, "humidity": 101},
        {**example, "extra": 1},
        [],
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
