"""Frame building and parsing of the local Web PubSub (pure functions)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from enviromon_sim.webpubsub import protocol
from enviromon_sim.webpubsub.errors import MessageTooLargeError, ProtocolError
from enviromon_sim.webpubsub.protocol import (
    MAX_MESSAGE_BYTES,
    DataType,
    Event,
    JoinGroup,
    LeaveGroup,
    Permissions,
    SendToGroup,
)
from hypothesis import given
from hypothesis import strategies as st

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
groups = st.text(min_size=1, max_size=40)


@given(value=json_values)
def test_json_body_reaches_both_kinds_of_client(value: Any) -> None:
    """A JSON body is delivered verbatim to plain clients and as the parsed value in frames."""
    body = json.dumps(value).encode()
    message = protocol.message_from_rest("application/json; charset=utf-8", body)
    assert message.data_type is DataType.JSON
    assert protocol.plain_frame(message) == body.decode()
    frame = json.loads(protocol.server_message_frame(message))
    assert frame == {"type": "message", "from": "server", "dataType": "json", "data": value}


@given(text=st.text())
def test_text_body_round_trips(text: str) -> None:
    """A text/plain body arrives as the same text, raw and in a frame."""
    message = protocol.message_from_rest("text/plain", text.encode())
    assert protocol.plain_frame(message) == text
    assert json.loads(protocol.server_message_frame(message))["data"] == text


@given(data=st.binary())
def test_binary_body_round_trips(data: bytes) -> None:
    """An octet-stream body arrives as bytes raw, and as base64 in a frame."""
    message = protocol.message_from_rest("application/octet-stream", data)
    assert protocol.plain_frame(message) == data
    frame = json.loads(protocol.server_message_frame(message))
    assert frame["dataType"] == "binary" and base64.b64decode(frame["data"]) == data


@pytest.mark.parametrize(
    ("content_type", "body", "match"),
    [
        ("application/json", b'{"truncated": ', "not valid JSON"),
        ("application/json", b"NaN", "not valid JSON"),
        ("application/json", b'{"x": Infinity}', "not valid JSON"),
        ("application/json", b"\xff\xfe", "UTF-8"),
        ("text/plain", b"\xc3", "UTF-8"),
        ("application/xml", b"<a/>", "Content-Type"),
        (None, b"{}", "Content-Type"),
    ],
)
def test_bad_rest_bodies_are_refused(content_type: str | None, body: bytes, match: str) -> None:
    """Malformed JSON, NaN, bad UTF-8 and unknown content types raise ProtocolError."""
    with pytest.raises(ProtocolError, match=match):
        protocol.message_from_rest(content_type, body)


def test_size_limit_is_one_megabyte() -> None:
    """A body of exactly 1 MB passes; one byte more is MessageTooLargeError."""
    assert protocol.message_from_rest("text/plain", b"a" * MAX_MESSAGE_BYTES).raw
    with pytest.raises(MessageTooLargeError):
        protocol.message_from_rest("text/plain", b"a" * (MAX_MESSAGE_BYTES + 1))


@given(group=groups, value=json_values, no_echo=st.booleans(), ack=st.integers(0, 2**64 - 1))
def test_send_to_group_frames_parse(group: str, value: Any, no_echo: bool, ack: int) -> None:
    """A sendToGroup frame parses to its group, data, noEcho and ackId."""
    frame = {
        "type": "sendToGroup",
        "group": group,
        "dataType": "json",
        "data": value,
        "noEcho": no_echo,
        "ackId": ack,
    }
    request = protocol.parse_client_frame(json.dumps(frame))
    assert isinstance(request, SendToGroup)
    assert (request.group, request.message.data, request.no_echo, request.ack_id) == (
        group,
        value,
        no_echo,
        ack,
    )
    out = json.loads(protocol.group_message_frame(request.message, group=group, from_user_id="u1"))
    assert out == {
        "type": "message",
        "from": "group",
        "fromUserId": "u1",
        "group": group,
        "dataType": "json",
        "data": value,
    }


@given(data=st.binary())
def test_binary_client_data_round_trips(data: bytes) -> None:
    """Binary data sent by a client (base64) reaches plain clients as the same bytes."""
    frame = {"type": "sendToGroup", "group": "g", "dataType": "binary"}
    frame["data"] = base64.b64encode(data).decode()
    request = protocol.parse_client_frame(json.dumps(frame))
    assert isinstance(request, SendToGroup)
    assert protocol.plain_frame(request.message) == data


def test_join_leave_and_event_frames_parse() -> None:
    """joinGroup, leaveGroup and event frames parse to their requests."""
    assert protocol.parse_client_frame('{"type":"joinGroup","group":"g","ackId":1}') == JoinGroup(
        "g", 1
    )
    assert protocol.parse_client_frame('{"type":"leaveGroup","group":"g"}') == LeaveGroup("g", None)
    event = protocol.parse_client_frame('{"type":"event","event":"e","dataType":"text","data":"x"}')
    assert isinstance(event, Event) and event.event == "e" and event.message.data == "x"


@given(text=st.text(max_size=300))
def test_arbitrary_frames_raise_protocol_error_only(text: str) -> None:
    """Any text either parses to a request or raises ProtocolError, never anything else."""
    try:
        request = protocol.parse_client_frame(text)
    except ProtocolError:
        return
    assert isinstance(request, JoinGroup | LeaveGroup | SendToGroup | Event)


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"joinGroup"}',
        '{"type":"joinGroup","group":""}',
        '{"type":"joinGroup","group":"' + "g" * 1025 + '"}',
        '{"type":"joinGroup","group":"g","ackId":-1}',
        '{"type":"joinGroup","group":"g","ackId":"1"}',
        '{"type":"joinGroup","group":"g","ackId":18446744073709551616}',
        '{"type":"sendToGroup","group":"g","dataType":"xml","data":1}',
        '{"type":"sendToGroup","group":"g","dataType":"text"}',
        '{"type":"sendToGroup","group":"g","dataType":"text","data":5}',
        '{"type":"sendToGroup","group":"g","dataType":"binary","data":"!!"}',
        '{"type":"sendToGroup","group":"g","dataType":"json","data":1,"noEcho":"yes"}',
        '{"type":"event","event":"","dataType":"text","data":"x"}',
        '{"type":"hack"}',
        "[1, 2]",
        "{not json",
        '{"type":"joinGroup","group":"g","x":NaN}',
    ],
)
def test_invalid_frames_are_refused(frame: str) -> None:
    """Frames with missing or wrong fields raise ProtocolError."""
    with pytest.raises(ProtocolError):
        protocol.parse_client_frame(frame)


def test_ack_id_is_recovered_from_invalid_frames() -> None:
    """The ackId of an invalid frame can still be read, so the client gets an error ack."""
    assert protocol.ack_id_of('{"type":"hack","ackId":7}') == 7
    assert protocol.ack_id_of("{garbage") is None
    assert protocol.ack_id_of('{"ackId":true}') is None


def test_frames_have_the_documented_shapes() -> None:
    """connected, disconnected and ack frames match Microsoft's documented shapes."""
    assert json.loads(protocol.connected_frame(user_id=None, connection_id="c1")) == {
        "type": "system",
        "event": "connected",
        "userId": None,
        "connectionId": "c1",
    }
    assert json.loads(protocol.disconnected_frame("bye")) == {
        "type": "system",
        "event": "disconnected",
        "message": "bye",
    }
    assert json.loads(protocol.ack_frame(3)) == {"type": "ack", "ackId": 3, "success": True}
    assert json.loads(protocol.ack_frame(4, error=("Forbidden", "no"))) == {
        "type": "ack",
        "ackId": 4,
        "success": False,
        "error": {"name": "Forbidden", "message": "no"},
    }


@given(group=groups)
def test_roles_grant_what_they_name(group: str) -> None:
    """Each role grants its own action, for any group or only its named group."""
    assert not Permissions.from_claim(None).can_join_leave(group)
    assert not Permissions.from_claim(None).can_send_to(group)
    join_any = Permissions.from_claim("webpubsub.joinLeaveGroup")
    assert join_any.can_join_leave(group) and not join_any.can_send_to(group)
    send_one = Permissions.from_claim([f"webpubsub.sendToGroup.{group}"])
    assert send_one.can_send_to(group) and not send_one.can_send_to(group + "x")
    assert not send_one.can_join_leave(group)


@pytest.mark.parametrize("claim", [5, {"role": "x"}, ["ok", 3]])
def test_malformed_role_claims_are_refused(claim: Any) -> None:
    """A role claim that is not a string or list of strings raises ProtocolError."""
    with pytest.raises(ProtocolError):
        Permissions.from_claim(claim)


@pytest.mark.parametrize("hub", ["", "1hub", "hub-name", "hub/x", "h" * 129, "hüb", "../x"])
def test_bad_hub_names_are_refused(hub: str) -> None:
    """Hub names must start with a letter and hold only letters, digits and underscores."""
    with pytest.raises(ProtocolError):
        protocol.check_hub(hub)


def test_hub_names_are_case_insensitive() -> None:
    """Hub names are compared lower-cased."""
    assert protocol.check_hub("EnviroMon_2") == "enviromon_2"


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@given(value=json_values)
def test_depth_check_agrees_with_a_recursive_count(value: Any) -> None:
    """check_depth refuses exactly the values nested deeper than the limit."""
    limit = 3
    try:
        protocol.check_depth(value, limit=limit)
    except ProtocolError:
        assert _depth(value) > limit
    else:
        assert _depth(value) <= limit


@pytest.mark.parametrize("depth", [protocol.MAX_JSON_DEPTH + 1, 5000, 200_000])
def test_deep_nesting_is_refused_not_crashed(depth: int) -> None:
    """Deeply nested JSON, in a REST body or a client frame, is a ProtocolError."""
    body = "[" * depth + "]" * depth
    with pytest.raises(ProtocolError, match="nested"):
        protocol.message_from_rest("application/json", body.encode())
    frame = '{"type":"sendToGroup","group":"g","dataType":"json","data":' + body + "}"
    with pytest.raises(ProtocolError, match="nested"):
        protocol.parse_client_frame(frame)


def test_nesting_up_to_the_limit_is_accepted() -> None:
    """JSON nested exactly MAX_JSON_DEPTH deep is accepted."""
    depth = protocol.MAX_JSON_DEPTH
    message = protocol.message_from_rest("application/json", b"[" * depth + b"]" * depth)
    assert _depth(message.data) == depth
