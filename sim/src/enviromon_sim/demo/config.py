"""What the demo runs: ports, devices, and which services are real Azure ones.

Each local service has a default port, chosen so that none collides with another (the local
Web PubSub keeps 8080, the port Microsoft's own emulator uses; the dashboard is not there).
A service whose connection string is in the environment is not started: the demo uses the
real one (docs/demo.md lists the variables).
"""

from __future__ import annotations

import os
import random
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from enviromon_sim.demo.errors import DemoError, PortBusyError

#: The variables that switch a service to a real Azure one.
TABLES_ENV = "AZURE_TABLES_CONNECTION_STRING"
PUBSUB_ENV = "WEBPUBSUB_CONNECTION_STRING"
DEVICES_ENV = "ENVIROMON_DEVICE_CONNECTION_STRINGS"
API_ENV = "ENVIROMON_API_BASE_URL"
#: How many simulated Pis.
DEVICE_COUNT_ENV = "ENVIROMON_DEVICES"
MAX_DEVICES = 200

#: Where ``Ports.free`` looks: above the usual services, below the ephemeral range.
FREE_PORT_RANGE = (20000, 32768)

#: Rooms of the simulated Pis, in order; more devices than rooms get numbered ids.
ROOMS = ("kitchen", "living-room", "bedroom", "office", "hall", "garage")


@dataclass(frozen=True, slots=True, kw_only=True)
class Ports:
    """The TCP ports of the local services, all on 127.0.0.1.

    Attributes:
        azurite: Azurite's Tables endpoint (Azurite's own default).
        hub_mqtt: the local IoT Hub's MQTT/TLS port; the device SDK always dials 8883.
        hub_tunnel: the hub's HTTP CONNECT tunnel into its MQTT port (the simulated Pis use
            it, so the hub may sit on any port).
        hub_admin: the hub's admin API (twins, methods, faults).
        pubsub: the local Web PubSub (REST and client WebSockets).
        api: the sink's HTTP API (negotiate, devices, history), Functions' local default.
        dashboard: the dashboard's static server.
    """

    azurite: int = 10002
    hub_mqtt: int = 8883
    hub_tunnel: int = 8884
    hub_admin: int = 8885
    pubsub: int = 8080
    api: int = 7071
    dashboard: int = 8070

    def __post_init__(self) -> None:
        values = [getattr(self, f.name) for f in fields(self)]
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or not 1 <= value <= 65535:
                raise DemoError(f"--{option_name(f.name)} must be a port, 1-65535; got {value!r}")
        if len(set(values)) != len(values):
            raise DemoError(f"two services cannot share a port: {self}")

    @classmethod
    def free(cls, rng: random.Random | None = None) -> Ports:
        """Ports free on 127.0.0.1 now, for tests and benchmarks that run beside each other.

        Drawn from below Linux's ephemeral range (32768-60999): a port the kernel hands to
        someone else's ``bind(0)`` or outgoing connection cannot be taken from us there between
        this check and the service's own bind.
        """
        # Spreading ports out needs no cryptographic randomness.
        pick = rng or random.Random()  # noqa: S311
        chosen: list[int] = []
        while len(chosen) < len(fields(cls)):
            port = pick.randrange(*FREE_PORT_RANGE)
            if port not in chosen and port_free(port):
                chosen.append(port)
        return cls(**{f.name: p for f, p in zip(fields(cls), chosen, strict=True)})


def option_name(field: str) -> str:
    """The CLI option of a port field: ``hub_mqtt`` → ``hub-mqtt-port``."""
    return field.replace("_", "-") + "-port"


SERVICE_NAMES = {
    "azurite": "Azurite (Tables)",
    "hub_mqtt": "local IoT Hub (MQTT)",
    "hub_tunnel": "local IoT Hub (tunnel)",
    "hub_admin": "local IoT Hub (admin API)",
    "pubsub": "local Web PubSub",
    "api": "sink API",
    "dashboard": "dashboard",
}


def port_free(port: int) -> bool:
    """Whether 127.0.0.1:``port`` can be bound now."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def check_ports(ports: Ports, needed: set[str]) -> None:
    """Raise PortBusyError naming every busy port among ``needed`` fields, and the fix."""
    busy = [name for name in sorted(needed) if not port_free(getattr(ports, name))]
    if not busy:
        return
    lines = [
        f"  {getattr(ports, name)} ({SERVICE_NAMES[name]}): choose another with"
        f" --{option_name(name)} N"
        for name in busy
    ]
    raise PortBusyError(
        "these ports are in use by another program:\n"
        + "\n".join(lines)
        + "\nStop that program, or pass the options, e.g. make demo DEMO_ARGS='--"
        + option_name(busy[0])
        + f" {getattr(ports, busy[0]) + 100}'."
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class External:
    """Real Azure services named in the environment; None = run the local stand-in.

    Attributes:
        tables: Azure Storage connection string for the sink's tables.
        pubsub: Web PubSub connection string (with an AccessKey).
        device_connection_strings: one IoT Hub device connection string per simulated Pi;
            given, the Pis connect to that hub and no local hub or local sink runs.
        api_base_url: the deployed sink's API (``https://<app>.azurewebsites.net/api``); needed
            with a real IoT Hub, whose events the deployed sink reads.
    """

    tables: str | None = None
    pubsub: str | None = None
    device_connection_strings: tuple[str, ...] = ()
    api_base_url: str | None = None

    def __post_init__(self) -> None:
        if self.device_connection_strings and not self.api_base_url:
            raise DemoError(
                f"{DEVICES_ENV} is set, so the Pis send to a real IoT Hub, whose events only the"
                f" deployed sink reads: set {API_ENV} to its API"
                " (https://<function app>.azurewebsites.net/api)"
            )
        if self.api_base_url and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", self.api_base_url):
            raise DemoError(f"{API_ENV} must be an http(s) URL")
        for conn in self.device_connection_strings:
            if "DeviceId=" not in conn or "SharedAccessKey=" not in conn:
                raise DemoError(
                    f"{DEVICES_ENV}: each entry must be a device connection string"
                    " (HostName=…;DeviceId=…;SharedAccessKey=…)"
                )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> External:
        """Read the variables; blank means unset."""
        e = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = e.get(name, "").strip()
            return value or None

        devices = tuple((get(DEVICES_ENV) or "").split())
        return cls(
            tables=get(TABLES_ENV),
            pubsub=get(PUBSUB_ENV),
            device_connection_strings=devices,
            api_base_url=get(API_ENV),
        )

    @property
    def real_hub(self) -> bool:
        """Whether the Pis send to a real IoT Hub."""
        return bool(self.device_connection_strings)


def device_count(raw: str | None, default: int = 3) -> int:
    """``ENVIROMON_DEVICES``: 1 to MAX_DEVICES simulated Pis."""
    if raw is None or not raw.strip():
        return default
    try:
        n = int(raw)
    except ValueError:
        raise DemoError(f"{DEVICE_COUNT_ENV}={raw!r}: not a whole number") from None
    if not 1 <= n <= MAX_DEVICES:
        raise DemoError(f"{DEVICE_COUNT_ENV}={raw!r}: 1 to {MAX_DEVICES} devices")
    return n


def device_ids(n: int) -> list[str]:
    """Device ids: ``pi-kitchen``, ``pi-living-room``, … then ``pi-7``, ``pi-8`` and so on."""
    ids = [f"pi-{room}" for room in ROOMS[:n]]
    ids += [f"pi-{i}" for i in range(len(ids) + 1, n + 1)]
    return ids


def find_root(start: Path) -> Path | None:
    """The project folder at or above ``start``: the one with ``node_modules/azurite``."""
    for folder in (start, *start.parents):
        if (folder / "node_modules" / "azurite").is_dir():
            return folder
    return None
