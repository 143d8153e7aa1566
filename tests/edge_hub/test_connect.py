"""Connecting: the IoT Edge path, a device connection string, and no hub configured."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
from enviro_sensor.metrics import telemetry_schema
from enviromon_sim.iothub.hub import HubThread
from enviromon_sim.iothub.topics import Identity

from tests.support.hub import HubDevice

from .module import SCRIPT, base_env, device_env, events_of, run_module, wait_readings


def check_events(hub: HubThread, identity: Identity, n: int) -> list[dict[str, Any]]:
    """The first ``n`` events: schema-1 bodies, the message properties, seq 1..n of one boot."""
    readings = wait_readings(hub, identity, n)
    events = events_of(hub, identity)[:n]
    for event, reading in zip(events, readings, strict=False):
        jsonschema.validate(reading, telemetry_schema())
        assert event.system_properties["content-type"] == "application/json"
        assert event.system_properties["content-encoding"] == "utf-8"
        assert event.system_properties["message-id"] == f"{reading['boot']}:{reading['seq']}"
        assert event.properties["source"] == "simulated" == reading["source"]
        assert event.properties["temperatureAlert"] in ("true", "false")
    assert [r["seq"] for r in readings[:n]] == list(range(1, n + 1))
    assert len({r["boot"] for r in readings}) == 1
    return readings


def test_iot_edge_path_reaches_the_event_log(
    tmp_path: Path, edge_hub: tuple[HubThread, Path]
) -> None:
    """Under IoT Edge (IOTEDGE_* + workload API): readings arrive as module output `telemetry`,
    with the hub's device and module id, and the module exits 0 on SIGTERM."""
    hub, sock = edge_hub
    identity = Identity("pi-edge", "enviro_sensor")
    creds = hub.hub.add(identity)
    env = base_env(
        tmp_path,
        tmp_path / "state",
        IOTEDGE_WORKLOADURI=f"unix://{sock}",
        IOTEDGE_DEVICEID="pi-edge",
        IOTEDGE_MODULEID="enviro_sensor",
        IOTEDGE_IOTHUBHOSTNAME="localhost",
        IOTEDGE_GATEWAYHOSTNAME="localhost",
        IOTEDGE_APIVERSION="2019-01-30",
        IOTEDGE_MODULEGENERATIONID=str(creds.generation_id),
        ENVIRO_HUB_PROXY=f"http://127.0.0.1:{hub.proxy_port}",
    )
    with run_module(env, tmp_path / "module.log") as module:
        readings = check_events(hub, identity, 3)
        code, _ = module.stop(signal.SIGTERM)
    assert code == 0, module.log()
    events = events_of(hub, identity)
    assert {e.system_properties["iothub-connection-module-id"] for e in events} == {"enviro_sensor"}
    # The module routes only to `telemetry`: anything else would be counted as unrouted.
    assert hub.run(lambda: hub.core.stats.get("messages_unrouted", 0)) == 0
    assert readings[0]["deviceId"] == "pi-edge"
    assert "Traceback" not in module.log()


def test_device_connection_string_reaches_the_event_log(
    tmp_path: Path, hub: HubThread, hub_device: Any
) -> None:
    """A plain device app (IOTHUB_DEVICE_CONNECTION_STRING, CA file, proxy): the same messages,
    with the hub's device id and no module id; SIGINT stops it like SIGTERM."""
    dev: HubDevice = hub_device("pi-plain")
    env = device_env(tmp_path, dev, tmp_path / "state")
    with run_module(env, tmp_path / "module.log") as module:
        readings = check_events(hub, dev.identity, 3)
        code, _ = module.stop(signal.SIGINT)
    assert code == 0, module.log()
    assert readings[0]["deviceId"] == "pi-plain"
    assert all(
        "iothub-connection-module-id" not in e.system_properties
        for e in events_of(hub, dev.identity)
    )
    # The key never reaches the log.
    assert dev.connection_string.split("SharedAccessKey=")[1] not in module.log()


def test_module_connection_string_sends_to_the_telemetry_output(
    tmp_path: Path, hub: HubThread, hub_device: Any
) -> None:
    """A module connection string (ModuleId=…) without IoT Edge: module id set by the hub."""
    dev: HubDevice = hub_device("pi-m/enviro_sensor")
    env = device_env(tmp_path, dev, tmp_path / "state")
    with run_module(env, tmp_path / "module.log") as module:
        check_events(hub, dev.identity, 2)
        code, _ = module.stop()
    assert code == 0, module.log()


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "--no-led", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_no_hub_configured_is_a_clear_error(tmp_path: Path) -> None:
    """Neither IoT Edge nor a connection string: exit 5, one line saying what to set."""
    result = _cli(base_env(tmp_path, tmp_path / "state"), "--count", "1")
    assert result.returncode == 5, result.stderr
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "IOTHUB_DEVICE_CONNECTION_STRING" in line and "IoT Edge" in line and "--print" in line


def test_print_mode_needs_no_hub(tmp_path: Path) -> None:
    """--print keeps the stdout mode: no hub needed, no SDK involved."""
    result = _cli(base_env(tmp_path, tmp_path / "state"), "--count", "1", "--print")
    assert result.returncode == 0, result.stderr
    jsonschema.validate(json.loads(result.stdout), telemetry_schema())


def test_bad_hub_variables_are_named_at_once(tmp_path: Path) -> None:
    """A bad connection string, proxy and CA file: every variable named, exit 5, no key shown."""
    env = base_env(
        tmp_path,
        tmp_path / "state",
        IOTHUB_DEVICE_CONNECTION_STRING="HostName=h;SharedAccessKey=s3cr3t;Bogus=1",
        ENVIRO_HUB_PROXY="ftp://proxy:21",
        ENVIRO_HUB_CA_FILE=str(tmp_path / "missing.pem"),
        ENVIRO_HUB_RETRY_INTERVAL="0",
    )
    result = _cli(env, "--count", "1")
    assert result.returncode == 5, result.stderr
    assert "Traceback" not in result.stderr
    for needle in (
        "IOTHUB_DEVICE_CONNECTION_STRING: missing DeviceId",
        "unknown field 'Bogus'",
        "ENVIRO_HUB_PROXY",
        "ENVIRO_HUB_CA_FILE",
        "ENVIRO_HUB_RETRY_INTERVAL",
    ):
        assert needle in result.stderr
    assert "s3cr3t" not in result.stderr


def test_hub_unreachable_at_start_keeps_reading(tmp_path: Path) -> None:
    """No hub listening at start: the module keeps reading, retries, and stops on SIGTERM."""
    env = base_env(
        tmp_path,
        tmp_path / "state",
        IOTHUB_DEVICE_CONNECTION_STRING="HostName=127.0.0.1;DeviceId=d;SharedAccessKey=a2V5",
        ENVIRO_HUB_PROXY="http://127.0.0.1:9",  # discard port: nothing listens
    )
    with run_module(env, tmp_path / "module.log") as module:
        import time

        time.sleep(3)
        assert module.proc.poll() is None, module.log()
        code, took = module.stop()
    assert code == 0, module.log()
    assert took < 15
    assert "not connected" in module.log()


def test_sigterm_with_a_hung_hub_exits_within_seconds(
    tmp_path: Path, hub: HubThread, hub_device: Any
) -> None:
    """The hub stores messages but never acknowledges them (sends hang): SIGTERM still ends
    the module within 15 s with exit code 0."""
    dev: HubDevice = hub_device("pi-hung")
    env = device_env(tmp_path, dev, tmp_path / "state")
    with run_module(env, tmp_path / "module.log") as module:
        wait_readings(hub, dev.identity, 2)
        hub.hold_pubacks(True)
        import time

        time.sleep(2)  # a send is now waiting for its acknowledgement
        code, took = module.stop()
        hub.hold_pubacks(False)
    assert code == 0, module.log()
    assert took < 15, took
