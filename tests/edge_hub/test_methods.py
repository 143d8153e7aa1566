"""Direct methods against the running module: readNow, identify, resetAirQualityBaseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from enviromon_sim.iothub.hub import HubThread
from enviromon_sim.iothub.topics import METHODS_FILTER

from tests.support.hub import HubDevice, wait_subscribed, wait_until

from .module import device_env, readings_of, run_module, wait_readings

HOSTILE: list[Any] = [
    "x" * 100_000,
    {"seconds": "5"},
    {"seconds": True},
    {"seconds": -1},
    {"seconds": 1e308},
    {"seconds": 301},
    {"seconds": 5, "extra": {"nested": [1, 2, 3]}},
    [5],
    {"seconds": None},
    {"\u202e\x00evil": 1},
]


@pytest.fixture
def module_dev(tmp_path: Path, hub: HubThread, hub_device: Any) -> Any:
    """A running module (status LED on gpiozero's mock pins), subscribed to methods."""
    dev: HubDevice = hub_device("pi-methods")
    env = device_env(tmp_path, dev, tmp_path / "state", ENVIRO_TELEMETRY_INTERVAL="2")
    with run_module(env, tmp_path / "m.log", led=True) as module:
        wait_readings(hub, dev.identity, 1)
        wait_subscribed(hub, dev.identity, METHODS_FILTER)
        yield dev, module
        assert module.proc.poll() is None, module.log()
        code, _ = module.stop()
        assert code == 0, module.log()
        assert "Traceback" not in module.log()


def test_read_now_returns_the_reading_and_sends_it(hub: HubThread, module_dev: Any) -> None:
    """readNow answers 200 with a reading that also reaches the hub (its own seq)."""
    dev, _ = module_dev
    status, payload = hub.invoke(dev.identity, "readNow", None)
    assert status == 200, payload
    reading = payload["reading"]
    wait_until(lambda: reading in readings_of(hub, dev.identity))
    seqs = [r["seq"] for r in readings_of(hub, dev.identity)]
    assert seqs == sorted(set(seqs))  # readNow takes the next seq, nothing doubles


def test_identify_blinks_and_bad_payloads_get_400(hub: HubThread, module_dev: Any) -> None:
    """identify {"seconds": 2} → 200 and the LED in its identify pattern; every hostile
    payload → 400 with a reason; the module keeps sending."""
    dev, _ = module_dev
    status, payload = hub.invoke(dev.identity, "identify", {"seconds": 2})
    assert (status, payload) == (200, {"seconds": 2.0, "pattern": "identify"})
    for bad in HOSTILE:
        status, payload = hub.invoke(dev.identity, "identify", bad)
        assert status == 400, (bad, payload)
        assert "identify" in payload["error"] and len(payload["error"]) < 300
    n = len(readings_of(hub, dev.identity))
    wait_readings(hub, dev.identity, n + 1)


def test_reset_baseline_unknown_method_and_extra_payload(hub: HubThread, module_dev: Any) -> None:
    """resetAirQualityBaseline → 200 burning in; an unknown method → 404 naming the known ones;
    a payload where none is taken → 400."""
    dev, _ = module_dev
    status, payload = hub.invoke(dev.identity, "resetAirQualityBaseline", {})
    assert status == 200 and payload["airQuality"]["state"] == "burning_in", payload
    status, payload = hub.invoke(dev.identity, "selfDestruct", {"now": True})
    assert status == 404
    assert "selfDestruct" in payload["error"] and "readNow" in payload["error"]
    status, payload = hub.invoke(dev.identity, "\u202e<script>" + "a" * 110, None)
    assert status == 404 and len(payload["error"]) < 300
    status, payload = hub.invoke(dev.identity, "readNow", {"please": 1})
    assert status == 400 and "no payload" in payload["error"]
