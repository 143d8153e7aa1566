"""The MQTT codec: round trips, arbitrary chunking, and garbage never crashes it."""

from __future__ import annotations

import contextlib

import pytest
from enviromon_sim.iothub import mqtt
from enviromon_sim.iothub.errors import ProtocolError
from hypothesis import given
from hypothesis import strategies as st

text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)
topic_name = text.filter(lambda t: t and "+" not in t and "#" not in t)
pid = st.integers(1, 0xFFFF)

packets = st.one_of(
    st.builds(
        mqtt.Connect,
        text,
        st.none() | text,
        st.none() | st.binary(max_size=60),
        st.integers(0, 0xFFFF),
        st.booleans(),
    ),
    st.builds(mqtt.ConnAck, st.integers(0, 5), st.booleans()),
    st.builds(
        lambda t, p, q, i, d, r: mqtt.Publish(t, p, q, i if q else None, d, r),
        topic_name,
        st.binary(max_size=300),
        st.integers(0, 1),
        pid,
        st.booleans(),
        st.booleans(),
    ),
    st.builds(mqtt.PubAck, pid),
    st.builds(
        mqtt.Subscribe,
        pid,
        st.lists(st.tuples(text, st.integers(0, 2)), min_size=1, max_size=4).map(tuple),
    ),
    st.builds(mqtt.SubAck, pid, st.lists(st.sampled_from([0, 1, 0x80]), max_size=4).map(tuple)),
    st.builds(mqtt.Unsubscribe, pid, st.lists(text, min_size=1, max_size=4).map(tuple)),
    st.builds(mqtt.UnsubAck, pid),
    st.just(mqtt.PingReq()),
    st.just(mqtt.PingResp()),
    st.just(mqtt.Disconnect()),
)


@given(st.lists(packets, max_size=8), st.lists(st.integers(1, 50), min_size=1, max_size=20))
def test_any_packets_round_trip_through_any_chunking(
    sequence: list[mqtt.Packet], cuts: list[int]
) -> None:
    """Encoded packets come back equal and in order however the bytes are split."""
    data = b"".join(mqtt.encode(p) for p in sequence)
    decoder = mqtt.PacketDecoder()
    out: list[mqtt.Packet] = []
    pos, i = 0, 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        out.extend(decoder.feed(data[pos : pos + step]))
        pos += step
        i += 1
    assert out == sequence


@given(st.integers(0, mqtt.MAX_REMAINING_LENGTH))
def test_remaining_length_encoding_round_trips(n: int) -> None:
    """The variable-length field decodes to the same number and uses at most 4 bytes."""
    encoded = mqtt.encode_remaining_length(n)
    assert 1 <= len(encoded) <= 4
    value, mult = 0, 1
    for byte in encoded:
        value += (byte & 0x7F) * mult
        mult *= 128
    assert value == n


@given(st.binary(max_size=200))
def test_garbage_gives_packets_or_protocol_error_only(data: bytes) -> None:
    """Arbitrary bytes never raise anything but ProtocolError."""
    decoder = mqtt.PacketDecoder(max_packet_size=1000)
    decoder.push(data)
    with contextlib.suppress(ProtocolError):
        while (packet := decoder.next_packet()) is not None:
            assert isinstance(packet, mqtt.Packet)
            # whatever decodes is a packet the encoder can write back
            assert mqtt.PacketDecoder().feed(mqtt.encode(packet)) == [packet]


def test_qos2_wills_and_oversized_packets_are_refused() -> None:
    """QoS 2, a will flag and a packet over the size limit are protocol errors."""
    with pytest.raises(ProtocolError):
        mqtt.PacketDecoder().feed(b"\x34\x05\x00\x01a\x00\x01")  # QoS 2 publish
    will = mqtt.encode(mqtt.Connect("c", None, None, 60, False))
    will = will[:9] + bytes([will[9] | 0x04]) + will[10:]
    with pytest.raises(ProtocolError, match="will"):
        mqtt.PacketDecoder().feed(will)
    with pytest.raises(ProtocolError, match="exceeds"):
        mqtt.PacketDecoder(max_packet_size=10).feed(b"\x30\x0b")
    with pytest.raises(ProtocolError):
        mqtt.encode(mqtt.Publish("t", b"", 2, 1))
