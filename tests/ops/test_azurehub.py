"""The real-hub adapter's pure parts: connection strings and the SDK's own models mapped to the
views the CLI prints (no network; the calls themselves need a real IoT Hub and are not run)."""

from __future__ import annotations

import pytest
from azure.iot.hub.models import (
    AuthenticationMechanism,
    Device,
    Module,
    SymmetricKey,
    Twin,
    TwinProperties,
)
from enviromon_sim.iothub.topics import Identity
from enviromon_sim.ops.azurehub import (
    AzureHub,
    device_connection_string,
    identity_view,
    parse_connection_string,
    twin_view,
)
from enviromon_sim.ops.errors import ConfigurationError

KEY = "c2VjcmV0LWtleS1ub3QtYS1yZWFsLW9uZQ=="


def test_connection_string_is_checked_without_echoing_the_key() -> None:
    """A service policy's string parses; one missing a part names the part, never the key."""
    parts = parse_connection_string(
        f"HostName=h.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}"
    )
    assert parts["HostName"] == "h.azure-devices.net"
    assert AzureHub(connection_string=f"HostName=x;SharedAccessKeyName=s;SharedAccessKey={KEY}")
    with pytest.raises(ConfigurationError, match="SharedAccessKeyName") as info:
        parse_connection_string(f"HostName=h;SharedAccessKey={KEY}")
    assert KEY not in str(info.value)
    with pytest.raises(ConfigurationError, match="key=value"):
        parse_connection_string("HostName=h;garbage")


def test_device_and_module_views_drop_the_keys() -> None:
    """The SDK's Device and Module models serialise to views with ids and state but no keys."""
    auth = AuthenticationMechanism(
        type="sas", symmetric_key=SymmetricKey(primary_key="PRIMARY", secondary_key="SECONDARY")
    )
    device = Device(
        device_id="pi-1", connection_state="Connected", status="enabled", authentication=auth
    )
    view = identity_view(device.serialize(), ["enviro_sensor"])
    assert view == {
        "deviceId": "pi-1",
        "status": "enabled",
        "connectionState": "Connected",
        "modules": ["enviro_sensor"],
        "authentication": {"type": "sas"},
    }
    module = Module(
        module_id="enviro_sensor",
        device_id="pi-1",
        generation_id="g1",
        connection_state="Disconnected",
        authentication=auth,
    )
    view = identity_view(module.serialize())
    assert view["moduleId"] == "enviro_sensor" and view["generationId"] == "g1"
    assert "PRIMARY" not in repr(view) and "SECONDARY" not in repr(view)


def test_twin_view_matches_the_local_hubs_shape() -> None:
    """A module Twin model maps to deviceId/moduleId/properties.desired/reported."""
    twin = Twin(
        device_id="pi-1",
        module_id="enviro_sensor",
        version=7,
        properties=TwinProperties(
            desired={"telemetryInterval": 5, "$version": 4}, reported={"$version": 3}
        ),
    )
    assert twin_view(twin.serialize()) == {
        "deviceId": "pi-1",
        "moduleId": "enviro_sensor",
        "version": 7,
        "properties": {
            "desired": {"telemetryInterval": 5, "$version": 4},
            "reported": {"$version": 3},
        },
    }


def test_device_connection_string_shape() -> None:
    """Devices and modules get the connection string the device SDK parses."""
    assert device_connection_string("h", Identity("pi-1"), KEY) == (
        f"HostName=h;DeviceId=pi-1;SharedAccessKey={KEY}"
    )
    assert device_connection_string("h", Identity("pi-1", "m"), KEY) == (
        f"HostName=h;DeviceId=pi-1;ModuleId=m;SharedAccessKey={KEY}"
    )
