"""Hostile and broken clients: each costs at most its own connection, never the hub or others."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from enviromon_sim.iothub import eventwriter, mqtt, sas, server, tunnel
from enviromon_sim.iothub.hub import HubThread
from enviromon_sim.iothub.topics import Identity

from tests.hub.rawclient import RawClient, connect_packet, open_client
from tests.support.hub import make_device, sdk_client, wait_until


def _handlers(hub: HubThread) -> int:
    """Connection handler tasks the hub is running."""
    return int(hub.run(lambda: hub.core.handler_count))


def _assert_hub_serves(hub: HubThread, name: str = "pi-ok") -> None:
    """A well-behaved client still connects, publishes and gets its PUBACK."""
    client, ack = open_client(hub, name)
    try:
        assert ack.return_code == 0
        client.send(mqtt.Publish(f"devices/{name}/messages/events/", b"ok", 1, 1))
        assert client.recv() == mqtt.PubAck(1)
    finally:
        client.close()


@pytest.fixture
def watched(hub: HubThread) -> Iterator[HubThread]:
    """The hub; afterwards, no connection handler task may be left behind."""
    yield hub
    wait_until(lambda: _handlers(hub) == 0, timeout=10)
    assert hub.core.stats["handler_errors"] == 0


def _dribble(client: RawClient, data: bytes, every: float, stop: threading.Event) -> None:
    for i in range(len(data)):
        if stop.wait(every):
            return
        try:
            client.sock.sendall(data[i : i + 1])
        except OSError:
            return


def test_slow_loris_before_connect_is_closed_at_the_connect_deadline(
    watched: HubThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CONNECT dribbled one byte at a time is cut off at the deadline, although bytes keep
    coming; meanwhile another client is served normally."""
    hub = watched
    monkeypatch.setattr(server, "CONNECT_TIMEOUT_S", 1.0)
    slow = RawClient(hub)
    stop = threading.Event()
    data = mqtt.encode(connect_packet(hub, "pi-slow"))
    dribbler = threading.Thread(target=_dribble, args=(slow, data, 0.1, stop), daemon=True)
    try:
        started = time.monotonic()
        dribbler.start()
        _assert_hub_serves(hub)
        assert slow.recv(timeout=5) is None
        assert time.monotonic() - started < 3  # well before the ~30 s the dribble would take
    finally:
        stop.set()
        dribbler.join(5)
        slow.close()
    assert hub.core.stats["timeouts"] == 1


def test_slow_loris_after_connect_is_closed_at_the_keep_alive_deadline(
    watched: HubThread,
) -> None:
    """An authenticated client dribbling a PUBLISH is closed after 1.5 x keep-alive (the
    deadline is per packet, not per read) and nothing is stored."""
    hub = watched
    client, ack = open_client(hub, "pi-1", keep_alive=1)
    stop = threading.Event()
    data = mqtt.encode(mqtt.Publish("devices/pi-1/messages/events/", b"x" * 100, 1, 1))
    dribbler = threading.Thread(target=_dribble, args=(client, data, 0.1, stop), daemon=True)
    try:
        assert ack.return_code == 0
        started = time.monotonic()
        dribbler.start()
        assert client.recv(timeout=5) is None
        assert time.monotonic() - started < 3
    finally:
        stop.set()
        dribbler.join(5)
        client.close()
    assert hub.event_log.read_after(0) == []
    assert hub.core.stats["timeouts"] == 1


@pytest.mark.parametrize(
    ("authenticated", "header"),
    [
        (False, b"\x10\xff\xff\xff\x7f"),  # CONNECT claiming 256 MB
        (False, b"\x10" + mqtt.encode_remaining_length(server.MAX_CONNECT_BYTES + 1)),
        (True, b"\x32\xff\xff\xff\x7f"),  # PUBLISH claiming 256 MB
        (True, b"\x32" + mqtt.encode_remaining_length(server.MAX_PACKET_BYTES + 1)),
    ],
)
def test_huge_remaining_length_is_refused_at_once(
    watched: HubThread, authenticated: bool, header: bytes
) -> None:
    """A length over the limit closes the connection on the header alone, without waiting for
    (or buffering) the body; the hub keeps serving."""
    hub = watched
    if authenticated:
        client, _ = open_client(hub, "pi-1")
    else:
        client = RawClient(hub)
    try:
        started = time.monotonic()
        client.sock.sendall(header)
        assert client.recv(timeout=5) is None
        assert time.monotonic() - started < 2  # not the 10 s CONNECT or keep-alive deadline
    finally:
        client.close()
    assert hub.core.stats["protocol_errors"] == 1
    _assert_hub_serves(hub)


@pytest.mark.parametrize("reset", [False, True])
def test_client_vanishing_mid_packet_is_detached(watched: HubThread, reset: bool) -> None:
    """A client that sends half a PUBLISH and disappears (FIN or RST) goes offline; the half
    message is not stored and its session stays usable."""
    hub = watched
    client, _ = open_client(hub, "pi-1")
    data = mqtt.encode(mqtt.Publish("devices/pi-1/messages/events/", b"y" * 1000, 1, 1))
    client.sock.sendall(data[: len(data) // 2])
    if reset:  # SO_LINGER 0: close with a TCP reset, no TLS goodbye
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    wait_until(lambda: not hub.online(Identity("pi-1")), timeout=5)
    assert hub.event_log.read_after(0) == []
    again, ack = open_client(hub, "pi-1")
    again.close()
    assert ack == mqtt.ConnAck(0, session_present=True)


@pytest.mark.parametrize(
    "client_id",
    [
        "",
        "pi-1\nINFO forged log line",
        "../../etc/passwd",
        "pi-1/../x",
        "pi-1/m/extra",
        "#",
        "pi+1",
        "pi 1",
        "\u202epi-1",
        "x" * 129,
        "pi-1/",
    ],
)
def test_hostile_client_ids_are_rejected_with_connack_2(watched: HubThread, client_id: str) -> None:
    """A client id IoT Hub would not accept is refused (identifier rejected) before any
    registry lookup, so it can reach neither a file nor a log line."""
    hub = watched
    good = connect_packet(hub, "pi-1")
    client = RawClient(hub)
    try:
        client.send(mqtt.Connect(client_id, good.username, good.password, 60, False))
        assert client.recv() == mqtt.ConnAck(mqtt.CONNACK_REFUSED_IDENTIFIER_REJECTED)
        assert client.recv() is None
    finally:
        client.close()
    assert hub.core.stats["refused_auth"] == 1


def _password(hub: HubThread, token: str | bytes) -> mqtt.Connect:
    good = connect_packet(hub, "pi-1")
    raw = token.encode() if isinstance(token, str) else token
    return mqtt.Connect("pi-1", good.username, raw, 60, False)


@pytest.mark.parametrize(
    "password",
    [
        b"\xff\xfe not utf-8",
        "SharedAccessSignature sr=localhost%2Fdevices%2Fpi-1&sig=x&se=" + "9" * 4000,
        "SharedAccessSignature sr=localhost%2Fdevices%2Fpi-1&sig=x&se=1_999_999_999",
        "SharedAccessSignature sr=localhost%2Fdevices%2Fpi-1&sig=x&se=+1999999999",
        "SharedAccessSignature " + "&" * 6000,
        b"",
    ],
)
def test_hostile_passwords_are_refused_with_connack_5(
    watched: HubThread, password: str | bytes
) -> None:
    """Non-UTF-8, absurd or oddly written expiries and junk tokens are refused as unauthorized."""
    hub = watched
    hub.hub.add(Identity("pi-1"))
    client = RawClient(hub)
    try:
        client.send(_password(hub, password))
        assert client.recv() == mqtt.ConnAck(mqtt.CONNACK_REFUSED_NOT_AUTHORIZED)
    finally:
        client.close()
    _assert_hub_serves(hub)


def test_a_correctly_signed_absurd_expiry_is_refused(watched: HubThread) -> None:
    """Even signed with the right key, an expiry of 10**20 s is refused, not overflowed."""
    hub = watched
    key = hub.hub.registry.ensure(Identity("pi-1")).key
    token = sas.build_token("localhost/devices/pi-1", key, 10**20)
    client = RawClient(hub)
    try:
        client.send(_password(hub, token))
        assert client.recv() == mqtt.ConnAck(mqtt.CONNACK_REFUSED_NOT_AUTHORIZED)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("topic", "outcome"),
    [
        ("devices/pi-1/messages/events/" + "%ZZ&&==&%" * 1000, "stored"),
        ("devices/pi-1/messages/events/" + "k=" + "v" * 60_000, "stored"),
        ("devices/pi-1/messages/events/\u0001\u007f", "stored"),
        ("$iothub/twin/GET/?$rid=" + "r" * 60_000, "closed"),  # could never be echoed back
        ("$iothub/methods/res/" + "9" * 5000 + "/?$rid=1", "closed"),
        ("$iothub/twin/PATCH/properties/reported/?$rid=1&$rid=2", "acked"),
    ],
)
def test_hostile_topics_are_stored_acked_or_close_only_that_connection(
    watched: HubThread, topic: str, outcome: str
) -> None:
    """Odd but well-formed telemetry topics are stored, odd twin requests answered, others
    close the connection; either way the client can connect again and nothing is held that
    would break its reconnect."""
    hub = watched
    client, _ = open_client(hub, "pi-1")
    try:
        client.send(mqtt.Publish(topic, b"{}", 1, 1))
        answer = client.recv()
    finally:
        client.close()
    stored = [e.body for e in hub.event_log.read_after(0)]
    assert (answer, stored) == {
        "stored": (mqtt.PubAck(1), [b"{}"]),
        "acked": (mqtt.PubAck(1), []),
        "closed": (None, []),
    }[outcome]
    wait_until(lambda: not hub.online(Identity("pi-1")), timeout=5)
    again, ack = open_client(hub, "pi-1")
    try:
        assert ack == mqtt.ConnAck(0, session_present=True)
        again.send(mqtt.PingReq())
        assert again.recv() == mqtt.PingResp()  # nothing held was re-sent before it
    finally:
        again.close()


def test_non_tls_bytes_do_not_disturb_the_hub(watched: HubThread) -> None:
    """Plain-text garbage where a TLS ClientHello belongs ends that socket only."""
    hub = watched
    assert hub.hub.mqtt_port is not None
    with socket.create_connection(("127.0.0.1", hub.hub.mqtt_port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)))
        sock.settimeout(5)
        try:
            rest = sock.recv(1024)
        except ConnectionResetError:
            rest = b""
        assert not rest.startswith(b"HTTP")  # closed (or a TLS alert), never an answer
    _assert_hub_serves(hub)


def test_qos0_flood_is_flow_controlled_and_fully_stored(
    watched: HubThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client flooding QoS 0 telemetry is made to wait for the event log (the backlog is
    bounded), loses nothing, and another client is answered meanwhile."""
    hub = watched
    monkeypatch.setattr(eventwriter, "MAX_UNWRITTEN", 50)
    count = 5000
    flood, _ = open_client(hub, "pi-flood")
    topic = "devices/pi-flood/messages/events/"
    data = b"".join(mqtt.encode(mqtt.Publish(topic, str(i).encode())) for i in range(count))
    sender = threading.Thread(target=flood.sock.sendall, args=(data,), daemon=True)
    try:
        sender.start()
        _assert_hub_serves(hub)
        sender.join(30)
        assert not sender.is_alive()
        flood.send(mqtt.PingReq())  # answered only after every earlier packet was read
        assert flood.recv(timeout=30) == mqtt.PingResp()
    finally:
        flood.close()
    wait_until(lambda: hub.event_log.last_sequence_number() == count + 1, timeout=30)
    bodies = [
        e.body
        for e in hub.event_log.read_after(0, max_events=count + 1)
        if e.system_properties["iothub-connection-device-id"] == "pi-flood"
    ]
    assert bodies == [str(i).encode() for i in range(count)]
    assert hub.core.stats["flow_control_waits"] >= 1


def test_no_task_survives_a_stop_after_faults(hub: HubThread, hub_device: Any) -> None:
    """After SDK traffic, a dropped connection, a restart and a client stuck mid-CONNECT,
    stopping the hub leaves no task running on its event loop (the `hub` fixture checks this
    after every test; here the stuck client is still connected when it stops)."""
    from azure.iot.device import IoTHubDeviceClient, Message

    dev = hub_device("pi-1")
    stuck = RawClient(hub)
    try:
        stuck.sock.sendall(mqtt.encode(connect_packet(hub, "pi-2"))[:5])  # half a CONNECT
        with sdk_client(dev, IoTHubDeviceClient) as client:
            client.connect()
            client.send_message(Message("1"))
            hub.drop_connections()
            hub.restart()
            wait_until(lambda: client.connected and hub.online(dev.identity), timeout=20)
            client.send_message(Message("2"))
        hub.stop()  # with the stuck client still connected
        assert hub.leftover_tasks == []
    finally:
        stuck.close()


@pytest.mark.parametrize(
    ("request_bytes", "answer"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 405"),
        (b"CONNECT localhost:8883 HTTP/1.1\r\n" + b"X: " + b"y" * 70_000, b""),  # no end
        (b"CONNECT localhost:8883 HTTP/1.1\r\n", b""),  # never finished: cut at the deadline
    ],
)
def test_tunnel_refuses_other_methods_huge_and_unfinished_requests(
    watched: HubThread, monkeypatch: pytest.MonkeyPatch, request_bytes: bytes, answer: bytes
) -> None:
    """The HTTP CONNECT tunnel answers only CONNECT, closes a header over 64 KB or one not
    finished within its deadline, and goes on tunnelling for others."""
    hub = watched
    monkeypatch.setattr(tunnel, "HEADER_TIMEOUT_S", 1.0)
    assert hub.proxy_port is not None
    with socket.create_connection(("127.0.0.1", hub.proxy_port), timeout=5) as sock:
        started = time.monotonic()
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):  # closed mid-send
            sock.sendall(request_bytes)
        received = b""
        while chunk := _recv_or_empty(sock):
            received += chunk
        assert received.startswith(answer) if answer else received == b""
        assert time.monotonic() - started < 4
    # The tunnel still carries a real client through to the hub.
    from azure.iot.device import IoTHubDeviceClient, Message

    dev = make_device(hub, "pi-tunnel")
    with sdk_client(dev, IoTHubDeviceClient) as client:
        client.connect()
        client.send_message(Message("through"))
    assert [e.body for e in hub.event_log.read_after(0)] == [b"through"]


def _recv_or_empty(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""
