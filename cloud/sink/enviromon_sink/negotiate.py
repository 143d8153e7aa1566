"""Dashboard tokens: a Web PubSub client URL that can only receive, for at most an hour.

The token carries no ``role`` claim, so the connection can neither send to nor join a
group (``webpubsub.sendToGroup`` / ``webpubsub.joinLeaveGroup`` are not granted); it
receives what the sink broadcasts with ``send_to_all``, and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from enviromon_sink.errors import SinkError
from enviromon_sink.settings import MAX_NEGOTIATE_MINUTES, Settings


class TokenSource(Protocol):
    """The part of ``WebPubSubServiceClient`` negotiate uses."""

    def get_client_access_token(self, **kwargs: Any) -> Any:
        """A signed client URL (``{"url", "token", "baseUrl"}``)."""
        ...


@dataclass(frozen=True, slots=True)
class ClientAccess:
    """A receive-only client URL and when it stops working."""

    url: str
    expires_at: datetime

    def to_json(self) -> dict[str, str]:
        """The negotiate response body the dashboard reads."""
        return {
            "url": self.url,
            "expiresAt": self.expires_at.isoformat().replace("+00:00", "Z"),
        }


def clamp_minutes(minutes: int) -> int:
    """A token lifetime within 1..60 minutes."""
    return max(1, min(int(minutes), MAX_NEGOTIATE_MINUTES))


def client_access(client: TokenSource, *, minutes: int = MAX_NEGOTIATE_MINUTES) -> ClientAccess:
    """Ask the SDK for a client URL with no roles, expiring within ``minutes`` (≤ 60).

    Raises:
        SinkError: the SDK returned something that is not a signed client URL.
    """
    token_info = client.get_client_access_token(minutes_to_expire=clamp_minutes(minutes), roles=[])
    try:
        url = str(token_info["url"])
        token = str(token_info["token"])
        # Read, not verify: we just signed it. The expiry the dashboard sees is the token's own.
        claims = _claims(token)
        expires = datetime.fromtimestamp(int(claims["exp"]), tz=UTC)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise SinkError("Web PubSub returned an unusable client access token") from exc
    return ClientAccess(url=url, expires_at=expires)


def _claims(token: str) -> dict[str, Any]:
    """The payload of a JWT (header.payload.signature), base64url without padding."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    if not isinstance(claims, dict):
        raise ValueError("JWT payload is not an object")
    return claims


def token_source_from_settings(settings: Settings) -> TokenSource | None:
    """A Web PubSub client for signing dashboard tokens, or None when not configured."""
    if settings.webpubsub_connection_string is None:
        return None
    from azure.messaging.webpubsubservice import WebPubSubServiceClient

    client: TokenSource = WebPubSubServiceClient.from_connection_string(
        settings.webpubsub_connection_string, hub=settings.webpubsub_hub
    )
    return client
