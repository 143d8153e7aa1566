"""`enviromon calibrate`: the intercept rule (property-based), and the whole round trip on the
local hub with a real SDK module client that applies patches with the edge module's own
config and calibration code."""

from __future__ import annotations

import json
import math
import threading
from typing import Any

import pytest
from azure.iot.device import IoTHubModuleClient, Message
from enviro_sensor.calibration import linear
from enviro_sensor.config import ModuleConfig
from enviromon_sim.cli import main
from enviromon_sim.exitcodes import EXIT_TIMEOUT
from enviromon_sim.iothub.hub import HubThread
from enviromon_sim.ops.calibrate import check_desired, latest_in_body, patch_for, plan
from enviromon_sim.ops.errors import OpsError
from hypothesis import given
from hypothesis import strategies as st

from tests.support.hub import HubDevice, sdk_client, wait_subscribed

finite = st.floats(min_value=-50, max_value=1100, allow_nan=False)
slopes = st.floats(min_value=0.5, max_value=2.0, allow_nan=False)


@given(raw=finite, slope=slopes, old=st.floats(-20, 20), reference=finite)
def test_new_intercept_makes_the_reading_match_the_reference(
    raw: float, slope: float, old: float, reference: float
) -> None:
    """With the slope kept, the device's next reading of the same raw value is the reference."""
    reported = raw * slope + old
    changes = plan(
        {"temperature": {"slope": slope, "intercept": old}},
        {"temperature": reported},
        {"temperature": reference},
    )
    (change,) = changes
    assert change.slope == slope and change.old_intercept == old
    assert math.isclose(raw * slope + change.new_intercept, reference, abs_tol=1e-3)
    assert patch_for(changes) == {
        "calibration": {"temperature": {"slope": slope, "intercept": change.new_intercept}}
    }


def test_plan_refuses_what_it_cannot_compute() -> None:
    """No value to compare, an uncalibrated quantity, NaN or a malformed twin: clear errors."""
    with pytest.raises(OpsError, match="no humidity"):
        plan({}, {"temperature": 20.0}, {"humidity": 40.0})
    with pytest.raises(OpsError, match="not calibrated"):
        plan({}, {"iaq": 20.0}, {"iaq": 40.0})
    with pytest.raises(OpsError, match="finite"):
        plan({}, {"temperature": 20.0}, {"temperature": math.nan})
    with pytest.raises(OpsError, match="not a number"):
        plan({"temperature": {"intercept": "x"}}, {"temperature": 20.0}, {"temperature": 21.0})


def test_a_patch_the_module_would_refuse_is_not_made() -> None:
    """An intercept outside the twin schema's range, or a twin already holding a bad field,
    is refused before patching; a good one passes."""
    check_desired(
        {"$version": 3}, patch_for(plan({}, {"temperature": 20.0}, {"temperature": 21.0}))
    )
    far = plan({}, {"temperature": 80.0}, {"temperature": -60.0})  # intercept -140 °C
    with pytest.raises(OpsError, match="calibration/temperature/intercept"):
        check_desired({}, patch_for(far))
    with pytest.raises(OpsError, match="would refuse"):
        check_desired({"telemetryInterval": "fast"}, {"calibration": {}})


def test_latest_in_body_reads_single_and_packed_messages() -> None:
    """An object or an array of schema-1 readings; the highest seq wins; others are ignored."""
    one = {"schema": 1, "boot": "ab", "seq": 3, "temperature": 20.5, "calibration": 2}
    got = latest_in_body(json.dumps(one).encode())
    assert got is not None and got.values == {"temperature": 20.5} and got.calibration == 2
    packed = [dict(one, seq=5, temperature=21.0), dict(one, seq=4, temperature=22.0)]
    got = latest_in_body(json.dumps(packed).encode())
    assert got is not None and got.values["temperature"] == 21.0 and got.marker == "ab:5"
    assert latest_in_body(b'{"temperature": 20}') is None  # not schema 1: no calibration field
    assert latest_in_body(b"\xff") is None


class FakePi:
    """A real SDK module client that reads a constant raw temperature and humidity, applies
    desired patches with ModuleConfig.apply_patch and calibrates with the edge's linear()."""

    RAW_T = 23.1
    RAW_H = 41.0

    def __init__(self, dev: HubDevice) -> None:
        self.config = ModuleConfig()
        self.dev = dev
        self.stop = threading.Event()
        self.seq = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def on_patch(self, patch: dict[str, Any]) -> None:
        self.config = self.config.apply_patch(patch)

    def run(self) -> None:
        with sdk_client(self.dev, IoTHubModuleClient) as client:
            client.on_twin_desired_properties_patch_received = self.on_patch
            client.connect()
            self.config = self.config.apply_patch(client.get_twin()["desired"])
            while not self.stop.wait(0.2):
                self.seq += 1
                cal = self.config.calibration
                body = {
                    "schema": 1,
                    "deviceId": "pi-1",
                    "boot": "0123456789abcdef",
                    "seq": self.seq,
                    "ts": "2026-12-01T00:00:00Z",
                    "source": "simulated",
                    "temperature": round(linear(self.RAW_T, cal.temperature), 2),
                    "humidity": round(linear(self.RAW_H, cal.humidity), 2),
                    "pressure": 1000.0,
                    "gasResistance": None,
                    "iaq": None,
                    "calibration": self.config.version,
                    "flags": [],
                }
                client.send_message_to_output(Message(json.dumps(body)), "telemetry")


def test_calibrate_round_trip_on_the_local_hub(
    hub: HubThread,
    hub_device: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """calibrate patches the module twin and returns once a reading with the new version
    arrives, showing the reference values; a second calibration starts from the first."""
    monkeypatch.delenv("IOTHUB_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("ENVIROMON_API_URL", raising=False)
    dev = hub_device("pi-1/enviro_sensor")
    pi = FakePi(dev)
    pi.thread.start()
    try:
        wait_subscribed(hub, dev.identity, "$iothub/twin/PATCH/properties/desired/#")
        base = ["--state-dir", str(hub.hub.state_dir), "--timeout", "30"]
        rc = main(
            [
                "calibrate",
                "pi-1/enviro_sensor",
                "--temperature",
                "21.3",
                "--humidity",
                "48",
                "--json",
                *base,
            ]
        )
        out, err = capsys.readouterr()
        assert rc == 0, err
        result = json.loads(out)
        assert result["version"] == 2
        assert result["reading"]["calibration"] == 2
        assert result["reading"]["values"]["temperature"] == pytest.approx(21.3, abs=0.01)
        assert result["reading"]["values"]["humidity"] == pytest.approx(48.0, abs=0.01)
        desired = hub.get_twin(dev.identity)["properties"]["desired"]
        assert desired["calibration"]["temperature"] == {"slope": 1.0, "intercept": -1.8}
        # Again, from the new intercept: only the temperature changes.
        rc = main(["calibrate", "pi-1", "--module", "enviro_sensor", "--temperature", "22", *base])
        out, err = capsys.readouterr()
        assert rc == 0, err
        assert "intercept -1.8 -> -1.1" in out
        assert "calibration version 3 applied: temperature 22" in out
    finally:
        pi.stop.set()
        pi.thread.join(20)
    # The device is gone now: the patch is made, and the wait ends with its own exit code.
    rc = main(
        [
            "calibrate",
            "pi-1/enviro_sensor",
            "--temperature",
            "21",
            "--state-dir",
            str(hub.hub.state_dir),
            "--timeout",
            "1",
        ]
    )
    _, err = capsys.readouterr()
    assert rc == EXIT_TIMEOUT
    assert "no reading from pi-1/enviro_sensor with calibration version 4" in err
    rc = main(["calibrate", "pi-9", "--temperature", "21", "--state-dir", str(hub.hub.state_dir)])
    _, err = capsys.readouterr()
    assert rc == 1 and err.startswith("error:") and "404" in err
