"""Generated hostile input against a live local Web PubSub: clear 4xx or success, never a crash."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from enviromon_sim.webpubsub import jwt
from enviromon_sim.webpubsub.server import WebPubSubThread
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.pubsub import HUB, WAIT_S, open_client, recv_json, service_client

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/octet-stream",
        "text/html",
        "",
        "application/json\r\nX-Injected: 1",
    ]
)
HOSTILE_BODIES = st.one_of(
    st.binary(max_size=2000),
    st.text(max_size=500).map(str.encode),
    st.sampled_from(
        [
            b'{"a": NaN}',
            b'{"a": Infinity}',
            b"[" * 5000 + b"]" * 5000,
            b'{"deviceId": "<script>alert(1)</script>"}',
            b'"\\ud800"',
            b"\x00" * 100,
        ]
    ),
)


@pytest.fixture(scope="module")
def live() -> Iterator[WebPubSubThread]:
    """One server for all the generated examples of this module."""
    with WebPubSubThread() as server:
        yield server


def _post(server: WebPubSubThread, path: str, body: bytes, content_type: str) -> int:
    url = f"{server.endpoint}{path}"
    token = jwt.sign({"aud": url, "exp": int(time.time()) + 60}, server.access_key)
    headers = {"Authorization": f"Bearer {token}"}
    if content_type and "\r" not in content_type:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=WAIT_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        error = json.loads(exc.read())
        assert error["error"]["code"] and error["error"]["message"]
        return exc.code


@SETTINGS
@given(body=HOSTILE_BODIES, content_type=CONTENT_TYPES)
def test_hostile_bodies_get_202_or_a_clear_4xx(
    live: WebPubSubThread, body: bytes, content_type: str
) -> None:
    """Any body with any content type is accepted (202) or refused with a JSON 4xx."""
    status = _post(live, f"/api/hubs/{HUB}/:send?api-version=1", body, content_type)
    assert status == 202 or 400 <= status < 500


@SETTINGS
@given(segment=st.text(min_size=1, max_size=80))
def test_hostile_hub_and_group_names_get_202_or_a_clear_4xx(
    live: WebPubSubThread, segment: str
) -> None:
    """Any hub or group name in the URL gives 202 or a JSON 4xx, never a server error."""
    quoted = urllib.parse.quote(segment, safe="")
    for path in (f"/api/hubs/{quoted}/:send", f"/api/hubs/{HUB}/groups/{quoted}/:send"):
        status = _post(live, f"{path}?api-version=1", b"{}", "application/json")
        assert status == 202 or 400 <= status < 500


def test_server_still_delivers_after_hostile_rest(live: WebPubSubThread) -> None:
    """After the generated requests above, the same server still delivers messages."""
    with open_client(live) as ws:
        service_client(live).send_to_all({"still": "alive"})
        assert recv_json(ws)["data"] == {"still": "alive"}


@settings(max_examples=1, deadline=None)
@given(frames=st.lists(st.text(max_size=300) | st.binary(max_size=50).map(repr), max_size=40))
def test_hostile_client_frames_never_break_delivery(
    live: WebPubSubThread, frames: list[str]
) -> None:
    """A stream of generated frames from a privileged client never breaks the server."""
    # One example with many frames: opening clients per example would dominate the run time.
    roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    with open_client(live, roles=roles) as attacker, open_client(live) as bystander:
        for frame in frames:
            attacker.send(frame)
        service_client(live).send_to_all("marker", content_type="text/plain")
        assert recv_json(bystander)["data"] == "marker"
