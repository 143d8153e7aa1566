"""The IoT Edge workload API stand-in: the SDK's create_from_edge_environment() path."""

from __future__ import annotations

import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from azure.iot.device import IoTHubModuleClient, Message, ProxyOptions
from enviromon_sim.iothub.topics import Identity

from tests.support.hub import start_hub


def test_create_from_edge_environment_connects_and_sends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the documented IOTEDGE_* variables the module gets the CA and SAS signatures from the
    workload socket, connects and sends telemetry."""
    # A short socket path: unix socket paths are limited to ~108 bytes.
    sock_dir = Path(tempfile.mkdtemp(prefix="wl", dir="/tmp"))
    sock = sock_dir / "workload.sock"
    hub = start_hub(tmp_path / "hub", workload_socket=sock, workload_device_id="pi-edge")
    try:
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600  # it signs with module keys
        creds = hub.hub.add(Identity("pi-edge", "enviro_sensor"))
        assert creds.generation_id and hub.proxy_port
        env = {
            "IOTEDGE_WORKLOADURI": f"unix://{sock}",
            "IOTEDGE_DEVICEID": "pi-edge",
            "IOTEDGE_MODULEID": "enviro_sensor",
            "IOTEDGE_IOTHUBHOSTNAME": "localhost",
            "IOTEDGE_GATEWAYHOSTNAME": "localhost",
            "IOTEDGE_APIVERSION": "2019-01-30",
            "IOTEDGE_MODULEGENERATIONID": creds.generation_id,
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        client = IoTHubModuleClient.create_from_edge_environment(
            proxy_options=ProxyOptions("HTTP", "127.0.0.1", hub.proxy_port),
            connection_retry_interval=1,
        )
        try:
            client.connect()
            client.send_message_to_output(Message("from edge", message_id="e:1"), "telemetry")
            assert client.get_twin()["desired"] == {"$version": 1}
        finally:
            client.shutdown()
        events = hub.event_log.read_after(0)
        assert [e.body for e in events] == [b"from edge"]
        assert events[0].system_properties["iothub-connection-module-id"] == "enviro_sensor"

        # A stale generation id (a module re-created since) cannot get a signature.
        monkeypatch.setenv("IOTEDGE_MODULEGENERATIONID", "stale")
        with pytest.raises(ValueError, match="SasToken"):
            IoTHubModuleClient.create_from_edge_environment()
    finally:
        hub.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)
