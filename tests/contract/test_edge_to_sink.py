"""The contract across parts: whatever the edge pipeline sends, the sink reads back unchanged."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
from enviro_sensor.airquality import AirQuality
from enviro_sensor.config import ModuleConfig
from enviro_sensor.message import pack
from enviro_sensor.metrics import edge_metrics
from enviro_sensor.pipeline import Pipeline
from enviro_sensor.reading import RawReading
from enviro_sensor.sensors import EnviroSensor, SensorSettings
from enviromon_sink.events import InboundEvent
from enviromon_sink.normalise import normalise
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.edge.fake_enviro import FakeEnviroBus
from tests.edge.pipeline_doubles import FakeClock

EDGE_KEYS = [m.key for m in edge_metrics()]
SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "contract/telemetry-v1.schema.json").read_text()
)

# Anything a sensor driver could hand over, including values no real chip would give.
wild = st.floats(allow_nan=True, allow_infinity=True, width=64)
raw_readings = st.builds(
    RawReading,
    temperature=st.one_of(st.floats(-45, 90), wild),
    humidity=st.one_of(st.floats(-5, 105), wild),
    pressure=st.one_of(st.floats(290, 1110), wild),
    gas_resistance=st.one_of(st.none(), st.floats(0, 2e8), wild),
    heat_stable=st.booleans(),
    source=st.sampled_from(["bme680", "bme280", "simulated"]),
    light=st.one_of(st.none(), st.floats(-5, 250_000), wild),
    flags=st.sampled_from([(), ("light_unavailable",)]),
)


# Any id the edge's check_device_id accepts (printable, ≤ 128, valid Unicode): `Küche`,
# `lab/pi-1`, markup. The sink must take it back as the label, and as a hub id.
device_ids = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=128).filter(
    str.isprintable
) | st.sampled_from(["pi-kitchen", "Küche", "lab/pi-1", "<img src=x onerror=alert(1)>"])


def _pipeline(tmp: Path, device_id: str, altitude: float | None = None) -> Pipeline:
    return Pipeline(
        device_id=device_id,
        config=ModuleConfig(altitude=altitude),
        air_quality=AirQuality(source="bme680", state_path=tmp / "baseline.json"),
        clock=FakeClock(),
    )


@settings(max_examples=60, deadline=None)
@given(
    batch=st.lists(raw_readings, min_size=1, max_size=5),
    packed=st.booleans(),
    device_id=device_ids,
    altitude=st.one_of(st.none(), st.floats(-500, 9000)),
)
def test_every_edge_message_is_valid_and_read_back_unchanged(
    tmp_path_factory: pytest.TempPathFactory,
    batch: list[RawReading],
    packed: bool,
    altitude: float | None,
    device_id: str,
) -> None:
    """Edge output validates against the schema; the sink keeps its boot, seq, values, flags, id."""
    tmp = tmp_path_factory.mktemp("edge")
    pipeline = _pipeline(tmp, device_id, altitude)
    readings = [pipeline.process(raw) for raw in batch]
    messages = (
        [pack(readings, as_array=True)] if packed else [pack([r], as_array=False) for r in readings]
    )

    accepted = []
    for message in messages:
        jsonschema.validate(json.loads(message.body), SCHEMA)
        event = InboundEvent(
            body=message.body,
            device_id=device_id,  # the hub's id; the body's deviceId is only a label
            properties=message.properties,
            enqueued_time=datetime(2026, 11, 25, 3, 21, tzinfo=UTC),
            sequence_number=1,
            message_id=message.message_id,
        )
        accepted.extend(normalise(event, temperature_alert=None))

    assert len(accepted) == len(readings)
    for sent, got in zip(readings, accepted, strict=True):
        payload = sent.payload
        assert got.device_id == device_id
        assert got.label == device_id
        assert (got.boot, got.seq, got.source) == (
            payload["boot"],
            payload["seq"],
            payload["source"],
        )
        assert got.calibration == payload["calibration"]
        assert set(payload["flags"]) <= set(got.flags)
        assert "label_dropped" not in got.flags
        assert got.ts == datetime.fromisoformat(payload["ts"].replace("Z", "+00:00"))
        for key in EDGE_KEYS:
            value = got.values.get(key)
            assert value == payload.get(key), key
            assert value is None or math.isfinite(value)
        # The alert the edge raised travels as the temperatureAlert property.
        # The edge's alert travels as the message's temperatureAlert property, so in a packed
        # message it marks every reading in it.
        assert got.alert == (any(r.alert for r in readings) if packed else sent.alert)


def test_enviro_board_messages_validate_and_read_back_unchanged(tmp_path: Path) -> None:
    """The real Enviro driver's messages (light, no gas) pass the schema and the sink keeps them."""
    bus = FakeEnviroBus()
    sensor = EnviroSensor(settings=SensorSettings(kind="enviro"), i2c_device=bus)
    pipeline = Pipeline(
        device_id="pi-enviro",
        config=ModuleConfig(),
        air_quality=AirQuality(source="bme280", state_path=tmp_path / "aq.json"),
        clock=FakeClock(),
    )
    readings = []
    for ch0 in (0, 10, 1000, 60000):
        bus.ch0, bus.ch1 = ch0, ch0 // 3
        readings.append(pipeline.process(sensor.read()))
    for message in (pack(readings, as_array=True), pack(readings[:1], as_array=False)):
        jsonschema.validate(json.loads(message.body), SCHEMA)
        event = InboundEvent(
            body=message.body,
            device_id="pi-8",
            properties=message.properties,
            enqueued_time=datetime(2026, 11, 25, 3, 21, tzinfo=UTC),
            sequence_number=1,
            message_id=message.message_id,
        )
        got = normalise(event, temperature_alert=None)
        for sent, back in zip(message.readings, got, strict=True):
            assert back.source == "bme280"
            assert back.values["light"] == sent.payload["light"]
            assert back.values["gasResistance"] is None and back.values["iaq"] is None
            for key in EDGE_KEYS:
                assert back.values.get(key) == sent.payload.get(key), key
