"""Errors of the local IoT Hub. Each specific error also subclasses the builtin it resembles."""

from __future__ import annotations

import errno


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


class AdminApiError(HubError):
    """The admin API answered with an error status (kept in ``status``)."""

    def __init__(self, status: int, message: str) -> None:
        """``status`` is the HTTP status; ``message`` says what the hub answered."""
        super().__init__(message)
        self.status = status


class PortInUseError(HubError, OSError):
    """A listener's port is taken by another process (``EADDRINUSE``)."""

    def __init__(self, what: str, host: str, port: int) -> None:
        """``what`` names the listener (``MQTT``, ``admin API``...)."""
        OSError.__init__(
            self, errno.EADDRINUSE, f"cannot listen on {host}:{port} ({what}): address in use"
        )
        self.what = what
        self.host = host
        self.port = port

    def __str__(self) -> str:
        return str(self.strerror)
