"""Errors of the local Web PubSub: one root, and specific errors that also subclass a builtin."""

from __future__ import annotations


class WebPubSubError(Exception):
    """Root of every error this package raises on purpose."""


class AuthError(WebPubSubError, PermissionError):
    """A token was refused: malformed, badly signed, for another audience, or expired.

    The message is the reason, safe to hand back to the caller (it never holds the key).
    """


class TokenExpiredError(AuthError):
    """A token's ``exp`` is in the past (or its ``nbf`` in the future)."""


class ProtocolError(WebPubSubError, ValueError):
    """A request or a client frame does not follow the Web PubSub contract."""


class MessageTooLargeError(ProtocolError):
    """A message is larger than the service's 1 MB limit."""


class UnsupportedContentTypeError(ProtocolError):
    """A REST body's Content-Type is not JSON, plain text or octet-stream."""
