"""Fixtures for the local Web PubSub (sim/src/enviromon_sim/webpubsub).

``pubsub``: a running server on a free 127.0.0.1 port, with ``.connection_string``,
``.access_key``, ``.port``, ``.endpoint``, ``stop()`` and ``start()`` (same port again), for
"Web PubSub down" tests. The helpers open real WebSocket clients with tokens made by the real
service SDK, as a browser that called ``negotiate`` would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from enviromon_sim.webpubsub.protocol import JSON_SUBPROTOCOL
from enviromon_sim.webpubsub.server import WebPubSubThread
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

HUB = "enviromon"
WAIT_S = 5.0


@pytest.fixture
def pubsub() -> Iterator[WebPubSubThread]:
    """A local Web PubSub, running; closed (with its thread) after the test."""
    with WebPubSubThread() as server:
        yield server


def service_client(pubsub: WebPubSubThread, hub: str = HUB) -> WebPubSubServiceClient:
    """The real service SDK client for ``pubsub``, as the sink builds it."""
    return WebPubSubServiceClient.from_connection_string(pubsub.connection_string, hub=hub)


def open_client(
    pubsub: WebPubSubThread,
    *,
    hub: str = HUB,
    roles: Sequence[str] = (),
    groups: Sequence[str] = (),
    user_id: str | None = None,
    subprotocol: bool = True,
    minutes_to_expire: int = 60,
    max_size: int | None = 2**20,
) -> ClientConnection:
    """A WebSocket client on the URL from the SDK's ``get_client_access_token``.

    With ``subprotocol`` the ``connected`` system event is read first, so the client is
    registered when this returns and the next frame is whatever is sent after.
    """
    token: Any = service_client(pubsub, hub).get_client_access_token(
        roles=list(roles),
        groups=list(groups),
        user_id=user_id,
        minutes_to_expire=minutes_to_expire,
    )
    ws = connect(
        token["url"],
        subprotocols=[Subprotocol(JSON_SUBPROTOCOL)] if subprotocol else None,
        open_timeout=WAIT_S,
        close_timeout=WAIT_S,
        compression=None,
        max_size=max_size,
        legacy=True,  # returned open, and still usable as a context manager
    )
    assert isinstance(ws, ClientConnection)
    if subprotocol:
        event = recv_json(ws)
        assert event["type"] == "system" and event["event"] == "connected", event
    # A plain client gets no event; the server registers it before completing the handshake.
    return ws


def recv_json(ws: ClientConnection, timeout: float = WAIT_S) -> Any:
    """The next frame, parsed as JSON (raises TimeoutError after ``timeout``)."""
    return json.loads(ws.recv(timeout=timeout))
