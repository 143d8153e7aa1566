"""The Web PubSub wire formats: REST bodies, client frames and roles. Pure functions only.

Shapes follow Microsoft's reference for the ``json.webpubsub.azure.v1`` subprotocol:
server → client ``message`` / ``system`` / ``ack`` frames, client → server ``joinGroup`` /
``leaveGroup`` / ``sendToGroup`` / ``event`` requests, and the role names that permit them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from enviromon_sim.webpubsub.errors import (
    MessageTooLargeError,
    ProtocolError,
    UnsupportedContentTypeError,
)

JSON_SUBPROTOCOL: Final = "json.webpubsub.azure.v1"
#: The service's limit for a message (REST body or WebSocket frame), in bytes.
MAX_MESSAGE_BYTES: Final = 1024 * 1024
#: Hub names, as the SDK documents them: a letter, then letters, digits or underscores.
HUB_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")
MAX_GROUP_CHARS: Final = 1024
MAX_ACK_ID: Final = 2**64 - 1
#: Deepest JSON nesting accepted in a message. This server's own bound (the service's is not
#: documented); 64 is the default of .NET's System.Text.Json, and it keeps Python's recursive
#: JSON encoder and decoder far from the interpreter's recursion limit.
MAX_JSON_DEPTH: Final = 64

ROLE_JOIN_LEAVE: Final = "webpubsub.joinLeaveGroup"
ROLE_SEND_TO_GROUP: Final = "webpubsub.sendToGroup"


class DataType(StrEnum):
    """How a message's data is carried (``dataType`` in the JSON frames)."""

    JSON = "json"
    TEXT = "text"
    BINARY = "binary"


_CONTENT_TYPES: Final = {
    "application/json": DataType.JSON,
    "text/plain": DataType.TEXT,
    "application/octet-stream": DataType.BINARY,
}


@dataclass(frozen=True, slots=True)
class Message:
    """One message to deliver: ``raw`` is what a plain WebSocket gets, ``data`` the JSON value.

    For JSON, ``data`` is the parsed value; for text, the string; for binary, the bytes.
    """

    data_type: DataType
    raw: bytes
    data: Any


def check_hub(hub: str) -> str:
    """The hub name, lower-cased (the service treats hub names case-insensitively)."""
    if not HUB_RE.fullmatch(hub):
        raise ProtocolError(
            f"invalid hub name {hub[:64]!r}: must start with a letter and contain only "
            "letters, digits or underscores (at most 128 characters)"
        )
    return hub.lower()


def check_group(group: object) -> str:
    """A group name: a string of 1 to 1024 characters."""
    if not isinstance(group, str) or not 0 < len(group) <= MAX_GROUP_CHARS:
        raise ProtocolError("group name must be a string of 1 to 1024 characters")
    return group


def check_size(size: int) -> None:
    """Refuse a message over the 1 MB limit."""
    if size > MAX_MESSAGE_BYTES:
        raise MessageTooLargeError(
            f"message of {size} bytes is over the {MAX_MESSAGE_BYTES}-byte limit"
        )


def message_from_rest(content_type: str | None, body: bytes) -> Message:
    """The message a REST ``:send`` carries, from its Content-Type and body."""
    check_size(len(body))
    media = (content_type or "").split(";", 1)[0].strip().lower()
    data_type = _CONTENT_TYPES.get(media)
    if data_type is None:
        raise UnsupportedContentTypeError(
            f"unsupported Content-Type {media[:64]!r}: use application/json, text/plain "
            "or application/octet-stream"
        )
    if data_type is DataType.BINARY:
        return Message(data_type, body, body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"body is not UTF-8 text ({data_type.value})") from exc
    if data_type is DataType.TEXT:
        return Message(data_type, body, text)
    return Message(data_type, body, _loads(text, "body"))


def _loads(text: str, what: str) -> Any:
    """Strict JSON (no NaN or Infinity), nested at most `MAX_JSON_DEPTH` deep."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise ProtocolError(f"{what} is nested too deeply") from exc
    except ValueError as exc:
        raise ProtocolError(f"{what} is not valid JSON: {exc}") from exc
    check_depth(value, what)
    return value


def check_depth(value: Any, what: str = "JSON", limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON nested deeper than ``limit`` (arrays and objects); iterative, no recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                raise ProtocolError(f"{what} is nested more than {limit} levels deep")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259); Python's json would accept them.
    raise ValueError(f"{name} is not valid JSON")


def _frame(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _data_field(message: Message) -> Any:
    if message.data_type is DataType.BINARY:
        return base64.b64encode(message.raw).decode("ascii")
    return message.data


def plain_frame(message: Message) -> str | bytes:
    """What a plain WebSocket (no subprotocol) receives: text for json/text, bytes for binary."""
    if message.data_type is DataType.BINARY:
        return message.raw
    return message.raw.decode("utf-8")


def server_message_frame(message: Message) -> str:
    """A message from the server (REST), for a ``json.webpubsub.azure.v1`` client."""
    return _frame(
        {
            "type": "message",
            "from": "server",
            "dataType": message.data_type.value,
            "data": _data_field(message),
        }
    )


def group_message_frame(message: Message, *, group: str, from_user_id: str | None) -> str:
    """A message another client published to ``group``, for a subprotocol client."""
    return _frame(
        {
            "type": "message",
            "from": "group",
            "fromUserId": from_user_id,
            "group": group,
            "dataType": message.data_type.value,
            "data": _data_field(message),
        }
    )


def connected_frame(*, user_id: str | None, connection_id: str) -> str:
    """The ``connected`` system event a subprotocol client gets first."""
    return _frame(
        {"type": "system", "event": "connected", "userId": user_id, "connectionId": connection_id}
    )


def disconnected_frame(reason: str) -> str:
    """The ``disconnected`` system event sent before the service closes a connection."""
    return _frame({"type": "system", "event": "disconnected", "message": reason})


def ack_frame(ack_id: int, *, error: tuple[str, str] | None = None) -> str:
    """An ack: success, or ``error`` as (name, message), e.g. ("Forbidden", "...")."""
    obj: dict[str, Any] = {"type": "ack", "ackId": ack_id, "success": error is None}
    if error is not None:
        obj["error"] = {"name": error[0], "message": error[1]}
    return _frame(obj)


@dataclass(frozen=True, slots=True)
class JoinGroup:
    """``{"type":"joinGroup","group":…,"ackId":…}``."""

    group: str
    ack_id: int | None


@dataclass(frozen=True, slots=True)
class LeaveGroup:
    """``{"type":"leaveGroup","group":…,"ackId":…}``."""

    group: str
    ack_id: int | None


@dataclass(frozen=True, slots=True)
class SendToGroup:
    """``{"type":"sendToGroup","group":…,"dataType":…,"data":…,"noEcho":…,"ackId":…}``."""

    group: str
    message: Message
    no_echo: bool
    ack_id: int | None


@dataclass(frozen=True, slots=True)
class Event:
    """``{"type":"event","event":…,"dataType":…,"data":…,"ackId":…}``: for upstream handlers."""

    event: str
    message: Message
    ack_id: int | None


@dataclass(frozen=True, slots=True)
class Ping:
    """``{"type":"ping"}``: a client's keep-alive probe, answered with :func:`pong_frame`."""

    ack_id: None = None


def pong_frame() -> str:
    """``{"type":"pong"}``: the answer to a client's ping.

    ``@azure/web-pubsub-client`` pings every 20 s and closes a socket that hears nothing for
    120 s, so without pongs an idle dashboard would reconnect every two minutes.
    """
    return _frame({"type": "pong"})


ClientRequest = JoinGroup | LeaveGroup | SendToGroup | Event | Ping


def _ack_id(obj: dict[str, Any]) -> int | None:
    value = obj.get("ackId")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ACK_ID:
        raise ProtocolError("ackId must be an unsigned 64-bit integer")
    return value


def ack_id_of(text: str) -> int | None:
    """The ackId of a frame, if it has a valid one, even when the rest is invalid."""
    try:
        obj = json.loads(text)
        return _ack_id(obj) if isinstance(obj, dict) else None
    except (ValueError, RecursionError, ProtocolError):
        return None


def _message_from_frame(obj: dict[str, Any]) -> Message:
    try:
        data_type = DataType(str(obj.get("dataType")))
    except ValueError as exc:
        raise ProtocolError("dataType must be 'json', 'text' or 'binary'") from exc
    if "data" not in obj:
        raise ProtocolError("frame has no 'data'")
    data = obj["data"]
    if data_type is DataType.TEXT:
        if not isinstance(data, str):
            raise ProtocolError("data must be a string when dataType is 'text'")
        return Message(data_type, data.encode("utf-8"), data)
    if data_type is DataType.BINARY:
        if not isinstance(data, str):
            raise ProtocolError("data must be base64 when dataType is 'binary'")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError("data is not valid base64") from exc
        return Message(data_type, raw, raw)
    raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Message(data_type, raw, data)


def parse_client_frame(text: str) -> ClientRequest:
    """Parse a frame a ``json.webpubsub.azure.v1`` client sent; `ProtocolError` if invalid."""
    obj = _loads(text, "frame")
    if not isinstance(obj, dict):
        raise ProtocolError("frame must be a JSON object")
    kind = obj.get("type")
    if kind == "ping":
        return Ping()
    ack_id = _ack_id(obj)
    if kind in ("joinGroup", "leaveGroup"):
        group = check_group(obj.get("group"))
        return JoinGroup(group, ack_id) if kind == "joinGroup" else LeaveGroup(group, ack_id)
    if kind == "sendToGroup":
        group = check_group(obj.get("group"))
        no_echo = obj.get("noEcho", False)
        if not isinstance(no_echo, bool):
            raise ProtocolError("noEcho must be true or false")
        return SendToGroup(group, _message_from_frame(obj), no_echo, ack_id)
    if kind == "event":
        event = obj.get("event")
        if not isinstance(event, str) or not event:
            raise ProtocolError("event must be a non-empty string")
        return Event(event, _message_from_frame(obj), ack_id)
    raise ProtocolError(f"unknown frame type {str(kind)[:64]!r}")


@dataclass(frozen=True, slots=True)
class Permissions:
    """What a client may do, from the ``role`` claim of its token. No roles: receive only."""

    roles: frozenset[str]

    @classmethod
    def from_claim(cls, claim: object) -> Permissions:
        """From a ``role`` claim: a string, a list of strings, or absent."""
        if claim is None:
            return cls(frozenset())
        if isinstance(claim, str):
            return cls(frozenset([claim]))
        if isinstance(claim, list) and all(isinstance(r, str) for r in claim):
            return cls(frozenset(claim))
        raise ProtocolError("token claim 'role' must be a string or a list of strings")

    def can_join_leave(self, group: str) -> bool:
        """``webpubsub.joinLeaveGroup`` or ``webpubsub.joinLeaveGroup.<group>``."""
        return ROLE_JOIN_LEAVE in self.roles or f"{ROLE_JOIN_LEAVE}.{group}" in self.roles

    def can_send_to(self, group: str) -> bool:
        """``webpubsub.sendToGroup`` or ``webpubsub.sendToGroup.<group>``."""
        return ROLE_SEND_TO_GROUP in self.roles or f"{ROLE_SEND_TO_GROUP}.{group}" in self.roles
