"""The local Web PubSub end to end, with the real service SDK and real WebSocket clients."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from enviromon_sim.webpubsub import hub as hubmod
from enviromon_sim.webpubsub import jwt
from enviromon_sim.webpubsub.protocol import JSON_SUBPROTOCOL, MAX_MESSAGE_BYTES
from enviromon_sim.webpubsub.server import WebPubSubServer, WebPubSubThread
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from tests.support.pubsub import HUB, WAIT_S, open_client, recv_json, service_client

SUBPROTOCOL = Subprotocol(JSON_SUBPROTOCOL)
BATCH: Any = [
    {"deviceId": "pi-kitchen", "seq": 1, "temperature": 21.4, "counts": {"Count": 1}},
    {"deviceId": "pi-kitchen", "seq": 2, "temperature": 21.5, "counts": {"Count": 2}},
]


def _marker(pubsub: WebPubSubThread, value: str = "marker") -> None:
    """Broadcast a text marker: a client that gets it next got nothing in between."""
    service_client(pubsub).send_to_all(value, content_type="text/plain")


def _raw_request(
    pubsub: WebPubSubThread,
    path: str,
    *,
    body: bytes = b"{}",
    content_type: str | None = "application/json",
    method: str = "POST",
    token: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """A hand-made REST call (for what the SDK would never send); (status, JSON body)."""
    url = f"{pubsub.endpoint}{path}"
    if token is None:
        token = jwt.sign({"aud": url, "exp": int(time.time()) + 60}, pubsub.access_key)
    headers = {"Authorization": f"Bearer {token}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=WAIT_S) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else {}


def test_send_to_all_reaches_subprotocol_and_plain_clients(pubsub: WebPubSubThread) -> None:
    """A batch sent with send_to_all arrives as a server frame and as the raw JSON."""
    with open_client(pubsub) as framed, open_client(pubsub, subprotocol=False) as plain:
        service_client(pubsub).send_to_all(BATCH)
        assert recv_json(framed) == {
            "type": "message",
            "from": "server",
            "dataType": "json",
            "data": BATCH,
        }
        assert json.loads(plain.recv(timeout=WAIT_S)) == BATCH


def test_connected_event_carries_user_and_connection_id(pubsub: WebPubSubThread) -> None:
    """The first frame is the connected event with the token's user and a connection id."""
    token = service_client(pubsub).get_client_access_token(user_id="alice")
    with connect(token["url"], subprotocols=[SUBPROTOCOL], open_timeout=WAIT_S) as ws:
        assert ws.subprotocol == JSON_SUBPROTOCOL
        event = recv_json(ws)
        assert event["type"] == "system" and event["event"] == "connected"
        assert event["userId"] == "alice"
        assert isinstance(event["connectionId"], str) and len(event["connectionId"]) >= 16
        assert service_client(pubsub).connection_exists(event["connectionId"])
    assert not service_client(pubsub).connection_exists("no-such-connection")


def test_plain_client_gets_raw_text_and_binary(pubsub: WebPubSubThread) -> None:
    """A plain WebSocket gets text frames for text and binary frames for octet-stream."""
    client = service_client(pubsub)
    with open_client(pubsub, subprotocol=False) as ws:
        assert ws.subprotocol is None
        client.send_to_all("héllo", content_type="text/plain")
        assert ws.recv(timeout=WAIT_S) == "héllo"
        client.send_to_all(b"\x00\xffbin", content_type="application/octet-stream")  # type: ignore[call-overload]
        assert ws.recv(timeout=WAIT_S) == b"\x00\xffbin"


def test_binary_reaches_subprotocol_client_as_base64(pubsub: WebPubSubThread) -> None:
    """Binary data arrives in a frame with dataType binary, base64-encoded."""
    with open_client(pubsub) as ws:
        service_client(pubsub).send_to_all(b"\x01\x02", content_type="application/octet-stream")  # type: ignore[call-overload]
        assert recv_json(ws) == {
            "type": "message",
            "from": "server",
            "dataType": "binary",
            "data": "AQI=",
        }


def test_send_to_group_reaches_members_only(pubsub: WebPubSubThread) -> None:
    """send_to_group reaches a client that joined the group and not one that did not."""
    client = service_client(pubsub)
    with (
        open_client(pubsub, roles=["webpubsub.joinLeaveGroup"]) as member,
        open_client(pubsub) as outsider,
    ):
        member.send(json.dumps({"type": "joinGroup", "group": "kitchen", "ackId": 1}))
        assert recv_json(member) == {"type": "ack", "ackId": 1, "success": True}
        client.send_to_group("kitchen", {"seq": 7})
        assert recv_json(member)["data"] == {"seq": 7}
        _marker(pubsub)
        assert recv_json(outsider)["data"] == "marker"
        assert client.group_exists("kitchen") and not client.group_exists("garage")


def test_groups_in_the_token_are_joined_on_connect(pubsub: WebPubSubThread) -> None:
    """A token's webpubsub.group claim joins the client to those groups, without any role."""
    with open_client(pubsub, groups=["garage"]) as ws:
        service_client(pubsub).send_to_group("garage", "door open", content_type="text/plain")
        assert recv_json(ws)["data"] == "door open"


def test_group_names_with_slashes_and_spaces(pubsub: WebPubSubThread) -> None:
    """Group names are taken whole, even with characters that need escaping in the URL."""
    with open_client(pubsub, groups=["a/b c"]) as ws:
        service_client(pubsub).send_to_group("a/b c", "x", content_type="text/plain")
        assert recv_json(ws)["data"] == "x"


def test_group_role_is_enforced(pubsub: WebPubSubThread) -> None:
    """webpubsub.joinLeaveGroup.<g> lets a client join g and no other group."""
    with open_client(pubsub, roles=["webpubsub.joinLeaveGroup.kitchen"]) as ws:
        ws.send(json.dumps({"type": "joinGroup", "group": "kitchen", "ackId": 1}))
        assert recv_json(ws)["success"] is True
        ws.send(json.dumps({"type": "joinGroup", "group": "garage", "ackId": 2}))
        ack = recv_json(ws)
        assert ack["ackId"] == 2 and ack["success"] is False
        assert ack["error"]["name"] == "Forbidden"
        service_client(pubsub).send_to_group("garage", "secret", content_type="text/plain")
        _marker(pubsub)
        assert recv_json(ws)["data"] == "marker"


def test_receive_only_token_cannot_join_or_send(pubsub: WebPubSubThread) -> None:
    """A token without roles (what negotiate hands out) can neither join nor publish."""
    with (
        open_client(pubsub) as reader,
        open_client(pubsub, groups=["kitchen"]) as member,
    ):
        reader.send(json.dumps({"type": "joinGroup", "group": "kitchen", "ackId": 1}))
        assert recv_json(reader)["error"]["name"] == "Forbidden"
        reader.send(
            json.dumps(
                {
                    "type": "sendToGroup",
                    "group": "kitchen",
                    "dataType": "text",
                    "data": "spoofed reading",
                    "ackId": 2,
                }
            )
        )
        ack = recv_json(reader)
        assert ack["ackId"] == 2 and ack["error"]["name"] == "Forbidden"
        _marker(pubsub)
        assert recv_json(member)["data"] == "marker"  # the spoofed message never arrived


def test_send_to_group_role_publishes_to_members(pubsub: WebPubSubThread) -> None:
    """With webpubsub.sendToGroup a client publishes; noEcho keeps it from itself."""
    with (
        open_client(pubsub, roles=["webpubsub.sendToGroup.chat"], groups=["chat"]) as sender,
        open_client(pubsub, groups=["chat"], user_id="bob") as member,
        open_client(pubsub, groups=["chat"], subprotocol=False) as plain,
    ):
        frame = {"type": "sendToGroup", "group": "chat", "dataType": "json", "data": {"hi": 1}}
        sender.send(json.dumps({**frame, "ackId": 1, "noEcho": True}))
        assert recv_json(sender) == {"type": "ack", "ackId": 1, "success": True}
        got = recv_json(member)
        assert got == {
            "type": "message",
            "from": "group",
            "fromUserId": None,
            "group": "chat",
            "dataType": "json",
            "data": {"hi": 1},
        }
        assert json.loads(plain.recv(timeout=WAIT_S)) == {"hi": 1}
        sender.send(json.dumps({**frame, "ackId": 2}))  # echo on by default
        assert {recv_json(sender)["type"], recv_json(sender)["type"]} == {"ack", "message"}


def test_duplicate_ack_id_is_not_published_twice(pubsub: WebPubSubThread) -> None:
    """A retried frame with the same ackId gets a Duplicate ack and is not delivered again."""
    with (
        open_client(pubsub, roles=["webpubsub.sendToGroup"]) as sender,
        open_client(pubsub, groups=["g"]) as member,
    ):
        frame = {"type": "sendToGroup", "group": "g", "dataType": "text", "data": "once"}
        sender.send(json.dumps({**frame, "ackId": 9}))
        assert recv_json(sender)["success"] is True
        sender.send(json.dumps({**frame, "ackId": 9}))
        assert recv_json(sender)["error"]["name"] == "Duplicate"
        assert recv_json(member)["data"] == "once"
        _marker(pubsub)
        assert recv_json(member)["data"] == "marker"


def test_send_to_user_reaches_that_user_only(pubsub: WebPubSubThread) -> None:
    """send_to_user reaches the user's connections and no one else."""
    client = service_client(pubsub)
    with open_client(pubsub, user_id="alice") as alice, open_client(pubsub) as other:
        client.send_to_user("alice", "for alice", content_type="text/plain")
        assert recv_json(alice)["data"] == "for alice"
        _marker(pubsub)
        assert recv_json(other)["data"] == "marker"
        assert client.user_exists("alice") and not client.user_exists("mallory")


def test_excluded_and_send_to_connection(pubsub: WebPubSubThread) -> None:
    """excluded connection ids are skipped; send_to_connection reaches just that one."""
    client = service_client(pubsub)
    token = client.get_client_access_token()
    with (
        connect(token["url"], subprotocols=[SUBPROTOCOL], open_timeout=WAIT_S) as a,
        open_client(pubsub) as b,
    ):
        a_id = recv_json(a)["connectionId"]
        client.send_to_all("not for a", content_type="text/plain", excluded=[a_id])
        assert recv_json(b)["data"] == "not for a"
        client.send_to_connection(a_id, "just a", content_type="text/plain")
        assert recv_json(a)["data"] == "just a"
        _marker(pubsub)
        assert recv_json(b)["data"] == "marker"


def test_close_all_connections_sends_disconnected(pubsub: WebPubSubThread) -> None:
    """close_all_connections sends the disconnected event with the reason, then closes."""
    with open_client(pubsub) as ws:
        service_client(pubsub).close_all_connections(reason="maintenance")
        assert recv_json(ws) == {
            "type": "system",
            "event": "disconnected",
            "message": "maintenance",
        }
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=WAIT_S)
        assert ws.close_code == 1000
    with open_client(pubsub) as ws:
        service_client(pubsub).close_all_connections(reason="é" * 200)
        assert recv_json(ws)["message"] == "é" * 120
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=WAIT_S)
        assert ws.close_code == 1000 and ws.close_reason == "é" * 61  # 122 of 123 bytes


def test_wrong_key_gets_401(pubsub: WebPubSubThread) -> None:
    """The SDK with another AccessKey gets 401, with the reason, as HttpResponseError."""
    wrong = pubsub.connection_string.replace(pubsub.access_key, "d3JvbmcK" + pubsub.access_key)
    client = service_client(pubsub)
    client = type(client).from_connection_string(wrong, hub=HUB)
    with pytest.raises(HttpResponseError) as info:
        client.send_to_all(BATCH)
    assert info.value.status_code == 401
    assert "signature" in str(info.value)


def test_wrong_key_client_token_is_refused(pubsub: WebPubSubThread) -> None:
    """A client URL signed with another key fails the WebSocket handshake with 401."""
    wrong = pubsub.connection_string.replace(pubsub.access_key, "d3JvbmcK" + pubsub.access_key)
    url = type(service_client(pubsub)).from_connection_string(wrong, hub=HUB)
    with pytest.raises(InvalidStatus) as info:
        connect(url.get_client_access_token()["url"], open_timeout=WAIT_S)
    assert info.value.response.status_code == 401


def test_expired_client_token_gets_401(pubsub: WebPubSubThread) -> None:
    """A client token past its exp is refused with 401 at the handshake."""
    token = service_client(pubsub).get_client_access_token(minutes_to_expire=-1)
    with pytest.raises(InvalidStatus) as info:
        connect(token["url"], open_timeout=WAIT_S)
    assert info.value.response.status_code == 401
    assert b"expired" in info.value.response.body


def test_expired_rest_token_gets_401(pubsub: WebPubSubThread) -> None:
    """A REST call whose bearer token has expired gets 401 and the reason."""
    path = f"/api/hubs/{HUB}/:send?api-version=2024-12-01"
    expired = jwt.sign(
        {"aud": f"{pubsub.endpoint}{path}", "exp": int(time.time()) - 5}, pubsub.access_key
    )
    status, body = _raw_request(pubsub, path, token=expired)
    assert status == 401 and "expired" in body["error"]["message"]


def test_token_for_another_hub_is_refused(pubsub: WebPubSubThread) -> None:
    """A client token for hub A cannot open hub B (aud is the hub's URL)."""
    token = service_client(pubsub, hub="other").get_client_access_token()
    url = token["url"].replace("/client/hubs/other", f"/client/hubs/{HUB}")
    with pytest.raises(InvalidStatus) as info:
        connect(url, open_timeout=WAIT_S)
    assert info.value.response.status_code == 401


def test_missing_token_is_refused(pubsub: WebPubSubThread) -> None:
    """A client URL without access_token is refused with 401."""
    with pytest.raises(InvalidStatus) as info:
        connect(pubsub.client_url(HUB), open_timeout=WAIT_S)
    assert info.value.response.status_code == 401


def test_over_one_megabyte_rest_body_gets_413(pubsub: WebPubSubThread) -> None:
    """A message over 1 MB is refused with 413; one of exactly 1 MB is accepted."""
    client = service_client(pubsub)
    client.send_to_all("a" * MAX_MESSAGE_BYTES, content_type="text/plain")
    with pytest.raises(HttpResponseError) as info:
        client.send_to_all("a" * (MAX_MESSAGE_BYTES + 1), content_type="text/plain")
    assert info.value.status_code == 413
    status, body = _raw_request(
        pubsub, f"/api/hubs/{HUB}/:send?api-version=1", body=b"x" * (10 * MAX_MESSAGE_BYTES)
    )
    assert status == 413 and body["error"]["code"] == "RequestEntityTooLarge"


def test_over_one_megabyte_client_frame_closes_with_1009(pubsub: WebPubSubThread) -> None:
    """A client frame over 1 MB closes that socket with 1009 (message too big); others stay."""
    with open_client(pubsub, roles=["webpubsub.sendToGroup"]) as big, open_client(pubsub) as ok:
        big.send(
            json.dumps(
                {"type": "event", "event": "e", "dataType": "text", "data": "x" * MAX_MESSAGE_BYTES}
            )
        )
        with pytest.raises(ConnectionClosed):
            big.recv(timeout=WAIT_S)
        assert big.close_code == 1009
        _marker(pubsub)
        assert recv_json(ok)["data"] == "marker"


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status", "code"),
    [
        (
            f"/api/hubs/{HUB}/:send?api-version=1",
            b'{"truncated": ',
            "application/json",
            400,
            "InvalidMessage",
        ),
        (f"/api/hubs/{HUB}/:send?api-version=1", b"NaN", "application/json", 400, "InvalidMessage"),
        (f"/api/hubs/{HUB}/:send?api-version=1", b"\xff\xfe", "text/plain", 400, "InvalidMessage"),
        (
            f"/api/hubs/{HUB}/:send?api-version=1",
            b"<x/>",
            "application/xml",
            415,
            "UnsupportedContentType",
        ),
        (f"/api/hubs/{HUB}/:send?api-version=1", b"{}", None, 415, "UnsupportedContentType"),
        (f"/api/hubs/{HUB}/:send", b"{}", "application/json", 400, "MissingApiVersion"),
        (
            f"/api/hubs/{HUB}/:send?api-version=1&filter=userId%20eq%20'a'",
            b"{}",
            "application/json",
            400,
            "NotSupported",
        ),
        (
            "/api/hubs/bad-hub!/:send?api-version=1",
            b"{}",
            "application/json",
            400,
            "InvalidHubName",
        ),
        (
            "/api/hubs/%3Cscript%3E/:send?api-version=1",
            b"{}",
            "application/json",
            400,
            "InvalidHubName",
        ),
        (
            f"/api/hubs/{HUB}/permissions/sendToGroup/connections/c1?api-version=1",
            b"",
            None,
            404,
            "NotImplemented",
        ),
        (
            f"/api/hubs/{HUB}/groups/{'g' * 1025}/:send?api-version=1",
            b"{}",
            "application/json",
            400,
            "InvalidGroupName",
        ),
        ("/api/nothing?api-version=1", b"{}", "application/json", 404, "NotImplemented"),
    ],
)
def test_hostile_rest_requests_get_clear_errors(
    pubsub: WebPubSubThread,
    path: str,
    body: bytes,
    content_type: str | None,
    status: int,
    code: str,
) -> None:
    """Malformed bodies, bad hubs and unknown routes get a JSON 4xx; the server keeps serving."""
    method = "PUT" if "permissions" in path else "POST"
    got_status, got = _raw_request(
        pubsub, path, body=body, content_type=content_type, method=method
    )
    assert (got_status, got["error"]["code"]) == (status, code)
    assert got["error"]["message"]
    with open_client(pubsub) as ws:
        _marker(pubsub)
        assert recv_json(ws)["data"] == "marker"


def test_hostile_client_frames_keep_the_connection(pubsub: WebPubSubThread) -> None:
    """Garbage frames are refused (BadRequest ack when an ackId is readable); the client stays."""
    with open_client(pubsub, roles=["webpubsub.joinLeaveGroup"]) as ws:
        ws.send("{not json")
        ws.send("[]")
        ws.send(json.dumps({"type": "joinGroup", "ackId": 5}))
        ack = recv_json(ws)
        assert ack["ackId"] == 5 and ack["error"]["name"] == "BadRequest"
        ws.send(json.dumps({"type": "<script>alert(1)</script>", "ackId": 6}))
        assert recv_json(ws)["error"]["name"] == "BadRequest"
        _marker(pubsub)
        assert recv_json(ws)["data"] == "marker"


def test_unsupported_subprotocol_is_refused(pubsub: WebPubSubThread) -> None:
    """Asking only for a subprotocol this server lacks fails clearly instead of silently."""
    token = service_client(pubsub).get_client_access_token()
    with pytest.raises(InvalidStatus) as info:
        connect(
            token["url"],
            subprotocols=[Subprotocol("protobuf.webpubsub.azure.v1")],
            open_timeout=WAIT_S,
        )
    assert info.value.response.status_code == 400


def test_generate_token_route_signs_client_tokens(pubsub: WebPubSubThread) -> None:
    """POST :generateToken returns a client token with the requested user and roles."""
    path = f"/api/hubs/{HUB}/:generateToken?api-version=1&userId=u9&role=webpubsub.sendToGroup"
    status, body = _raw_request(pubsub, path, body=b"")
    assert status == 200
    with connect(
        f"{pubsub.client_url(HUB)}?access_token={body['token']}",
        subprotocols=[SUBPROTOCOL],
        open_timeout=WAIT_S,
    ) as ws:
        assert recv_json(ws)["userId"] == "u9"


def test_stop_and_restart_on_the_same_port(pubsub: WebPubSubThread) -> None:
    """Stopped, clients are closed with 1001 and sends fail; restarted, the same port serves."""
    port = pubsub.port
    client = service_client(pubsub)
    with open_client(pubsub) as ws:
        pubsub.stop()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=WAIT_S)
        assert ws.close_code == 1001
    with pytest.raises(ServiceRequestError):
        client.send_to_all(BATCH, connection_timeout=2, retry_total=0)
    pubsub.start()
    assert pubsub.port == port and pubsub.running
    with open_client(pubsub) as ws:
        client.send_to_all(BATCH)
        assert recv_json(ws)["data"] == BATCH


def test_hub_filter_serves_only_named_hubs() -> None:
    """With hubs= given, other hubs get 404 on REST and on the client URL."""
    with WebPubSubThread(hubs=["enviromon"]) as pubsub:
        with pytest.raises(HttpResponseError) as info:
            service_client(pubsub, hub="other").send_to_all(BATCH)
        assert info.value.status_code == 404
        service_client(pubsub, hub="EnviroMon").send_to_all(BATCH)


def test_constructor_checks_arguments() -> None:
    """Bad ports and keys are refused when the server is built."""
    with pytest.raises(ValueError, match="port"):
        WebPubSubThread(port=70000)
    with pytest.raises(ValueError, match="access_key"):
        WebPubSubThread(access_key="")
    with pytest.raises(ValueError, match="access_key"):
        WebPubSubThread(access_key="a;b")


def test_client_that_stops_reading_is_dropped(
    pubsub: WebPubSubThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that never reads is dropped once its send queue is full; others keep getting."""
    monkeypatch.setattr(hubmod, "SEND_QUEUE_BYTES", 2 * MAX_MESSAGE_BYTES)
    client = service_client(pubsub)
    url = urllib.parse.urlsplit(client.get_client_access_token()["url"])
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.settimeout(WAIT_S)
    with stalled, open_client(pubsub, max_size=None) as healthy:
        stalled.connect((url.hostname, url.port))
        stalled.sendall(
            f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
        )
        assert stalled.recv(12) == b"HTTP/1.1 101"  # then it never reads again
        assert pubsub.connection_count == 2
        chunk = b"x" * (MAX_MESSAGE_BYTES // 2)
        deadline = time.monotonic() + 20
        sent = 0
        while pubsub.connection_count == 2:
            assert time.monotonic() < deadline, "the stalled client was never dropped"
            client.send_to_all(chunk, content_type="application/octet-stream")  # type: ignore[call-overload]
            sent += 1
            frame = recv_json(healthy)
            assert base64.b64decode(frame["data"]) == chunk
        assert sent > 4  # it took more than the queue bound (2 MB) to drop it
        _marker(pubsub)
        assert recv_json(healthy)["data"] == "marker"


def test_async_server_with_the_async_sdk() -> None:
    """WebPubSubServer runs in the caller's loop and serves the SDK's aio client."""
    from azure.messaging.webpubsubservice.aio import (
        WebPubSubServiceClient as AsyncServiceClient,
    )
    from websockets.asyncio.client import connect as aconnect

    async def scenario() -> tuple[Any, Any]:
        async with WebPubSubServer() as server:
            client = AsyncServiceClient.from_connection_string(server.connection_string, hub=HUB)
            async with client:
                token = await client.get_client_access_token(groups=["g"])
                async with aconnect(token["url"], subprotocols=[SUBPROTOCOL]) as ws:
                    connected = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
                    await client.send_to_group("g", BATCH)
                    message = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
        return connected, message

    connected, message = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert connected["event"] == "connected"
    assert message["data"] == BATCH


def test_server_side_group_membership(pubsub: WebPubSubThread) -> None:
    """add_connection_to_group and remove_connection_from_all_groups change what arrives."""
    client = service_client(pubsub)
    token = client.get_client_access_token()
    with connect(token["url"], subprotocols=[SUBPROTOCOL], open_timeout=WAIT_S) as ws:
        cid = recv_json(ws)["connectionId"]
        client.add_connection_to_group("kitchen", cid)
        client.send_to_group("kitchen", "in", content_type="text/plain")
        assert recv_json(ws)["data"] == "in"
        client.remove_connection_from_all_groups(cid)
        client.send_to_group("kitchen", "out", content_type="text/plain")
        _marker(pubsub)
        assert recv_json(ws)["data"] == "marker"
        with pytest.raises(HttpResponseError) as info:
            client.add_connection_to_group("kitchen", "no-such-connection")
        assert info.value.status_code == 404


def test_unrouted_paths_get_json_errors(pubsub: WebPubSubThread) -> None:
    """Paths no route matches (even with a newline in them) get a JSON error, not plain text."""
    for path in ("/api/hubs/%0A/:send?api-version=1", "/nothing", "/client"):
        status, body = _raw_request(pubsub, path)
        assert 400 <= status < 500 and body["error"]["message"]


def test_ping_gets_pong(pubsub: WebPubSubThread) -> None:
    """A client's keep-alive ping is answered with a pong (the JS client's half-open check)."""
    with open_client(pubsub) as ws:
        ws.send(json.dumps({"type": "ping"}))
        assert recv_json(ws) == {"type": "pong"}
        service_client(pubsub).send_to_all({"after": "ping"}, content_type="application/json")
        assert recv_json(ws)["data"] == {"after": "ping"}
