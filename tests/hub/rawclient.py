"""A bare MQTT-over-TLS client for tests that need full control over what is sent."""

from __future__ import annotations

import socket
import ssl
import time
from collections import deque
from typing import Any

from enviromon_sim.iothub import mqtt, sas
from enviromon_sim.iothub.hub import HubThread
from enviromon_sim.iothub.topics import Identity


class RawClient:
    """A bare MQTT-over-TLS client with full control over what it sends (and does not)."""

    def __init__(self, hub: HubThread) -> None:
        ctx = ssl.create_default_context(cafile=str(hub.hub.tls.ca_cert))
        assert hub.hub.mqtt_port is not None
        sock = socket.create_connection(("127.0.0.1", hub.hub.mqtt_port), timeout=5)
        self.sock = ctx.wrap_socket(sock, server_hostname="localhost")
        self.decoder = mqtt.PacketDecoder()
        self.packets: deque[mqtt.Packet] = deque()

    def send(self, packet: mqtt.Packet) -> None:
        self.sock.sendall(mqtt.encode(packet))

    def recv(self, timeout: float = 5.0) -> mqtt.Packet | None:
        """The next packet, or None when the hub closed the connection."""
        deadline = time.monotonic() + timeout
        while not self.packets:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                return None
            if not data:
                return None
            self.packets.extend(self.decoder.feed(data))
        return self.packets.popleft()

    def close(self) -> None:
        self.sock.close()


def connect_packet(
    hub: HubThread,
    name: str,
    *,
    expiry: float | None = None,
    keep_alive: int = 60,
    clean: bool = False,
    username: str | None = None,
    level: int = 4,
) -> mqtt.Connect:
    identity = Identity.parse(name)
    key = hub.hub.registry.ensure(identity).key
    uri = sas.resource_uri("localhost", identity.device_id, identity.module_id)
    token = sas.build_token(uri, key, int(expiry or time.time() + 600))
    user = username or f"localhost/{name}/?api-version=2021-04-12"
    return mqtt.Connect(name, user, token.encode(), keep_alive, clean, level)


def open_client(hub: HubThread, name: str, **kwargs: Any) -> tuple[RawClient, mqtt.ConnAck]:
    client = RawClient(hub)
    client.send(connect_packet(hub, name, **kwargs))
    ack = client.recv()
    assert isinstance(ack, mqtt.ConnAck)
    return client, ack
