"""Module twin: desired patches, refused patches, and the whole twin after an offline change."""

from __future__ import annotations

import itertools
import statistics
from datetime import datetime
from pathlib import Path
from typing import Any

from enviromon_sim.iothub.hub import HubThread

from tests.support.hub import HubDevice, wait_until

from .module import device_env, readings_of, reported, run_module, wait_readings


def _ts(reading: dict[str, Any]) -> float:
    return datetime.fromisoformat(reading["ts"].replace("Z", "+00:00")).timestamp()


def _applied(hub: HubThread, dev: HubDevice, version: int) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        config = reported(hub, dev.identity).get("config", {})
        return config if config.get("version") == version else None

    result: dict[str, Any] = wait_until(done, timeout=20)
    return result


def test_desired_patch_changes_interval_and_calibration(
    tmp_path: Path, hub: HubThread, hub_device: Any
) -> None:
    """A patch of telemetryInterval and a temperature intercept: the next messages carry the
    new calibration version, read 1.5 s apart, and are 10 °C warmer."""
    dev: HubDevice = hub_device("pi-twin")
    with run_module(device_env(tmp_path, dev, tmp_path / "state"), tmp_path / "m.log") as module:
        before = wait_readings(hub, dev.identity, 4)
        twin = hub.patch_desired(
            dev.identity,
            {"telemetryInterval": 1.5, "calibration": {"temperature": {"intercept": 10.0}}},
        )
        version = twin["properties"]["desired"]["$version"]
        config = _applied(hub, dev, version)
        assert config["status"] == "applied" and config["errors"] == []
        wait_until(
            lambda: sum(r["calibration"] == version for r in readings_of(hub, dev.identity)) >= 4,
            timeout=20,
        )
        module.stop()
    readings = readings_of(hub, dev.identity)
    old = [r for r in readings if r["calibration"] < version]
    new = [r for r in readings if r["calibration"] == version]
    assert len(old) >= 4 and len(new) >= 4
    # Calibration versions never go back within the run, and seq stays 1, 2, 3, ...
    assert [r["seq"] for r in readings] == list(range(1, len(readings) + 1))
    first_new = readings.index(new[0])
    assert all(r["calibration"] == version for r in readings[first_new:])
    gaps = [_ts(b) - _ts(a) for a, b in itertools.pairwise(new)]
    assert all(1.3 <= g <= 2.5 for g in gaps), gaps
    shift = statistics.mean(r["temperature"] for r in new[:3]) - statistics.mean(
        r["temperature"] for r in before[-3:]
    )
    assert 9.0 <= shift <= 11.0, shift  # the simulated room drifts by far less than 1 °C


def test_invalid_patch_is_refused_whole_and_reported(
    tmp_path: Path, hub: HubThread, hub_device: Any
) -> None:
    """A patch with three bad fields and one good one: refused whole, every reason reported,
    the old config (and its version) stays in the messages."""
    dev: HubDevice = hub_device("pi-bad")
    with run_module(device_env(tmp_path, dev, tmp_path / "state"), tmp_path / "m.log") as module:
        good = hub.patch_desired(dev.identity, {"alerts": {"temperatureHigh": 28.0}})
        good_v = good["properties"]["desired"]["$version"]
        _applied(hub, dev, good_v)
        bad = hub.patch_desired(
            dev.identity,
            {
                "telemetryInterval": 0,
                "calibration": {"humidity": {"slope": -1}},
                "colour": "blue",
                "led": {"enabled": False},
            },
        )
        bad_v = bad["properties"]["desired"]["$version"]

        def refused() -> dict[str, Any] | None:
            config = reported(hub, dev.identity).get("config", {})
            return config if config.get("refusedVersion") == bad_v else None

        config = wait_until(refused, timeout=20)
        n = len(readings_of(hub, dev.identity))
        wait_readings(hub, dev.identity, n + 3)
        assert module.proc.poll() is None, module.log()
        module.stop()
    assert config["status"] == "refused"
    assert config["version"] == good_v
    errors = " | ".join(config["errors"])
    assert len(config["errors"]) == 3, config["errors"]
    for field in ("telemetryInterval", "calibration.humidity.slope", "colour"):
        assert field in errors
    after = readings_of(hub, dev.identity)[n:]
    assert after and all(r["calibration"] == good_v for r in after)


def test_whole_twin_after_offline_change_drops_the_deleted_property(
    tmp_path: Path, hub: HubThread, hub_device: Any
) -> None:
    """Calibrated (+10 °C), stopped; the calibration is deleted from the twin while the module
    is off; at the next start the stored config calibrates until the whole twin arrives, which
    replaces it: the intercept is back to its default."""
    dev: HubDevice = hub_device("pi-offline")
    state = tmp_path / "state"
    env = device_env(tmp_path, dev, state)
    with run_module(env, tmp_path / "m1.log") as module:
        twin = hub.patch_desired(
            dev.identity,
            {"calibration": {"temperature": {"intercept": 10.0}}, "telemetryInterval": 0.5},
        )
        v1 = twin["properties"]["desired"]["$version"]
        _applied(hub, dev, v1)
        wait_until(lambda: any(r["calibration"] == v1 for r in readings_of(hub, dev.identity)))
        code, _ = module.stop()
        assert code == 0, module.log()
    assert '"intercept": 10.0' in (state / "config.json").read_text()
    warm = [r for r in readings_of(hub, dev.identity) if r["calibration"] == v1]

    twin = hub.patch_desired(dev.identity, {"calibration": None})  # deleted while offline
    v2 = twin["properties"]["desired"]["$version"]
    assert "calibration" not in twin["properties"]["desired"]
    n = len(readings_of(hub, dev.identity))
    with run_module(env, tmp_path / "m2.log") as module:
        _applied(hub, dev, v2)
        wait_until(
            lambda: sum(r["calibration"] == v2 for r in readings_of(hub, dev.identity)) >= 3,
            timeout=20,
        )
        module.stop()
    second = readings_of(hub, dev.identity)[n:]
    plain = [r for r in second if r["calibration"] == v2]
    shift = statistics.mean(r["temperature"] for r in warm[-3:]) - statistics.mean(
        r["temperature"] for r in plain[:3]
    )
    assert 9.0 <= shift <= 11.0, shift
    # Before the twin came, the stored config (v1) was in force: never the env defaults (0).
    assert {r["calibration"] for r in second} <= {v1, v2}
    assert '"intercept": 0.0' in (state / "config.json").read_text()


def test_reconnect_fetches_the_whole_twin_again(
    tmp_path: Path, hub: HubThread, hub_device: Any
) -> None:
    """The connection drops and the hub refuses for 3 s; a change made meanwhile is in force
    after the reconnect, and the module fetched the whole twin again (twinFetches 2)."""
    dev: HubDevice = hub_device("pi-reconnect")
    with run_module(device_env(tmp_path, dev, tmp_path / "state"), tmp_path / "m.log") as module:
        wait_until(lambda: reported(hub, dev.identity).get("hub", {}).get("twinFetches") == 1)
        hub.refuse_connections(3)
        hub.drop_connections()
        twin = hub.patch_desired(dev.identity, {"alerts": {"temperatureHigh": 26.0}})
        version = twin["properties"]["desired"]["$version"]
        _applied(hub, dev, version)
        wait_until(lambda: reported(hub, dev.identity)["hub"]["twinFetches"] == 2, timeout=20)
        n = len(readings_of(hub, dev.identity))
        wait_readings(hub, dev.identity, n + 2)
        code, _ = module.stop()
    assert code == 0, module.log()
    assert readings_of(hub, dev.identity)[-1]["calibration"] == version
