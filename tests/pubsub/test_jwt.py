"""The local Web PubSub's JWT checks, against PyJWT (what the service SDK signs with)."""

from __future__ import annotations

import time
from typing import Any

import jwt as pyjwt
import pytest
from enviromon_sim.webpubsub import jwt
from enviromon_sim.webpubsub.errors import AuthError, TokenExpiredError
from hypothesis import given
from hypothesis import strategies as st

KEY = "k3y/with+base64=chars"
AUD = "http://127.0.0.1:8080/api/hubs/enviromon/:send"
NOW = 1_800_000_000.0

# Short keys are fine for these properties; PyJWT warns about them.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

keys = st.text(min_size=1, max_size=64)
json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
extra_claims = st.dictionaries(
    # Registered claims PyJWT itself validates are left out; the tests set them on purpose.
    st.text(max_size=12).filter(
        lambda k: k not in {"aud", "exp", "nbf", "iat", "sub", "iss", "jti"}
    ),
    json_scalars | st.lists(st.text(max_size=10), max_size=3),
    max_size=5,
)


def _claims(extra: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"aud": AUD, "exp": int(NOW) + 60, **(extra or {})}
    claims.update(overrides)
    return claims


@given(key=keys, extra=extra_claims)
def test_tokens_signed_by_pyjwt_verify(key: str, extra: dict[str, Any]) -> None:
    """A token PyJWT signs with the key string (as the SDK does) verifies and keeps its claims."""
    claims = _claims(extra)
    token = pyjwt.encode(claims, key, algorithm="HS256")
    assert jwt.verify(token, key, audience=AUD, now=NOW) == claims


@given(key=keys, extra=extra_claims)
def test_tokens_signed_here_decode_with_pyjwt(key: str, extra: dict[str, Any]) -> None:
    """A token `sign` makes is one PyJWT accepts, with the same claims."""
    claims = _claims(extra)
    token = jwt.sign(claims, key)
    decoded = pyjwt.decode(
        token, key, algorithms=["HS256"], audience=AUD, options={"verify_exp": False}
    )
    assert decoded == claims


@given(key=keys, other=keys)
def test_another_key_is_refused(key: str, other: str) -> None:
    """A token signed with any other key is refused."""
    if key == other:
        return
    token = jwt.sign(_claims(), other)
    with pytest.raises(AuthError, match="signature"):
        jwt.verify(token, key, audience=AUD, now=NOW)


@given(position=st.integers(min_value=0), char=st.sampled_from("AQgw_-xyz09"))
def test_any_tampered_character_is_refused(position: int, char: str) -> None:
    """Changing any character of a token makes it fail verification."""
    token = jwt.sign(_claims(role=["webpubsub.sendToGroup"]), KEY)
    i = position % len(token)
    if token[i] == char or token[i] == ".":
        return
    tampered = token[:i] + char + token[i + 1 :]
    try:
        claims = jwt.verify(tampered, KEY, audience=AUD, now=NOW)
    except AuthError:
        return
    # Only the unused low bits of the last base64 character can change without effect.
    assert i == len(token) - 1 and claims == _claims(role=["webpubsub.sendToGroup"])


@given(garbage=st.text(max_size=200))
def test_garbage_tokens_raise_auth_error_only(garbage: str) -> None:
    """Any string that is not a valid token raises AuthError, never anything else."""
    with pytest.raises(AuthError):
        jwt.verify(garbage, KEY, audience=AUD, now=NOW)


@given(parts=st.lists(st.binary(max_size=40), min_size=3, max_size=3))
def test_three_part_garbage_raises_auth_error_only(parts: list[bytes]) -> None:
    """Well-formed base64url segments holding garbage raise AuthError, never anything else."""
    token = ".".join(jwt.b64url_encode(p) for p in parts)
    with pytest.raises(AuthError):
        jwt.verify(token, KEY, audience=AUD, now=NOW)


def test_expired_token_is_refused() -> None:
    """A token whose exp has passed raises TokenExpiredError."""
    token = jwt.sign(_claims(exp=int(NOW) - 1), KEY)
    with pytest.raises(TokenExpiredError):
        jwt.verify(token, KEY, audience=AUD, now=NOW)


def test_token_not_yet_valid_is_refused() -> None:
    """A token whose nbf is in the future raises TokenExpiredError."""
    token = jwt.sign(_claims(nbf=int(NOW) + 30), KEY)
    with pytest.raises(TokenExpiredError, match="nbf"):
        jwt.verify(token, KEY, audience=AUD, now=NOW)


def test_token_without_exp_is_refused() -> None:
    """A token with no exp claim is refused: every service token expires."""
    token = jwt.sign({"aud": AUD}, KEY)
    with pytest.raises(AuthError, match="exp"):
        jwt.verify(token, KEY, audience=AUD, now=NOW)


@pytest.mark.parametrize("exp", ["soon", None, True, float("inf")])
def test_non_numeric_exp_is_refused(exp: Any) -> None:
    """An exp that is not a finite number is refused."""
    claims = {"aud": AUD, "exp": exp}
    token = jwt.sign(claims, KEY) if exp != float("inf") else pyjwt.encode(claims, KEY)
    with pytest.raises(AuthError):
        jwt.verify(token, KEY, audience=AUD, now=NOW)


def test_alg_none_is_refused() -> None:
    """An unsigned token (alg none) is refused even with a valid payload."""
    token = pyjwt.encode(_claims(), "", algorithm="none")
    with pytest.raises(AuthError, match="HS256"):
        jwt.verify(token, KEY, audience=AUD, now=NOW)


@pytest.mark.parametrize(
    "aud",
    [
        AUD + "?api-version=2024-12-01",
        AUD.upper(),
        "HTTP://127.0.0.1:8080/API/hubs/Enviromon/:send?x=1",
        [AUD + "/", "http://elsewhere/"],
    ],
)
def test_audience_matches_ignoring_case_and_query(aud: Any) -> None:
    """aud matches the request URL case-insensitively, without the query string."""
    token = jwt.sign(_claims(aud=aud), KEY)
    assert jwt.verify(token, KEY, audience=AUD + "?api-version=1", now=NOW)["aud"] == aud


@pytest.mark.parametrize(
    "aud",
    [
        "http://127.0.0.1:8080/api/hubs/other/:send",
        "http://127.0.0.1:9999/api/hubs/enviromon/:send",
        "http://127.0.0.1:8080/api/hubs/enviromon/groups/g/:send",
        "",
        42,
    ],
)
def test_other_audience_is_refused(aud: Any) -> None:
    """A token for another URL (hub, port, route) is refused."""
    token = jwt.sign(_claims(aud=aud), KEY)
    with pytest.raises(AuthError, match="aud"):
        jwt.verify(token, KEY, audience=AUD, now=NOW)


def test_client_audience_uses_http_for_ws_urls() -> None:
    """A client token's aud (http endpoint, as the SDK writes it) matches the ws:// URL."""
    token = jwt.sign(_claims(aud="http://127.0.0.1:8080/client/hubs/enviromon"), KEY)
    assert jwt.verify(token, KEY, audience="ws://127.0.0.1:8080/client/hubs/enviromon", now=NOW)


def test_real_clock_round_trip() -> None:
    """A fresh token verifies against the real clock (the server's default)."""
    token = pyjwt.encode({"aud": AUD, "exp": int(time.time()) + 60}, KEY, algorithm="HS256")
    assert jwt.verify(token, KEY, audience=AUD, now=time.time())["aud"] == AUD
