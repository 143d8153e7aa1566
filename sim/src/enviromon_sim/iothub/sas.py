"""SAS tokens as IoT Hub uses them: build, parse and verify. Pure functions.

A token is ``SharedAccessSignature sr={quote(uri)}&sig={quote(b64 hmac)}&se={expiry}``, where
the signature is HMAC-SHA256 of ``quote(uri, safe='')``, a newline and the expiry, keyed with the
base64-decoded device key (azure.iot.device.common.auth.sastoken._build_token).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import urllib.parse
from dataclasses import dataclass

from enviromon_sim.iothub.errors import AuthError

_PREFIX = "SharedAccessSignature "
MAX_EXPIRY_DIGITS = 12  # seconds since 1970: good past the year 30000


@dataclass(frozen=True, slots=True)
class SasToken:
    """A parsed token: the resource URI (decoded), the signature (base64) and the expiry."""

    resource_uri: str
    signature: str
    expiry: int
    key_name: str | None = None


def generate_key() -> str:
    """A new random 32-byte key, base64 (what IoT Hub generates for a device)."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def sign(key_b64: str, data: str) -> str:
    """Base64 HMAC-SHA256 of ``data`` with the base64-encoded ``key_b64``."""
    try:
        key = base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AuthError("key is not valid base64") from exc
    digest = hmac.new(key, data.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def string_to_sign(resource_uri: str, expiry: int) -> str:
    """What the SDK signs: the URL-encoded resource URI and the expiry, newline-separated."""
    return urllib.parse.quote(resource_uri, safe="") + "\n" + str(expiry)


def build_token(resource_uri: str, key_b64: str, expiry: int) -> str:
    """A token as the SDK builds it (for tests and tools)."""
    sig = sign(key_b64, string_to_sign(resource_uri, expiry))
    return (
        f"{_PREFIX}sr={urllib.parse.quote(resource_uri, safe='')}"
        f"&sig={urllib.parse.quote(sig, safe='')}&se={expiry}"
    )


def parse_token(token: str) -> SasToken:
    """Parse a token string; a malformed one is an AuthError."""
    if not token.startswith(_PREFIX):
        raise AuthError("not a SharedAccessSignature token")
    fields: dict[str, str] = {}
    for part in token[len(_PREFIX) :].split("&"):
        key, sep, value = part.partition("=")
        if not sep or key in fields:
            raise AuthError("malformed SAS token field")
        fields[key] = urllib.parse.unquote(value)
    expiry = fields.get("se", "")
    # Plain ASCII digits only (int() would also take "+1", " 1", "1_0" or other scripts'
    # digits), and small enough to be a time: a 4000-digit one would overflow float maths.
    if "sr" not in fields or "sig" not in fields or not (expiry.isascii() and expiry.isdigit()):
        raise AuthError("SAS token lacks sr, sig or a numeric se")
    if len(expiry) > MAX_EXPIRY_DIGITS:
        raise AuthError("SAS token expiry out of range")
    return SasToken(
        resource_uri=fields["sr"],
        signature=fields["sig"],
        expiry=int(expiry),
        key_name=fields.get("skn"),
    )


def resource_uri(hostname: str, device_id: str, module_id: str | None = None) -> str:
    """The resource a device or module token is for."""
    uri = f"{hostname}/devices/{device_id}"
    return f"{uri}/modules/{module_id}" if module_id else uri


def verify(token: SasToken, *, key_b64: str, expected_uri: str, now: float) -> None:
    """Check the token is for ``expected_uri``, signed with the key, and not expired.

    Raises:
        AuthError: naming which check failed.
    """
    if token.key_name is not None:
        raise AuthError("policy (skn) tokens are not accepted on the device endpoint")
    if token.resource_uri.lower() != expected_uri.lower():
        raise AuthError("SAS token is for another resource")
    if token.expiry <= now:
        raise AuthError("SAS token expired")
    expected = sign(key_b64, string_to_sign(token.resource_uri, token.expiry))
    if not hmac.compare_digest(expected.encode(), token.signature.encode()):
        raise AuthError("SAS signature does not match")
