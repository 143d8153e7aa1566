"""negotiate: a client URL that can only receive, expiring within 60 minutes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from enviromon_sink import api
from enviromon_sink.negotiate import clamp_minutes, client_access, token_source_from_settings
from enviromon_sink.settings import Settings
from websockets.sync.client import connect

from tests.support.pubsub import recv_json, service_client

SUBPROTOCOL = "json.webpubsub.azure.v1"


def claims_of(url: str, key: str) -> dict[str, Any]:
    """The verified claims of the token in a client URL."""
    token = parse_qs(urlsplit(url).query)["access_token"][0]
    aud = url.split("?", 1)[0].replace("ws://", "http://").replace("wss://", "https://")
    return jwt.decode(token, key, algorithms=["HS256"], audience=aud)


@pytest.mark.parametrize("minutes", [1, 15, 60, 61, 24 * 60, 0, -5])
def test_token_is_receive_only_and_short_lived(pubsub: Any, minutes: int) -> None:
    """No role claim; lifetime ≤ 60 min whatever is asked; expiresAt matches the token."""
    access = client_access(service_client(pubsub), minutes=minutes)
    claims = claims_of(access.url, pubsub.access_key)
    assert "role" not in claims
    assert "webpubsub.group" not in claims
    assert 0 < claims["exp"] - claims["iat"] <= 3600
    assert claims["exp"] - claims["iat"] == pytest.approx(clamp_minutes(minutes) * 60, abs=2)
    assert access.expires_at == datetime.fromtimestamp(claims["exp"], tz=UTC)
    body = access.to_json()
    assert body["url"] == access.url
    assert body["expiresAt"].endswith("Z")


def test_receive_only_token_cannot_join_or_send(pubsub: Any) -> None:
    """With the negotiated token, joinGroup and sendToGroup are refused; broadcasts arrive."""
    access = client_access(service_client(pubsub))
    with connect(access.url, subprotocols=[SUBPROTOCOL], open_timeout=5) as ws:  # type: ignore[list-item]
        assert recv_json(ws)["event"] == "connected"
        ws.send(json.dumps({"type": "joinGroup", "group": "admins", "ackId": 1}))
        join_ack = recv_json(ws)
        ws.send(
            json.dumps(
                {
                    "type": "sendToGroup",
                    "group": "admins",
                    "dataType": "text",
                    "data": "x",
                    "ackId": 2,
                }
            )
        )
        send_ack = recv_json(ws)
        service_client(pubsub).send_to_all({"type": "readings"}, content_type="application/json")
        broadcast = recv_json(ws)
    assert join_ack["ackId"] == 1 and join_ack["success"] is False
    assert join_ack["error"]["name"] == "Forbidden"
    assert send_ack["ackId"] == 2 and send_ack["success"] is False
    assert send_ack["error"]["name"] == "Forbidden"
    assert broadcast["data"] == {"type": "readings"}


def test_negotiate_response(pubsub: Any) -> None:
    """The HTTP answer is JSON {url, expiresAt}, not cacheable."""
    settings = Settings(
        tables_connection_string="UseDevelopmentStorage=true",
        webpubsub_connection_string=pubsub.connection_string,
        negotiate_minutes=10,
    )
    response = api.negotiate(
        token_source_from_settings(settings), minutes=settings.negotiate_minutes
    )
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"url", "expiresAt"}
    claims = claims_of(body["url"], pubsub.access_key)
    assert claims["exp"] - claims["iat"] == pytest.approx(600, abs=2)


def test_negotiate_without_webpubsub_is_503() -> None:
    """No Web PubSub configured: 503 with a clear message, no URL."""
    settings = Settings(tables_connection_string="UseDevelopmentStorage=true")
    response = api.negotiate(token_source_from_settings(settings), minutes=60)
    assert response.status == 503
    assert "not configured" in response.json()["error"]
