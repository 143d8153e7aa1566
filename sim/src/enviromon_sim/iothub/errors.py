"""Errors of the local IoT Hub. Each specific error also subclasses the builtin it resembles."""

from __future__ import annotations


class HubError(Exception):
    """Root of every error the local hub raises."""


class ProtocolError(HubError, ValueError):
    """A malformed or unsupported MQTT packet, topic or property string."""


class AuthError(HubError, PermissionError):
    """A SAS token or identity the hub refuses (unknown device, wrong key, expired)."""


class DeviceNotFoundError(HubError, LookupError):
    """No such device or module in the registry."""


class DeviceExistsError(HubError, ValueError):
    """The device or module is already registered."""


class InvalidIdError(HubError, ValueError):
    """A device or module id that IoT Hub would not accept."""


class InvalidPatchError(HubError, ValueError):
    """A twin patch that is not a valid JSON object of allowed keys and values."""


class DeviceNotConnectedError(HubError, ConnectionError):
    """A direct method was invoked on a device or module that is not connected and subscribed."""


class MethodTimeoutError(HubError, TimeoutError):
    """A direct method got no answer within its timeout."""


class HubNotRunningError(HubError, ConnectionError):
    """The CLI found no running hub to talk to."""
