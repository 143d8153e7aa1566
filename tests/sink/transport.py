"""An azure-core transport that counts requests and injects Table faults (tests and bench).

Passed as ``transport=`` to the Tables SDK, so the real SDK, its retry policy and its error
mapping all run; only the wire is tampered with. Two faults: a 503 Server Busy answered
instead of sending, and a dropped connection *after* the request reached the server (the
write landed, the response is lost — the nastiest case for exactly-once).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from azure.core.exceptions import ServiceResponseError
from azure.core.pipeline.transport import HttpRequest, RequestsTransport, RequestsTransportResponse

Match = Callable[[str, str], bool]


@dataclass
class Fault:
    """Fail requests for which ``match(method, url)`` holds, ``times`` times (-1: until healed)."""

    match: Match
    kind: str  # "503" or "drop"
    times: int = -1
    hits: int = 0


class FaultyTransport(RequestsTransport):  # type: ignore[misc]
    """RequestsTransport that counts requests and applies the current faults."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.Lock()
        self.requests = 0
        self.faults: list[Fault] = []

    def inject(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def heal(self) -> None:
        with self._lock:
            self.faults.clear()

    def send(self, request: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.requests += 1
            fault = next(
                (f for f in self.faults if f.times != 0 and f.match(request.method, request.url)),
                None,
            )
            if fault is not None:
                fault.hits += 1
                if fault.times > 0:
                    fault.times -= 1
        if fault is None:
            return super().send(request, **kwargs)
        if fault.kind == "503":
            return _busy(request)
        super().send(request, **kwargs).body()  # it reaches the server...
        raise ServiceResponseError("injected: connection reset before the response was read")


def _busy(request: HttpRequest) -> RequestsTransportResponse:
    raw = requests.Response()
    raw.status_code = 503
    raw.reason = "Server Busy"
    raw.headers["Content-Type"] = "application/json;odata=minimalmetadata"
    raw._content = (
        b'{"odata.error":{"code":"ServerBusy","message":{"lang":"en-US",'
        b'"value":"injected: the server is busy"}}}'
    )
    raw.url = request.url
    return RequestsTransportResponse(request, raw)


def is_state_write(method: str, url: str) -> bool:
    """A write of a device-state entity (create: POST to the devices table; update: PUT)."""
    return "devices" in url and method in ("PUT", "POST", "MERGE", "PATCH")


def is_batch(method: str, url: str) -> bool:
    """A transaction (history rows, dead letters)."""
    return method == "POST" and "$batch" in url


def any_request(method: str, url: str) -> bool:
    """Every request."""
    return True
