"""The demo's configuration: device ids, the device count, ports and real-Azure variables."""

from __future__ import annotations

import pytest
from enviromon_sim.demo.config import (
    External,
    Ports,
    check_ports,
    device_count,
    device_ids,
)
from enviromon_sim.demo.errors import DemoError, PortBusyError
from hypothesis import given
from hypothesis import strategies as st


@given(st.integers(min_value=1, max_value=200))
def test_device_ids_are_distinct_valid_and_as_many_as_asked(n: int) -> None:
    """Any count gives that many distinct ids, rooms first."""
    ids = device_ids(n)
    assert len(ids) == n == len(set(ids))
    assert ids[0] == "pi-kitchen"
    assert all(i.startswith("pi-") and i.isascii() for i in ids)


def test_device_count_reads_the_variable_and_refuses_nonsense() -> None:
    """Unset or blank → 3; a number in range is taken; anything else names the variable."""
    assert device_count(None) == 3
    assert device_count("  ") == 3
    assert device_count("50") == 50
    for bad in ("lots", "0", "-2", "201", "1.5"):
        with pytest.raises(DemoError, match="ENVIROMON_DEVICES"):
            device_count(bad)


def test_default_ports_do_not_collide_and_keep_8080_for_web_pubsub() -> None:
    """The defaults are distinct; the dashboard is not on the local Web PubSub's 8080."""
    ports = Ports()
    assert ports.pubsub == 8080
    assert ports.dashboard != 8080
    with pytest.raises(DemoError, match="share a port"):
        Ports(api=8080)
    with pytest.raises(DemoError, match="--api-port"):
        Ports(api=70000)


def test_free_ports_are_distinct() -> None:
    """Ports.free() gives a distinct free port per service."""
    ports = Ports.free()
    check_ports(ports, {"azurite", "api", "pubsub", "dashboard"})


def test_a_busy_port_names_the_service_and_the_option() -> None:
    """check_ports lists every busy port with its service and option."""
    import socket

    ports = Ports.free()
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports.api))
        s.listen()
        with pytest.raises(PortBusyError) as info:
            check_ports(ports, {"api", "pubsub"})
    assert f"{ports.api} (sink API)" in str(info.value)
    assert "--api-port" in str(info.value)
    assert "pubsub" not in str(info.value).split("\n")[1]


def test_real_hub_needs_the_deployed_api_and_device_strings() -> None:
    """Device connection strings without the deployed API, or malformed ones, are refused."""
    conn = "HostName=h.azure-devices.net;DeviceId=pi-1;SharedAccessKey=abc="
    with pytest.raises(DemoError, match="ENVIROMON_API_BASE_URL"):
        External.from_env({"ENVIROMON_DEVICE_CONNECTION_STRINGS": conn})
    with pytest.raises(DemoError, match="device connection string"):
        External.from_env(
            {
                "ENVIROMON_DEVICE_CONNECTION_STRINGS": "nonsense",
                "ENVIROMON_API_BASE_URL": "https://app.azurewebsites.net/api",
            }
        )
    ext = External.from_env(
        {
            "ENVIROMON_DEVICE_CONNECTION_STRINGS": f"{conn}\n{conn.replace('pi-1', 'pi-2')}",
            "ENVIROMON_API_BASE_URL": "https://app.azurewebsites.net/api",
            "AZURE_TABLES_CONNECTION_STRING": " ",
        }
    )
    assert ext.real_hub and len(ext.device_connection_strings) == 2
    assert ext.tables is None
