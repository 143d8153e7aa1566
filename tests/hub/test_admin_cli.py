"""The `enviromon hub` CLI and the admin HTTP API, against a running hub and without one."""

from __future__ import annotations

import json
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from azure.iot.device import IoTHubDeviceClient, IoTHubModuleClient, Message, MethodResponse
from enviromon_sim.cli import main
from enviromon_sim.iothub.hub import HubThread, read_state
from enviromon_sim.iothub.topics import Identity

from tests.support.hub import HubDevice, sdk_client, start_hub, wait_subscribed, wait_until


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["hub", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def _admin(
    hub: HubThread, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    state = read_state(hub.hub.state_dir)
    assert state is not None
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    req = urllib.request.Request(
        state["admin_url"] + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token if token is not None else state['admin_token']}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_device_add_without_a_hub_then_the_sdk_connects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`device add` and `connection-string` work with no hub; a hub started later accepts it."""
    state = tmp_path / "state"
    rc, out, _ = _cli(
        capsys, "--state-dir", str(state), "device", "add", "pi-1", "--module", "enviro_sensor"
    )
    assert rc == 0
    conn_str = out.strip()
    assert conn_str.startswith(
        "HostName=localhost;DeviceId=pi-1;ModuleId=enviro_sensor;SharedAccessKey="
    )
    # Options after the command work too, as `az` takes them.
    rc, out, _ = _cli(capsys, "connection-string", "pi-1/enviro_sensor", "--state-dir", str(state))
    assert (rc, out.strip()) == (0, conn_str)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700  # holds keys, even with no hub
    assert stat.S_IMODE((state / "registry.json").stat().st_mode) == 0o600
    rc, _, err = _cli(capsys, "--state-dir", str(state), "connection-string", "pi-9")
    assert rc == 1 and "no device" in err
    hub = start_hub(state)
    try:
        assert hub.proxy_port is not None
        dev = HubDevice(
            Identity("pi-1", "enviro_sensor"), conn_str, hub.hub.tls.ca_pem(), hub.proxy_port
        )
        with sdk_client(dev, IoTHubModuleClient) as client:
            client.connect()
            client.send_message_to_output(Message("hi", message_id="c:1"), "telemetry")
        assert [e.body for e in hub.event_log.read_after(0)] == [b"hi"]
    finally:
        hub.stop()


def test_cli_twin_and_invoke_against_a_running_hub(
    hub: HubThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """`device add`, `twin set/show` and `invoke` go through the admin API to a connected client."""
    state = str(hub.hub.state_dir)
    rc, out, _ = _cli(
        capsys, "--state-dir", state, "device", "add", "pi-2", "--module", "enviro_sensor"
    )
    assert rc == 0
    assert hub.proxy_port is not None
    dev = HubDevice(
        Identity("pi-2", "enviro_sensor"), out.strip(), hub.hub.tls.ca_pem(), hub.proxy_port
    )
    rc, _, err = _cli(
        capsys,
        "--state-dir",
        state,
        "invoke",
        "pi-2/enviro_sensor",
        "identify",
        "{}",
        "--timeout",
        "1",
    )
    assert rc == 1 and "404" in err
    patches: queue.Queue[Any] = queue.Queue()
    with sdk_client(dev, IoTHubModuleClient) as client:

        def on_method(req: Any) -> None:
            client.send_method_response(
                MethodResponse.create_from_method_request(req, 200, {"got": req.payload})
            )

        client.on_twin_desired_properties_patch_received = patches.put
        client.on_method_request_received = on_method
        client.connect()
        rc, out, _ = _cli(
            capsys,
            "--state-dir",
            state,
            "twin",
            "set",
            "pi-2/enviro_sensor",
            '{"telemetryInterval": 5}',
        )
        assert rc == 0
        assert json.loads(out)["properties"]["desired"] == {"telemetryInterval": 5, "$version": 2}
        assert patches.get(timeout=10) == {"telemetryInterval": 5, "$version": 2}
        rc, _, err = _cli(
            capsys, "--state-dir", state, "twin", "set", "pi-2/enviro_sensor", '{"a.b": 1}'
        )
        assert rc == 1 and "400" in err
        rc, out, _ = _cli(capsys, "--state-dir", state, "twin", "show", "pi-2/enviro_sensor")
        assert json.loads(out)["properties"]["desired"]["$version"] == 2
        wait_subscribed(hub, dev.identity)
        rc, out, _ = _cli(
            capsys,
            "--state-dir",
            state,
            "invoke",
            "pi-2/enviro_sensor",
            "identify",
            '{"seconds": 5}',
            "--timeout",
            "5",
        )
        assert rc == 0
        assert json.loads(out) == {"status": 200, "payload": {"got": {"seconds": 5}}}
    # A second module of a device the running hub already has.
    rc, out, _ = _cli(capsys, "device", "add", "pi-2", "--module", "other", "--state-dir", state)
    assert rc == 0 and "DeviceId=pi-2;ModuleId=other;" in out
    assert hub.hub.registry.list() == [
        Identity("pi-2"),
        Identity("pi-2", "enviro_sensor"),
        Identity("pi-2", "other"),
    ]


def test_admin_api_checks_token_and_input(hub: HubThread) -> None:
    """No or wrong token → 401; bad JSON, bad values, huge bodies and unknown ids → clear 4xx."""
    hub.hub.add(Identity("pi-1"))
    assert _admin(hub, "GET", "/devices", token="")[0] == 401
    assert _admin(hub, "GET", "/devices", token="wrong")[0] == 401
    assert _admin(hub, "GET", "/devices") == (200, {"devices": ["pi-1"]})
    assert _admin(hub, "PATCH", "/twins/pi-1", b"{not json")[0] == 400
    assert _admin(hub, "PATCH", "/twins/pi-1", {"x": float("nan")})[0] == 400
    assert _admin(hub, "PATCH", "/twins/nobody", {"x": 1})[0] == 404
    assert _admin(hub, "PATCH", "/twins/pi-1", b'{"x": "' + b"y" * 70_000 + b'"}')[0] == 413
    assert _admin(hub, "PUT", "/devices/bad+id")[0] == 400
    assert _admin(hub, "PUT", "/devices/pi-1")[0] == 409
    assert _admin(hub, "POST", "/faults/refuse", {"seconds": "soon"})[0] == 400
    assert _admin(hub, "POST", "/faults/hold-pubacks", {"hold": "yes"})[0] == 400
    assert _admin(hub, "POST", "/methods/pi-1", {"payload": 1})[0] == 400
    status, body = _admin(
        hub, "POST", "/methods/pi-1", {"methodName": "x", "responseTimeoutInSeconds": 1}
    )
    assert status == 404 and "not connected" in body["error"]
    assert _admin(hub, "GET", "/twins/pi-1")[1]["properties"]["desired"] == {"$version": 1}


def test_admin_faults_drop_and_in_process_restart(hub: HubThread, hub_device: Any) -> None:
    """Faults through the admin API: drop, then restart with state kept; the SDK carries on."""
    dev = hub_device("pi-1")
    with sdk_client(dev, IoTHubDeviceClient) as client:
        client.on_method_request_received = lambda req: client.send_method_response(
            MethodResponse.create_from_method_request(req, 201, "ok")
        )
        client.connect()
        client.send_message(Message("1", message_id="a:1"))
        assert _admin(hub, "POST", "/faults/drop") == (200, {"dropped": 1})
        wait_until(lambda: hub.core.connects["pi-1"] >= 2, timeout=20)
        old_core = hub.core
        status, _ = _admin(hub, "POST", "/faults/restart", {"down_seconds": 0.5})
        assert status == 202  # the restart runs after the answer: wait for the new core
        wait_until(
            lambda: hub.hub.core not in (None, old_core) and hub.online(dev.identity), timeout=20
        )
        wait_until(lambda: client.connected, timeout=20)  # the SDK's own view
        client.send_message(Message("2", message_id="a:2"))
        status, body = _admin(
            hub, "POST", "/methods/pi-1", {"methodName": "ping", "responseTimeoutInSeconds": 5}
        )
        assert (status, body) == (200, {"status": 201, "payload": "ok"})
        status, stats = _admin(hub, "GET", "/stats")
        assert status == 200 and stats["online"] == ["pi-1"] and stats["events"] == 2
        assert stats["handlers"] == 1  # the one live connection; the dropped ones are gone
    assert [e.body for e in hub.event_log.read_after(0)] == [b"1", b"2"]


def _read_lines(proc: subprocess.Popen[str], count: int, timeout: float) -> list[str]:
    """The first ``count`` lines ``proc`` prints, failing after ``timeout`` seconds."""
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    deadline = time.monotonic() + timeout
    return [lines.get(timeout=max(0.0, deadline - time.monotonic())) for _ in range(count)]


def test_serve_command_end_to_end(tmp_path: Path) -> None:
    """`enviromon hub serve` prints the CA and admin URL, accepts a device added by the CLI and a
    message from the SDK with the printed connection string, and exits cleanly on SIGTERM."""
    state = tmp_path / "state"
    base = [sys.executable, "-m", "enviromon_sim.cli", "hub", "--state-dir", str(state)]
    conn_str = subprocess.run(
        [*base, "device", "add", "pi-1"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    serve = [sys.executable, "-m", "enviromon_sim.cli", "hub", "serve", "--state-dir", str(state)]
    proc = subprocess.Popen(
        [*serve, "--port", "0", "--proxy-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        lines = _read_lines(proc, 4, timeout=30)
        ca_line = next(line for line in lines if line.startswith("CA certificate"))
        ca_path = Path(ca_line.split(": ", 1)[1].strip())
        assert any(line.startswith("admin API: http://127.0.0.1:") for line in lines)
        hub_state = read_state(state)
        assert hub_state is not None and hub_state["proxy_port"]
        dev = HubDevice(Identity("pi-1"), conn_str, ca_path.read_text(), hub_state["proxy_port"])
        with sdk_client(dev, IoTHubDeviceClient) as client:
            client.connect()
            client.send_message(Message("from the script", message_id="s:1"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert read_state(state) is None  # hub.json removed on a clean stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    from enviromon_sim.iothub.eventlog import EventLog

    with EventLog(state / "events.sqlite") as log:
        events = log.read_after(0)
    assert [(e.body, e.system_properties["iothub-connection-device-id"]) for e in events] == [
        (b"from the script", "pi-1")
    ]


def test_stop_during_an_admin_restart_leaves_nothing_open(tmp_path: Path) -> None:
    """A hub stopped while an admin-API restart is down does not reopen its MQTT listener
    when the restart's down time ends (the restart is cancelled, not left to finish)."""
    import asyncio
    import socket

    import aiohttp
    from enviromon_sim.iothub.hub import Hub, HubConfig

    async def run() -> int:
        hub = Hub(HubConfig(state_dir=tmp_path / "hub", mqtt_port=0, admin_port=0))
        await hub.start()
        port = hub.mqtt_port
        assert port is not None and hub.admin_url is not None
        headers = {"Authorization": f"Bearer {hub.admin_token}"}
        async with aiohttp.ClientSession() as http:
            url = hub.admin_url + "/faults/restart"
            async with http.post(url, json={"down_seconds": 0.5}, headers=headers) as resp:
                assert resp.status == 202
        await asyncio.wait_for(hub.stop(), 15)
        assert hub.background == set()
        # Past the restart's down time: a restart left running would have reopened by now.
        await asyncio.sleep(1.0)
        assert hub.core is None
        return port

    port = asyncio.run(run())
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 2):
        pass
