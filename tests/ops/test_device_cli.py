"""`enviromon device add|list|show|delete` and `twin`, against the local hub (running or not)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from azure.iot.device import IoTHubDeviceClient
from azure.iot.device.exceptions import CredentialError, NoConnectionError
from enviromon_sim.cli import main
from enviromon_sim.exitcodes import EXIT_PORT_IN_USE
from enviromon_sim.iothub.hub import HubThread
from enviromon_sim.iothub.topics import Identity

from tests.support.hub import HubDevice, sdk_client, wait_until


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(autouse=True)
def _no_real_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real hub's connection string in the environment must not send these tests to Azure."""
    monkeypatch.delenv("IOTHUB_CONNECTION_STRING", raising=False)


def test_percent_and_query_characters_survive_the_admin_api(
    hub: HubThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """`device add "odd%41"` registers `odd%41` (not `oddA`), and `a?b` is not cut at the `?`,
    both through `hub device add` and `device add`; show and delete find them again."""
    state = str(hub.hub.state_dir)
    rc, out, err = _cli(capsys, "hub", "--state-dir", state, "device", "add", "odd%41")
    assert rc == 0, err
    assert "DeviceId=odd%41;" in out
    rc, out, err = _cli(capsys, "device", "add", "a?b", "--module", "m%2F", "--state-dir", state)
    assert rc == 0, err
    assert "DeviceId=a?b;ModuleId=m%2F;" in out
    assert hub.hub.registry.list() == [
        Identity("a?b"),
        Identity("a?b", "m%2F"),
        Identity("odd%41"),
    ]
    rc, out, _ = _cli(capsys, "device", "show", "odd%41", "--state-dir", state)
    assert rc == 0 and json.loads(out)["deviceId"] == "odd%41"
    rc, out, _ = _cli(capsys, "device", "delete", "a?b/m%2F", "--state-dir", state)
    assert (rc, out) == (0, "deleted a?b/m%2F\n")
    assert Identity("a?b", "m%2F") not in hub.hub.registry.list()


def test_device_commands_against_a_running_hub(
    hub: HubThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """add, list, show (no keys, live connection state) and delete, which also closes the
    deleted device's connection and removes its twin; unknown ids get a one-line error."""
    state = str(hub.hub.state_dir)
    rc, out, _ = _cli(capsys, "device", "add", "pi-1", "--state-dir", state)
    assert rc == 0
    conn_str = out.strip()
    assert _cli(capsys, "device", "add", "pi-1/enviro_sensor", "--state-dir", state)[0] == 0
    rc, out, _ = _cli(capsys, "device", "list", "--json", "--state-dir", state)
    assert json.loads(out) == ["pi-1", "pi-1/enviro_sensor"]
    assert hub.proxy_port is not None
    dev = HubDevice(Identity("pi-1"), conn_str, hub.hub.tls.ca_pem(), hub.proxy_port)
    client = IoTHubDeviceClient.create_from_connection_string(conn_str, **dev.client_kwargs())
    try:
        client.connect()
        rc, out, _ = _cli(capsys, "device", "show", "pi-1", "--state-dir", state)
        view = json.loads(out)
        assert view == {
            "deviceId": "pi-1",
            "modules": ["enviro_sensor"],
            "authentication": {"type": "sas"},
            "connectionState": "Connected",
        }
        assert "Key" not in out and "key" not in out
        rc, out, _ = _cli(
            capsys, "twin", "update", "pi-1", "--desired", '{"x": 1}', "--state-dir", state
        )
        assert rc == 0 and json.loads(out)["properties"]["desired"]["x"] == 1
        rc, out, _ = _cli(capsys, "device", "delete", "pi-1", "--state-dir", state)
        assert (rc, out) == (0, "deleted pi-1\ndeleted pi-1/enviro_sensor\n")
        wait_until(lambda: not hub.online(Identity("pi-1")), timeout=10)
        assert hub.hub.registry.list() == []
    finally:
        # The hub closed the deleted device's connection: the SDK's goodbye may find none.
        with contextlib.suppress(NoConnectionError):
            client.shutdown()
    rc, _, err = _cli(capsys, "device", "show", "pi-1", "--state-dir", state)
    assert rc == 1 and err.startswith("error: ") and "404" in err and err.count("\n") == 1
    rc, _, err = _cli(capsys, "device", "delete", "pi-1", "--state-dir", state)
    assert rc == 1 and "404" in err
    # Added again, the device starts with a fresh twin and a key the old one does not match.
    _cli(capsys, "device", "add", "pi-1", "--state-dir", state)
    assert hub.get_twin(Identity("pi-1"))["properties"]["desired"] == {"$version": 1}
    with sdk_client(dev, IoTHubDeviceClient) as client, pytest.raises(CredentialError):
        client.connect()


def test_device_commands_without_a_hub(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With no hub running, add/list/show/delete use the state dir's registry file."""
    state = str(tmp_path / "state")
    assert _cli(capsys, "device", "add", "pi-1/enviro_sensor", "--state-dir", state)[0] == 0
    rc, out, _ = _cli(capsys, "device", "list", "--state-dir", state)
    assert (rc, out) == (0, "pi-1\npi-1/enviro_sensor\n")
    rc, out, _ = _cli(capsys, "device", "show", "pi-1/enviro_sensor", "--state-dir", state)
    view = json.loads(out)
    assert view["moduleId"] == "enviro_sensor" and view["connectionState"] == "Disconnected"
    rc, out, _ = _cli(
        capsys, "device", "delete", "pi-1", "--module", "enviro_sensor", "--state-dir", state
    )
    assert (rc, out) == (0, "deleted pi-1/enviro_sensor\n")
    rc, out, _ = _cli(capsys, "device", "list", "--state-dir", state)
    assert out == "pi-1\n"
    rc, _, err = _cli(capsys, "device", "add", "bad+id", "--state-dir", state)
    assert rc == 1 and "invalid device id" in err
    rc, _, err = _cli(capsys, "twin", "show", "pi-1", "--state-dir", state)
    assert rc == 1 and "no running hub" in err


@pytest.mark.parametrize(
    "command",
    [
        ["hub", "serve", "--port", "{port}"],
        ["hub", "serve", "--port", "0", "--admin-port", "{port}"],
        ["hub", "serve", "--port", "0", "--proxy-port", "{port}"],
        ["pubsub", "serve", "--port", "{port}"],
    ],
    ids=["hub-mqtt", "hub-admin", "hub-tunnel", "pubsub"],
)
def test_a_busy_port_is_one_line_and_exit_code_3(tmp_path: Path, command: list[str]) -> None:
    """`hub serve` and `pubsub serve` on a taken port: one line naming the port, exit code 3,
    no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = [a.format(port=port) for a in command]
        if args[0] == "hub":
            args += ["--state-dir", str(tmp_path / "hub")]
        else:
            args += ["--key-file", str(tmp_path / "pubsub.key")]
        proc = subprocess.run(
            [sys.executable, "-m", "enviromon_sim.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == EXIT_PORT_IN_USE == 3
    lines = [line for line in proc.stderr.splitlines() if "generated a new access key" not in line]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: cannot listen on 127.0.0.1:") and f":{port} " in lines[0]
    assert "address in use" in lines[0] and "Traceback" not in proc.stderr
