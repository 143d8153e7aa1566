"""HS256 JSON Web Tokens, signed and verified the way Azure Web PubSub does.

The service SDK signs with PyJWT and the AccessKey *string* as the key, which PyJWT turns into
its UTF-8 bytes (not the base64-decoded key). Verification is written out here, with nothing but
the standard library, so that the rules are visible and small: HS256 only (an ``alg`` of
``none`` or anything else is refused), a constant-time signature check, ``exp`` and ``nbf``
checked against the clock, and ``aud`` compared as a URL (see `normalize_audience`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from enviromon_sim.webpubsub.errors import AuthError, TokenExpiredError

__all__ = ["b64url_decode", "b64url_encode", "normalize_audience", "sign", "verify"]

_SCHEMES = {"ws": "http", "wss": "https"}


def b64url_encode(data: bytes) -> str:
    """Base64url without padding, as JWTs use it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; `AuthError` on anything else."""
    if not text.isascii():
        raise AuthError("token is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise AuthError("token is not base64url") from exc


def normalize_audience(url: str) -> str:
    """The form in which an audience and a request URL are compared.

    Lower case, no query string or fragment, percent-escapes decoded, no trailing slash, and
    ``ws``/``wss`` read as ``http``/``https``: the SDK puts the ``http(s)`` endpoint in a client
    token's ``aud`` while the client opens a ``ws(s)`` URL.
    """
    parts = urlsplit(url.strip())
    scheme = _SCHEMES.get(parts.scheme.lower(), parts.scheme.lower())
    path = unquote(parts.path).rstrip("/")
    return f"{scheme}://{parts.netloc}{path}".lower()


def sign(claims: Mapping[str, Any], key: str) -> str:
    """An HS256 token over ``claims`` (JSON-serialisable), signed with the key's UTF-8 bytes."""
    header = b64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url_encode(json.dumps(dict(claims), separators=(",", ":")).encode())
    signing_input = f"{header}.{body}".encode("ascii")
    mac = hmac.new(key.encode("utf-8"), signing_input, hashlib.sha256).digest()
    return f"{header}.{body}.{b64url_encode(mac)}"


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url_decode(segment))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AuthError(f"token {what} is not JSON") from exc
    if not isinstance(value, dict):
        raise AuthError(f"token {what} is not a JSON object")
    return value


def _time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuthError(f"token claim {name!r} is not a number")
    return float(value)


def verify(token: str, key: str, *, audience: str, now: float) -> dict[str, Any]:
    """Check an HS256 token and return its claims.

    Args:
        token: the compact JWT (``header.payload.signature``).
        key: the AccessKey string the token must be signed with.
        audience: the URL the token must be for; compared with `normalize_audience`.
        now: the current time, in seconds since the epoch.

    Raises:
        TokenExpiredError: ``exp`` is past or ``nbf`` is still to come.
        AuthError: anything else wrong; the message says what.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthError("token is not a JWT (expected header.payload.signature)")
    header_b64, payload_b64, signature_b64 = parts
    header = _json_object(header_b64, "header")
    if header.get("alg") != "HS256":
        raise AuthError(f"token algorithm {header.get('alg')!r} is not HS256")
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii", errors="replace")
    expected = hmac.new(key.encode("utf-8"), signing_input, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, b64url_decode(signature_b64)):
        raise AuthError("token signature is invalid (signed with another access key?)")
    claims = _json_object(payload_b64, "payload")
    exp = _time_claim(claims, "exp")
    if exp is None:
        raise AuthError("token has no 'exp' claim")
    if now >= exp:
        raise TokenExpiredError("token has expired")
    nbf = _time_claim(claims, "nbf")
    if nbf is not None and now < nbf:
        raise TokenExpiredError("token is not valid yet (nbf)")
    aud = claims.get("aud")
    audiences: list[str] = [
        a for a in (aud if isinstance(aud, list) else [aud]) if isinstance(a, str)
    ]
    if not audiences:
        raise AuthError("token has no valid 'aud' claim")
    wanted = normalize_audience(audience)
    if not any(normalize_audience(a) == wanted for a in audiences):
        raise AuthError(f"token audience does not match the request URL {wanted!r}")
    return claims
