"""A real sensor (the bme680 library on a fake I2C bus) failing mid-run, against the hub."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from enviromon_sim.iothub.hub import HubThread

from tests.support.hub import HubDevice, wait_until

from .module import device_env, readings_of, reported, wait_readings

REPO = Path(__file__).resolve().parents[2]


def test_sensor_io_error_mid_run_is_reported_never_simulated(
    tmp_path: Path, hub: HubThread, hub_device: Any
) -> None:
    """Cable pulled after a few readings: the module keeps running, reports the sensor's health
    as degraded/failed, sends nothing while it fails (never simulated values), and carries on
    with the next seq once the cable is back."""
    dev: HubDevice = hub_device("pi-i2c")
    control = tmp_path / "i2c-control"
    control.write_text("ok")
    env = device_env(
        tmp_path, dev, tmp_path / "state", ENVIRO_SENSOR="bme680", FAKE_I2C_CONTROL=str(control)
    )
    env["PYTHONPATH"] = str(REPO)
    log = tmp_path / "m.log"
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.edge_hub.fake_i2c_module", "--no-led"],
            stdout=subprocess.DEVNULL,
            stderr=fh,
            env=env,
            cwd=REPO,
        )
    try:
        wait_readings(hub, dev.identity, 3, timeout=30)
        control.write_text("unplugged")
        state = wait_until(
            lambda: (
                reported(hub, dev.identity).get("sensor", {}).get("state") in ("degraded", "failed")
                and reported(hub, dev.identity)["sensor"]
            ),
            timeout=30,
        )
        during = len(readings_of(hub, dev.identity))
        wait_until(lambda: reported(hub, dev.identity)["reads"]["failed"] >= 3, timeout=30)
        assert len(readings_of(hub, dev.identity)) <= during + 1  # at most one in flight
        assert proc.poll() is None, log.read_text()
        control.write_text("ok")
        wait_readings(hub, dev.identity, during + 3, timeout=60)
        wait_until(lambda: reported(hub, dev.identity)["sensor"]["state"] == "ok", timeout=30)
    finally:
        proc.terminate()
        code = proc.wait(timeout=30)
    assert code == 0, log.read_text()
    readings = readings_of(hub, dev.identity)
    assert {r["source"] for r in readings} == {"bme680"}
    assert [r["seq"] for r in readings] == list(range(1, len(readings) + 1))
    assert state["kind"] == "bme680" and state["address"] == "0x76"
    assert state["lastError"]
