"""The hub's MQTT rules, seen by a raw TLS client: routing limits, keep-alive, sessions."""

from __future__ import annotations

import json
import time

import pytest
from enviromon_sim.iothub import mqtt, sas, server
from enviromon_sim.iothub.hub import HubThread
from enviromon_sim.iothub.topics import Identity

from tests.hub.rawclient import RawClient, connect_packet, open_client
from tests.support.hub import wait_until


def test_publishing_as_another_device_closes_the_connection(hub: HubThread) -> None:
    """pi-1 publishing telemetry under pi-2's name is disconnected and nothing is stored."""
    hub.hub.add(Identity("pi-2"))
    client, ack = open_client(hub, "pi-1")
    try:
        assert ack.return_code == 0
        client.send(mqtt.Publish("devices/pi-2/messages/events/", b"forged", 1, 7))
        assert client.recv() is None
    finally:
        client.close()
    assert hub.event_log.read_after(0) == []
    assert hub.core.stats["protocol_errors"] == 1


def test_module_cannot_publish_as_its_device_or_a_sibling(hub: HubThread) -> None:
    """A module's telemetry topic is its own; the device's topic and a sibling's are refused."""
    for topic in ("devices/pi-1/messages/events/", "devices/pi-1/modules/other/messages/events/"):
        client, ack = open_client(hub, "pi-1/enviro_sensor")
        try:
            assert ack.return_code == 0
            client.send(mqtt.Publish(topic + "%24.on=telemetry", b"x", 1, 1))
            assert client.recv() is None
        finally:
            client.close()
    assert hub.event_log.read_after(0) == []


def test_subscriptions_are_limited_to_own_topics(hub: HubThread) -> None:
    """Another device's topics and wildcards get SUBACK 0x80; its own get the granted QoS."""
    client, _ = open_client(hub, "pi-1")
    try:
        client.send(
            mqtt.Subscribe(
                3,
                (
                    ("devices/pi-2/messages/devicebound/#", 1),
                    ("$iothub/methods/POST/#", 1),
                    ("#", 0),
                    ("devices/pi-1/messages/devicebound/#", 0),
                    ("$iothub/twin/res/#", 2),
                ),
            )
        )
        ack = client.recv()
        assert ack == mqtt.SubAck(3, (0x80, 1, 0x80, 0, 1))
    finally:
        client.close()


def test_bad_connects_get_the_right_connack_codes(hub: HubThread) -> None:
    """Wrong host in username → 4; MQTT 3.1 → 1; malformed client id → 2; wrong key → 5."""
    cases = [
        (connect_packet(hub, "pi-1", username="otherhub/pi-1/?api-version=x"), 4),
        (connect_packet(hub, "pi-1", level=3), 1),
    ]
    bad_id = connect_packet(hub, "pi-1")
    cases.append((mqtt.Connect("a/b/c", bad_id.username, bad_id.password, 60, False), 2))
    forged = sas.build_token("localhost/devices/pi-1", sas.generate_key(), int(time.time()) + 60)
    cases.append((mqtt.Connect("pi-1", bad_id.username, forged.encode(), 60, False), 5))
    for packet, code in cases:
        client = RawClient(hub)
        try:
            client.send(packet)
            assert client.recv() == mqtt.ConnAck(code)
            assert client.recv() is None
        finally:
            client.close()


def test_keep_alive_timeout_closes_a_silent_client(hub: HubThread) -> None:
    """With keep-alive 1 s, a client that pings stays; one that goes silent is closed in ~1.5 s."""
    pinger, _ = open_client(hub, "pi-1", keep_alive=1)
    silent, _ = open_client(hub, "pi-2", keep_alive=1)
    try:
        started = time.monotonic()
        for _ in range(5):
            pinger.send(mqtt.PingReq())
            assert pinger.recv() == mqtt.PingResp()
            time.sleep(0.5)
        assert silent.recv(timeout=5) is None
        assert time.monotonic() - started < 5
        assert hub.online(Identity("pi-1"))
    finally:
        pinger.close()
        silent.close()
    assert hub.core.stats["timeouts"] == 1


def test_token_expiry_closes_the_connection(hub: HubThread) -> None:
    """The hub closes a connection when its SAS token expires, as IoT Hub does."""
    client, ack = open_client(hub, "pi-1", expiry=time.time() + 2)
    try:
        assert ack.return_code == 0
        assert client.recv(timeout=6) is None
    finally:
        client.close()
    assert hub.core.stats["expired"] == 1


def test_oversized_message_and_unknown_iothub_topic_close_the_connection(hub: HubThread) -> None:
    """A message over 256 KB, or an unsupported $iothub topic, ends the connection."""
    for packet in (
        mqtt.Publish("devices/pi-1/messages/events/", b"x" * (256 * 1024 + 1), 1, 1),
        mqtt.Publish("$iothub/something/?$rid=1", b"{}", 1, 2),
    ):
        client, _ = open_client(hub, "pi-1")
        try:
            client.send(packet)
            assert client.recv() is None
        finally:
            client.close()
    assert hub.event_log.read_after(0) == []


def test_qos1_messages_are_held_for_an_offline_client_and_resent_until_acked(
    hub: HubThread,
) -> None:
    """Desired patches made while offline arrive on reconnect, in order; an unacked one comes
    again with DUP set; once acked it is gone."""
    ident = Identity("pi-1")
    client, ack = open_client(hub, "pi-1")
    client.send(mqtt.Subscribe(1, (("$iothub/twin/PATCH/properties/desired/#", 1),)))
    assert client.recv() == mqtt.SubAck(1, (1,))
    client.send(mqtt.Disconnect())
    client.close()
    wait_until(lambda: not hub.online(ident), timeout=5)
    hub.patch_desired(ident, {"a": 1})
    hub.patch_desired(ident, {"a": 2})

    client, ack = open_client(hub, "pi-1")
    try:
        assert ack == mqtt.ConnAck(0, session_present=True)
        first, second = client.recv(), client.recv()
        assert isinstance(first, mqtt.Publish) and isinstance(second, mqtt.Publish)
        assert json.loads(first.payload) == {"a": 1, "$version": 2}
        assert json.loads(second.payload) == {"a": 2, "$version": 3}
        assert second.topic == "$iothub/twin/PATCH/properties/desired/?$version=3"
        assert first.packet_id is not None and second.packet_id is not None
        client.send(mqtt.PubAck(first.packet_id))  # the second is left unacknowledged
    finally:
        client.close()
    wait_until(lambda: not hub.online(ident), timeout=5)

    client, ack = open_client(hub, "pi-1")
    try:
        again = client.recv()
        assert isinstance(again, mqtt.Publish)
        assert again.dup and json.loads(again.payload)["$version"] == 3
        assert again.packet_id is not None
        client.send(mqtt.PubAck(again.packet_id))
        client.send(mqtt.PingReq())
        assert client.recv() == mqtt.PingResp()  # nothing else was pending
    finally:
        client.close()


def test_clean_session_starts_empty(hub: HubThread) -> None:
    """A clean_session CONNECT gets session_present=False and no old subscriptions."""
    client, _ = open_client(hub, "pi-1")
    client.send(mqtt.Subscribe(1, (("$iothub/methods/POST/#", 1),)))
    assert client.recv() == mqtt.SubAck(1, (1,))
    client.close()
    wait_until(lambda: not hub.online(Identity("pi-1")), timeout=5)
    client, ack = open_client(hub, "pi-1", clean=True)
    try:
        assert ack == mqtt.ConnAck(0, session_present=False)
        assert hub.run(lambda: dict(hub.core.sessions["pi-1"].subscriptions)) == {}
    finally:
        client.close()


@pytest.mark.parametrize(
    "garbage",
    [b"\x10\xff\xff\xff\xff\x7f", b"\x30\x03\x00\x01a", b"\xf0\x00", b"\x10\x05\x00"],
)
def test_malformed_first_packets_are_dropped_and_the_hub_keeps_serving(
    hub: HubThread, garbage: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Garbage, or a stalled packet, instead of CONNECT closes that connection only."""
    monkeypatch.setattr(server, "CONNECT_TIMEOUT_S", 0.5)  # the stalled case waits for this
    client = RawClient(hub)
    try:
        client.sock.sendall(garbage)
        assert client.recv(timeout=12) is None
    finally:
        client.close()
    good, ack = open_client(hub, "pi-1")
    good.close()
    assert ack.return_code == 0


def test_unsubscribe_stops_deliveries_and_is_kept_in_the_session(hub: HubThread) -> None:
    """After UNSUBSCRIBE (answered with UNSUBACK) a desired patch is no longer delivered, and
    the persisted session no longer holds the filter."""
    ident = Identity("pi-1")
    desired = "$iothub/twin/PATCH/properties/desired/#"
    client, _ = open_client(hub, "pi-1")
    try:
        client.send(mqtt.Subscribe(1, ((desired, 1), ("$iothub/twin/res/#", 1))))
        assert client.recv() == mqtt.SubAck(1, (1, 1))
        hub.patch_desired(ident, {"a": 1})
        delivered = client.recv()
        assert isinstance(delivered, mqtt.Publish) and delivered.packet_id is not None
        client.send(mqtt.PubAck(delivered.packet_id))
        client.send(mqtt.Unsubscribe(2, (desired,)))
        assert client.recv() == mqtt.UnsubAck(2)
        hub.patch_desired(ident, {"a": 2})
        client.send(mqtt.Publish("$iothub/twin/GET/?$rid=7", b"", 0))
        answer = client.recv()  # the twin GET answer, with no desired patch before it
        assert isinstance(answer, mqtt.Publish)
        assert answer.topic == "$iothub/twin/res/200/?$rid=7"
        assert json.loads(answer.payload)["desired"] == {"a": 2, "$version": 3}
    finally:
        client.close()
    sessions = json.loads((hub.hub.state_dir / "sessions.json").read_text())
    assert sessions["pi-1"]["subscriptions"] == {"$iothub/twin/res/#": 1}
