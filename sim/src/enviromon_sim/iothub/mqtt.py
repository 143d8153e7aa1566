"""A pure codec for the MQTT 3.1.1 subset IoT Hub speaks.

Packets: CONNECT/CONNACK, PUBLISH (QoS 0/1) and PUBACK, SUBSCRIBE/SUBACK, UNSUBSCRIBE/UNSUBACK,
PINGREQ/PINGRESP and DISCONNECT. QoS 2, wills and MQTT 5 are refused: IoT Hub does not use them.
No I/O here: `encode` turns a packet into bytes, `PacketDecoder.feed` turns bytes into packets,
so both can be tested with generated input.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from enviromon_sim.iothub.errors import ProtocolError

# Packet types (the high nibble of the fixed header).
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

# CONNACK return codes (MQTT 3.1.1 section 3.2.2.3).
CONNACK_ACCEPTED = 0
CONNACK_REFUSED_PROTOCOL_VERSION = 1
CONNACK_REFUSED_IDENTIFIER_REJECTED = 2
CONNACK_REFUSED_SERVER_UNAVAILABLE = 3
CONNACK_REFUSED_BAD_USERNAME_PASSWORD = 4
CONNACK_REFUSED_NOT_AUTHORIZED = 5

SUBACK_FAILURE = 0x80
MAX_REMAINING_LENGTH = 268_435_455  # four length bytes, the protocol's limit


@dataclass(frozen=True, slots=True)
class Connect:
    """CONNECT: who the client says it is."""

    client_id: str
    username: str | None
    password: bytes | None
    keep_alive: int
    clean_session: bool
    protocol_level: int = 4


@dataclass(frozen=True, slots=True)
class ConnAck:
    """CONNACK: accepted (0) or the reason for refusing."""

    return_code: int
    session_present: bool = False


@dataclass(frozen=True, slots=True)
class Publish:
    """PUBLISH: a message on a topic. ``packet_id`` is set only for QoS 1."""

    topic: str
    payload: bytes
    qos: int = 0
    packet_id: int | None = None
    dup: bool = False
    retain: bool = False


@dataclass(frozen=True, slots=True)
class PubAck:
    """PUBACK: QoS 1 delivery confirmed."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    """SUBSCRIBE: (topic filter, requested QoS) pairs."""

    packet_id: int
    topics: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class SubAck:
    """SUBACK: granted QoS per filter, or 0x80 for a refused one."""

    packet_id: int
    return_codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """UNSUBSCRIBE: topic filters to drop."""

    packet_id: int
    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UnsubAck:
    """UNSUBACK."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class PingReq:
    """PINGREQ."""


@dataclass(frozen=True, slots=True)
class PingResp:
    """PINGRESP."""


@dataclass(frozen=True, slots=True)
class Disconnect:
    """DISCONNECT: a clean goodbye."""


Packet = (
    Connect
    | ConnAck
    | Publish
    | PubAck
    | Subscribe
    | SubAck
    | Unsubscribe
    | UnsubAck
    | PingReq
    | PingResp
    | Disconnect
)


def encode_remaining_length(n: int) -> bytes:
    """The variable-length 'remaining length' field."""
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise ProtocolError(f"remaining length {n} out of range")
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    raw = s.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ProtocolError("string longer than 65535 bytes")
    return struct.pack("!H", len(raw)) + raw


def _bin(b: bytes) -> bytes:
    if len(b) > 0xFFFF:
        raise ProtocolError("binary field longer than 65535 bytes")
    return struct.pack("!H", len(b)) + b


def _frame(first: int, body: bytes) -> bytes:
    return bytes([first]) + encode_remaining_length(len(body)) + body


def _check_packet_id(pid: int | None) -> int:
    if pid is None or not 1 <= pid <= 0xFFFF:
        raise ProtocolError(f"packet id {pid} out of range 1..65535")
    return pid


def encode(packet: Packet) -> bytes:
    """Serialise one packet."""
    if isinstance(packet, Connect):
        flags = 0x02 if packet.clean_session else 0
        payload = _str(packet.client_id)
        if packet.username is not None:
            flags |= 0x80
            payload += _str(packet.username)
        if packet.password is not None:
            flags |= 0x40
            payload += _bin(packet.password)
        header = _str("MQTT") + bytes([packet.protocol_level, flags])
        return _frame(CONNECT << 4, header + struct.pack("!H", packet.keep_alive) + payload)
    if isinstance(packet, ConnAck):
        return _frame(CONNACK << 4, bytes([int(packet.session_present), packet.return_code]))
    if isinstance(packet, Publish):
        if packet.qos not in (0, 1):
            raise ProtocolError(f"QoS {packet.qos} is not supported")
        first = (
            (PUBLISH << 4) | (packet.qos << 1) | (0x08 if packet.dup else 0) | int(packet.retain)
        )
        body = _str(packet.topic)
        if packet.qos:
            body += struct.pack("!H", _check_packet_id(packet.packet_id))
        return _frame(first, body + packet.payload)
    if isinstance(packet, PubAck):
        return _frame(PUBACK << 4, struct.pack("!H", _check_packet_id(packet.packet_id)))
    if isinstance(packet, Subscribe):
        body = struct.pack("!H", _check_packet_id(packet.packet_id))
        for topic, qos in packet.topics:
            body += _str(topic) + bytes([qos])
        return _frame((SUBSCRIBE << 4) | 0x02, body)
    if isinstance(packet, SubAck):
        body = struct.pack("!H", _check_packet_id(packet.packet_id)) + bytes(packet.return_codes)
        return _frame(SUBACK << 4, body)
    if isinstance(packet, Unsubscribe):
        body = struct.pack("!H", _check_packet_id(packet.packet_id))
        for topic in packet.topics:
            body += _str(topic)
        return _frame((UNSUBSCRIBE << 4) | 0x02, body)
    if isinstance(packet, UnsubAck):
        return _frame(UNSUBACK << 4, struct.pack("!H", _check_packet_id(packet.packet_id)))
    if isinstance(packet, PingReq):
        return _frame(PINGREQ << 4, b"")
    if isinstance(packet, PingResp):
        return _frame(PINGRESP << 4, b"")
    return _frame(DISCONNECT << 4, b"")


class _Cursor:
    """Reads fields from one packet body; any overrun is a ProtocolError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError("packet shorter than its fields")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = struct.unpack("!H", self.take(2))[0]
        return value

    def binary(self) -> bytes:
        return self.take(self.u16())

    def string(self) -> str:
        raw = self.binary()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("string is not UTF-8") from exc
        if "\x00" in text:
            raise ProtocolError("string contains U+0000")
        return text

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out

    def at_end(self) -> bool:
        return self.pos >= len(self.data)


def decode(first: int, body: bytes) -> Packet:
    """Parse one packet from its fixed-header byte and its body."""
    ptype, flags = first >> 4, first & 0x0F
    cur = _Cursor(body)
    if ptype == CONNECT:
        if cur.string() != "MQTT":
            raise ProtocolError("protocol name is not MQTT")
        level = cur.u8()
        cflags = cur.u8()
        keep_alive = cur.u16()
        client_id = cur.string()
        if cflags & 0x01:
            raise ProtocolError("reserved CONNECT flag set")
        if cflags & 0x04:
            raise ProtocolError("wills are not supported")
        username = cur.string() if cflags & 0x80 else None
        password = cur.binary() if cflags & 0x40 else None
        if not cur.at_end():
            raise ProtocolError("trailing bytes in CONNECT")
        return Connect(client_id, username, password, keep_alive, bool(cflags & 0x02), level)
    if ptype == CONNACK:
        ack_flags, rc = cur.u8(), cur.u8()
        return ConnAck(rc, bool(ack_flags & 0x01))
    if ptype == PUBLISH:
        qos = (flags >> 1) & 0x03
        if qos > 1:
            raise ProtocolError(f"QoS {qos} is not supported")
        topic = cur.string()
        if not topic or "+" in topic or "#" in topic:
            raise ProtocolError("invalid topic name in PUBLISH")
        pid = cur.u16() if qos else None
        if qos and not pid:
            raise ProtocolError("packet id 0 in PUBLISH")
        return Publish(topic, cur.rest(), qos, pid, bool(flags & 0x08), bool(flags & 0x01))
    if ptype in (PUBACK, UNSUBACK):
        pid = cur.u16()
        return PubAck(pid) if ptype == PUBACK else UnsubAck(pid)
    if ptype == SUBSCRIBE:
        if flags != 0x02:
            raise ProtocolError("SUBSCRIBE flags must be 0010")
        pid = cur.u16()
        subs: list[tuple[str, int]] = []
        while not cur.at_end():
            topic = cur.string()
            subs.append((topic, cur.u8()))
        if not subs:
            raise ProtocolError("SUBSCRIBE without topics")
        return Subscribe(pid, tuple(subs))
    if ptype == SUBACK:
        pid = cur.u16()
        return SubAck(pid, tuple(cur.rest()))
    if ptype == UNSUBSCRIBE:
        if flags != 0x02:
            raise ProtocolError("UNSUBSCRIBE flags must be 0010")
        pid = cur.u16()
        topics: list[str] = []
        while not cur.at_end():
            topics.append(cur.string())
        if not topics:
            raise ProtocolError("UNSUBSCRIBE without topics")
        return Unsubscribe(pid, tuple(topics))
    if ptype == PINGREQ:
        return PingReq()
    if ptype == PINGRESP:
        return PingResp()
    if ptype == DISCONNECT:
        return Disconnect()
    raise ProtocolError(f"unsupported packet type {ptype}")


@dataclass
class PacketDecoder:
    """Incremental decoder: push bytes as they arrive, take whole packets out.

    Packets are parsed one at a time on ``next_packet``, so ``max_packet_size`` may change
    between packets (the hub allows a small CONNECT before authentication, larger after).

    Attributes:
        max_packet_size: a packet whose remaining length exceeds this is a ProtocolError
            (IoT Hub's 256 KB message limit plus room for the topic).
    """

    max_packet_size: int = 512 * 1024
    _buf: bytearray = field(default_factory=bytearray)

    def push(self, data: bytes) -> None:
        """Add received bytes."""
        self._buf += data

    def next_packet(self) -> Packet | None:
        """The next complete packet, or None until more bytes arrive."""
        parsed = self._header()
        if parsed is None:
            return None
        length, header_len = parsed
        end = header_len + length
        if len(self._buf) < end:
            return None
        first = self._buf[0]
        body = bytes(self._buf[header_len:end])
        del self._buf[:end]
        return decode(first, body)

    def feed(self, data: bytes) -> list[Packet]:
        """Add bytes; return every packet now complete, in order."""
        self.push(data)
        out: list[Packet] = []
        while (packet := self.next_packet()) is not None:
            out.append(packet)
        return out

    def _header(self) -> tuple[int, int] | None:
        length, mult = 0, 1
        for i in range(1, 5):
            if i >= len(self._buf):
                return None
            byte = self._buf[i]
            length += (byte & 0x7F) * mult
            if not byte & 0x80:
                if length > self.max_packet_size:
                    raise ProtocolError(f"packet of {length} bytes exceeds the limit")
                return length, i + 1
            mult *= 128
        raise ProtocolError("remaining length longer than four bytes")
