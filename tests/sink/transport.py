"""An azure-core transport that counts requests and injects Table faults (tests and bench).

Passed as ``transport=`` to the Tables SDK, so the real SDK, its retry policy and its error
mapping all run; only the wire is tampered with. Three faults: a 503 Server Busy answered
instead of sending; a dropped connection *after* the request reached the server (the
write landed, the response is lost — the nastiest case for exactly-once); and a transaction
answered, without sending, the way the service answers a failed changeset (202, one part: 400).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
import urllib3
from azure.core.exceptions import ServiceResponseError
from azure.core.pipeline.transport import HttpRequest, RequestsTransport, RequestsTransportResponse
from azure.core.rest import HttpRequest as RestHttpRequest
from azure.core.rest._requests_basic import RestRequestsTransportResponse

Match = Callable[[str, str], bool]


@dataclass
class Fault:
    """Fail requests for which ``match(method, url)`` holds, ``times`` times (-1: until healed)."""

    match: Match
    kind: str  # "503", "drop" or "changeset_400"
    times: int = -1
    hits: int = 0


class FaultyTransport(RequestsTransport):  # type: ignore[misc]
    """RequestsTransport that counts requests and applies the current faults."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.Lock()
        self.requests = 0
        # (method, url, headers) of every request, in order.
        self.sent: list[tuple[str, str, dict[str, str]]] = []
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
            self.sent.append((request.method, request.url, dict(request.headers)))
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
        if fault.kind == "changeset_400":
            return _failed_changeset(request)
        super().send(request, **kwargs).body()  # it reaches the server...
        raise ServiceResponseError("injected: connection reset before the response was read")


def _answer(request: Any, status: int, reason: str, content_type: str, body: bytes) -> Any:
    """A canned response, of the type RequestsTransport itself gives for ``request``.

    A request built with ``azure.core.rest`` (``send_request``) gets the rest response type,
    a pipeline request the legacy one, as RequestsTransport.send does; the body is a stream,
    as on the wire, so streamed and whole reads both work.
    """
    raw = requests.Response()
    raw.status_code = status
    raw.reason = reason
    raw.headers["Content-Type"] = content_type
    raw.raw = urllib3.HTTPResponse(
        body=io.BytesIO(body), status=status, preload_content=False, decode_content=False
    )
    raw.url = request.url
    if isinstance(request, RestHttpRequest):
        return RestRequestsTransportResponse(request=request, internal_response=raw)  # type: ignore[no-untyped-call]
    return RequestsTransportResponse(request, raw)


def _busy(request: HttpRequest) -> Any:
    return _answer(
        request,
        503,
        "Server Busy",
        "application/json;odata=minimalmetadata",
        b'{"odata.error":{"code":"ServerBusy","message":{"lang":"en-US",'
        b'"value":"injected: the server is busy"}}}',
    )


# A failed changeset as the Table service documents it ("Performing entity group transactions"):
# the batch is accepted (202) and the changeset holds only the failed operation's response.
FAILED_CHANGESET = (
    b"--batchresponse_7f5b\r\n"
    b"Content-Type: multipart/mixed; boundary=changesetresponse_21a9\r\n\r\n"
    b"--changesetresponse_21a9\r\n"
    b"Content-Type: application/http\r\n"
    b"Content-Transfer-Encoding: binary\r\n\r\n"
    b"HTTP/1.1 400 Bad Request\r\n"
    b"Content-ID: 1\r\n"
    b"X-Content-Type-Options: nosniff\r\n"
    b"Cache-Control: no-cache\r\n"
    b"DataServiceVersion: 3.0;\r\n"
    b"Content-Type: application/json;odata=minimalmetadata;streaming=true;charset=utf-8\r\n\r\n"
    b'{"odata.error":{"code":"InvalidInput","message":{"lang":"en-US",'
    b'"value":"1:One of the request inputs is not valid.\\nRequestId:0\\nTime:0"}}}\r\n'
    b"--changesetresponse_21a9--\r\n"
    b"--batchresponse_7f5b--\r\n"
)


def _failed_changeset(request: HttpRequest) -> Any:
    return _answer(
        request, 202, "Accepted", "multipart/mixed; boundary=batchresponse_7f5b", FAILED_CHANGESET
    )


def is_state_write(method: str, url: str) -> bool:
    """A commit of streams' state (always a transaction, with the history rows)."""
    return is_batch(method, url)


def is_batch(method: str, url: str) -> bool:
    """A transaction (streams' state and history rows, dead letters, pruning)."""
    return method == "POST" and "$batch" in url


def any_request(method: str, url: str) -> bool:
    """Every request."""
    return True


def nth(match: Match, n: int) -> Match:
    """``match``, but only from its ``n``-th hit on (1 = the first)."""
    seen = [0]
    lock = threading.Lock()

    def nth_match(method: str, url: str) -> bool:
        if not match(method, url):
            return False
        with lock:
            seen[0] += 1
            return seen[0] >= n

    return nth_match
