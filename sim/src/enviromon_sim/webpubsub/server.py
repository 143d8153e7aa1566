"""The local Web PubSub server: REST for the service SDK and client WebSockets on one port.

`WebPubSubServer` runs in the caller's event loop (``await start()`` / ``await stop()``);
`WebPubSubThread` runs one in a background thread for synchronous code and tests. Both can
stop and start again on the same port, to stand in for "Web PubSub down" and its recovery.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import unquote

from aiohttp import WSMsgType, web

from enviromon_sim.webpubsub import hub as hubmod
from enviromon_sim.webpubsub import jwt, protocol
from enviromon_sim.webpubsub.errors import (
    AuthError,
    MessageTooLargeError,
    ProtocolError,
    UnsupportedContentTypeError,
    WebPubSubError,
)
from enviromon_sim.webpubsub.hub import Connection, Hubs
from enviromon_sim.webpubsub.protocol import (
    JSON_SUBPROTOCOL,
    MAX_MESSAGE_BYTES,
    Event,
    JoinGroup,
    LeaveGroup,
    Permissions,
    SendToGroup,
)

logger = logging.getLogger(__name__)

__all__ = ["WebPubSubServer", "WebPubSubThread", "generate_access_key"]

_T = TypeVar("_T")
_STOP_GRACE_S: Final = 2.0
_CLIENT_PREFIX: Final = "/client/hubs/"
_API_PREFIX: Final = "/api/hubs/"


def generate_access_key() -> str:
    """A new random AccessKey, shaped like Azure's (base64 of 32 random bytes)."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


class _HttpError(Exception):
    """Turned into a JSON error response: ``{"error": {"code": …, "message": …}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _error_response(status: int, code: str, message: str) -> web.Response:
    # The OData error shape, which azure-core puts into HttpResponseError's message.
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error as JSON, also aiohttp's own (a path no route matches, a wrong method)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error_response(exc.status, exc.reason.replace(" ", ""), f"{exc.reason}")
    except Exception:
        logger.exception("unexpected error serving %s %s", request.method, request.path)
        return _error_response(500, "InternalServerError", "unexpected error; see the log")


def _segments(raw_path: str, prefix: str) -> list[str]:
    # Split the still-encoded path, then decode each segment, so a group named "a/b"
    # (sent as "a%2Fb") stays one segment.
    path = raw_path.split("?", 1)[0]
    rest = path[len(prefix) :].rstrip("/")
    return [unquote(s) for s in rest.split("/")] if rest else []


def _request_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}{request.raw_path.split('?', 1)[0]}"


def _claim_list(claims: dict[str, Any], name: str) -> list[str]:
    value = claims.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise AuthError(f"token claim {name!r} must be a string or a list of strings")


class WebPubSubServer:
    """A local, contract-compatible Azure Web PubSub.

    Args:
        host: address to bind; 127.0.0.1 unless you mean to share it.
        port: port to bind; 0 picks a free one, which later restarts reuse.
        access_key: the AccessKey tokens must be signed with; a new random one if None.
        hubs: if given, the only hub names served (case-insensitive); others get 404.
        clock: seconds since the epoch, for token expiry (tests may pass their own).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        access_key: str | None = None,
        hubs: Collection[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, not {port!r}")
        if access_key is not None and (not isinstance(access_key, str) or not access_key):
            raise ValueError("access_key must be a non-empty string")
        if access_key is not None and (";" in access_key or access_key != access_key.strip()):
            raise ValueError("access_key must not contain ';' or surrounding spaces")
        self._host = host
        self._port = port
        self._access_key = access_key or generate_access_key()
        self._hubs_allowed = None if hubs is None else {protocol.check_hub(h) for h in hubs}
        self._clock = clock
        self._hubs = Hubs()
        self._runner: web.AppRunner | None = None
        self._writers: set[asyncio.Task[None]] = set()

    # -- properties -------------------------------------------------------------------------

    @property
    def access_key(self) -> str:
        """The AccessKey tokens are signed with."""
        return self._access_key

    @property
    def port(self) -> int:
        """The bound port (after the first `start`, even with ``port=0``)."""
        return self._port

    @property
    def endpoint(self) -> str:
        """``http://host:port``."""
        return f"http://{self._host}:{self._port}"

    @property
    def connection_string(self) -> str:
        """The connection string the service SDK takes (``from_connection_string``)."""
        return (
            f"Endpoint=http://{self._host};Port={self._port};"
            f"AccessKey={self._access_key};Version=1.0;"
        )

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._runner is not None

    @property
    def connection_count(self) -> int:
        """How many client WebSockets are connected."""
        return len(self._hubs)

    def client_url(self, hub: str) -> str:
        """The client WebSocket URL of a hub, without a token."""
        return f"ws://{self._host}:{self._port}{_CLIENT_PREFIX}{hub}"

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the port (the same one again after a `stop`)."""
        if self._runner is not None:
            return
        app = web.Application(client_max_size=MAX_MESSAGE_BYTES, middlewares=[_json_errors])
        app.router.add_route("*", "/api/{tail:.*}", self._handle_api)
        app.router.add_route("GET", "/client/{tail:.*}", self._handle_client)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_STOP_GRACE_S)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        if self._port == 0:
            server = site._server  # the only way aiohttp exposes the bound socket
            assert isinstance(server, asyncio.Server)
            self._port = int(server.sockets[0].getsockname()[1])
        self._runner = runner
        logger.info("local Web PubSub listening on %s", self.endpoint)

    async def stop(self) -> None:
        """Close every client (1001, going away) and stop listening."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for conn in self._hubs.all():
            conn.close(hubmod.CLOSE_GOING_AWAY, "service stopping")
        if self._writers:
            await asyncio.wait(set(self._writers), timeout=_STOP_GRACE_S)
        await runner.cleanup()
        self._hubs = Hubs()
        logger.info("local Web PubSub on port %d stopped", self._port)

    async def __aenter__(self) -> WebPubSubServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- REST -------------------------------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._api(request)
        except _HttpError as exc:
            return _error_response(exc.status, exc.code, exc.message)
        except web.HTTPRequestEntityTooLarge:
            return _error_response(
                413, "RequestEntityTooLarge", f"body is over the {MAX_MESSAGE_BYTES}-byte limit"
            )

    def _authenticate_rest(self, request: web.Request) -> dict[str, Any]:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _HttpError(401, "Unauthorized", "missing 'Authorization: Bearer <token>'")
        try:
            return jwt.verify(
                token.strip(), self._access_key, audience=_request_url(request), now=self._clock()
            )
        except AuthError as exc:
            raise _HttpError(401, "Unauthorized", str(exc)) from exc

    def _hub(self, name: str) -> str:
        try:
            hub = protocol.check_hub(name)
        except ProtocolError as exc:
            raise _HttpError(400, "InvalidHubName", str(exc)) from exc
        if self._hubs_allowed is not None and hub not in self._hubs_allowed:
            raise _HttpError(404, "HubNotFound", f"hub {hub!r} is not served here")
        return hub

    async def _message(self, request: web.Request) -> protocol.Message:
        if request.content_length is not None and request.content_length > MAX_MESSAGE_BYTES:
            raise _HttpError(
                413, "RequestEntityTooLarge", f"body is over the {MAX_MESSAGE_BYTES}-byte limit"
            )
        body = await request.read()
        try:
            return protocol.message_from_rest(request.headers.get("Content-Type"), body)
        except MessageTooLargeError as exc:
            raise _HttpError(413, "RequestEntityTooLarge", str(exc)) from exc
        except UnsupportedContentTypeError as exc:
            raise _HttpError(415, "UnsupportedContentType", str(exc)) from exc
        except ProtocolError as exc:
            raise _HttpError(400, "InvalidMessage", str(exc)) from exc

    async def _api(self, request: web.Request) -> web.StreamResponse:
        self._authenticate_rest(request)
        if "api-version" not in request.query:
            raise _HttpError(
                400, "MissingApiVersion", "the api-version query parameter is required"
            )
        if "filter" in request.query:
            # Silently ignoring a filter would deliver to clients it was meant to exclude.
            raise _HttpError(400, "NotSupported", "OData 'filter' is not supported locally")
        parts = _segments(request.raw_path, _API_PREFIX)
        if not request.raw_path.startswith(_API_PREFIX) or not parts:
            raise self._not_found(request)
        hub = self._hub(parts[0])
        route = parts[1:]
        method = request.method
        excluded = request.query.getall("excluded", [])
        match route:
            case [":send"] if method == "POST":
                message = await self._message(request)
                hubmod.deliver(self._hubs.in_hub(hub), message, excluded=excluded)
                return web.Response(status=202)
            case ["groups", group, ":send"] if method == "POST":
                self._group(group)
                message = await self._message(request)
                hubmod.deliver(self._hubs.in_group(hub, group), message, excluded=excluded)
                return web.Response(status=202)
            case ["users", user, ":send"] if method == "POST":
                message = await self._message(request)
                hubmod.deliver(self._hubs.of_user(hub, user), message)
                return web.Response(status=202)
            case ["connections", cid, ":send"] if method == "POST":
                message = await self._message(request)
                conn = self._hubs.connection(hub, cid)
                hubmod.deliver([conn] if conn else [], message)
                return web.Response(status=202)
            case [":closeConnections"] if method == "POST":
                self._close(self._hubs.in_hub(hub), request, excluded)
                return web.Response(status=204)
            case ["groups", group, ":closeConnections"] if method == "POST":
                self._close(self._hubs.in_group(hub, self._group(group)), request, excluded)
                return web.Response(status=204)
            case ["users", user, ":closeConnections"] if method == "POST":
                self._close(self._hubs.of_user(hub, user), request, excluded)
                return web.Response(status=204)
            case ["connections", cid] if method == "DELETE":
                conn = self._hubs.connection(hub, cid)
                self._close([conn] if conn else [], request, [])
                return web.Response(status=204)
            case ["connections", cid] if method == "HEAD":
                return web.Response(status=200 if self._hubs.connection(hub, cid) else 404)
            case ["users", user] if method == "HEAD":
                return web.Response(status=200 if self._hubs.of_user(hub, user) else 404)
            case ["groups", group] if method == "HEAD":
                return web.Response(status=200 if self._hubs.in_group(hub, group) else 404)
            case ["groups", group, "connections", cid] if method in ("PUT", "DELETE"):
                conn = self._hubs.connection(hub, cid)
                if conn is None:
                    raise _HttpError(404, "ConnectionNotFound", f"no connection {cid!r}")
                if method == "PUT":
                    self._hubs.join(conn, self._group(group))
                    return web.Response(status=200)
                self._hubs.leave(conn, group)
                return web.Response(status=204)
            case ["connections", cid, "groups"] if method == "DELETE":
                if (conn := self._hubs.connection(hub, cid)) is not None:
                    for group in list(conn.groups):
                        self._hubs.leave(conn, group)
                return web.Response(status=204)
            case [":generateToken"] if method == "POST":
                return web.json_response({"token": self._generate_token(request, hub)})
        raise self._not_found(request)

    @staticmethod
    def _not_found(request: web.Request) -> _HttpError:
        return _HttpError(
            404,
            "NotImplemented",
            f"{request.method} {request.path} is not a route of the local Web PubSub "
            "(see docs/local-pubsub.md for what it implements)",
        )

    @staticmethod
    def _group(group: str) -> str:
        try:
            return protocol.check_group(group)
        except ProtocolError as exc:
            raise _HttpError(400, "InvalidGroupName", str(exc)) from exc

    @staticmethod
    def _close(conns: list[Connection], request: web.Request, excluded: list[str]) -> None:
        reason = request.query.get("reason", "closed by the server")[:120]
        skip = set(excluded)
        for conn in conns:
            if conn.connection_id in skip:
                continue
            if conn.subprotocol:
                conn.enqueue(protocol.disconnected_frame(reason))
            conn.close(hubmod.CLOSE_NORMAL, reason)

    def _generate_token(self, request: web.Request, hub: str) -> str:
        try:
            minutes = int(request.query.get("minutesToExpire", "60"))
        except ValueError as exc:
            raise _HttpError(400, "InvalidRequest", "minutesToExpire must be an integer") from exc
        if minutes < 1:
            raise _HttpError(400, "InvalidRequest", "minutesToExpire must be at least 1")
        now = int(self._clock())
        claims: dict[str, Any] = {
            "aud": f"{request.scheme}://{request.host}{_CLIENT_PREFIX}{hub}",
            "iat": now,
            "exp": now + 60 * minutes,
        }
        if user := request.query.get("userId"):
            claims["sub"] = user
        if roles := request.query.getall("role", []):
            claims["role"] = roles
        if groups := request.query.getall("group", []):
            claims["webpubsub.group"] = groups
        return jwt.sign(claims, self._access_key)

    # -- client WebSockets ------------------------------------------------------------------

    def _authenticate_client(self, request: web.Request) -> tuple[str, dict[str, Any]]:
        parts = _segments(request.raw_path, _CLIENT_PREFIX)
        if not request.raw_path.startswith(_CLIENT_PREFIX) or len(parts) != 1:
            raise _HttpError(404, "NotFound", "client URL must be /client/hubs/{hub}")
        hub = self._hub(parts[0])
        token = request.query.get("access_token")
        if token is None:
            scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
            token = bearer.strip() if scheme.lower() == "bearer" else None
        if not token:
            raise _HttpError(401, "Unauthorized", "missing access_token")
        try:
            claims = jwt.verify(
                token, self._access_key, audience=_request_url(request), now=self._clock()
            )
        except AuthError as exc:
            raise _HttpError(401, "Unauthorized", str(exc)) from exc
        return hub, claims

    async def _handle_client(self, request: web.Request) -> web.StreamResponse:
        try:
            hub, claims = self._authenticate_client(request)
            user = claims.get("sub")
            if user is not None and not isinstance(user, str):
                raise _HttpError(401, "Unauthorized", "token claim 'sub' must be a string")
            try:
                permissions = Permissions.from_claim(claims.get("role"))
                groups = [protocol.check_group(g) for g in _claim_list(claims, "webpubsub.group")]
            except (ProtocolError, AuthError) as exc:
                raise _HttpError(401, "Unauthorized", str(exc)) from exc
            requested = [
                p.strip()
                for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
                if p.strip()
            ]
            if requested and JSON_SUBPROTOCOL not in requested:
                raise _HttpError(
                    400,
                    "UnsupportedSubprotocol",
                    f"subprotocols {requested} not supported; only {JSON_SUBPROTOCOL}",
                )
        except _HttpError as exc:
            return _error_response(exc.status, exc.code, exc.message)

        ws = web.WebSocketResponse(
            protocols=(JSON_SUBPROTOCOL,) if requested else (),
            max_msg_size=MAX_MESSAGE_BYTES,
            compress=False,
            heartbeat=None,
        )
        if not ws.can_prepare(request).ok:
            return _error_response(400, "NotWebSocket", "expected a WebSocket upgrade")
        conn = Connection(
            hub=hub, user_id=user, permissions=permissions, subprotocol=bool(requested)
        )
        transport = request.transport
        if transport is not None:
            conn.abort = transport.abort
        if conn.subprotocol:
            conn.enqueue(protocol.connected_frame(user_id=user, connection_id=conn.connection_id))
        # Registered before the handshake completes, so that once a client's connect() has
        # returned, a message sent to it is delivered (the writer starts after the handshake).
        self._hubs.add(conn, groups)
        try:
            await ws.prepare(request)
        except BaseException:
            self._hubs.remove(conn)
            raise
        writer = asyncio.create_task(self._write(ws, conn))
        self._writers.add(writer)
        writer.add_done_callback(self._writers.discard)
        logger.debug("client %s connected to hub %s (user %r)", conn.connection_id, hub, user)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT and conn.subprotocol:
                    try:
                        self._on_frame(conn, msg.data)
                    except Exception:  # a bug here must cost one connection, not the server
                        logger.exception("error handling a frame from %s", conn.connection_id)
                        conn.close(1011, "internal error")
                elif msg.type is WSMsgType.BINARY and conn.subprotocol:
                    conn.close(1003, "json.webpubsub.azure.v1 frames must be text")
                # A plain client's messages go to upstream event handlers, which this server
                # does not have: they are dropped (see docs/local-pubsub.md).
        finally:
            self._hubs.remove(conn)
            conn.closing = True
            conn.queue.put_nowait(hubmod.Close(hubmod.CLOSE_NORMAL, ""))
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(writer), _STOP_GRACE_S)
            writer.cancel()
            logger.debug("client %s disconnected (code %s)", conn.connection_id, ws.close_code)
        return ws

    @staticmethod
    async def _write(ws: web.WebSocketResponse, conn: Connection) -> None:
        try:
            while True:
                item = await conn.queue.get()
                if isinstance(item, hubmod.Close):
                    if not ws.closed:
                        # A close reason may hold at most 123 bytes, and must stay valid UTF-8.
                        reason = item.reason.encode()[:123].decode("utf-8", "ignore").encode()
                        await ws.close(code=item.code, message=reason)
                    return
                conn.sent(item)
                if isinstance(item, str):
                    await ws.send_str(item)
                else:
                    await ws.send_bytes(item)
        except (ConnectionError, RuntimeError) as exc:
            # The peer went away mid-send; the reader side sees the close and cleans up.
            logger.debug("write to %s failed: %s", conn.connection_id, exc)

    def _on_frame(self, conn: Connection, text: str) -> None:
        try:
            request = protocol.parse_client_frame(text)
        except ProtocolError as exc:
            ack_id = protocol.ack_id_of(text)
            logger.debug("bad frame from %s: %s", conn.connection_id, exc)
            if ack_id is not None:
                conn.enqueue(protocol.ack_frame(ack_id, error=("BadRequest", str(exc))))
            return
        if isinstance(request, protocol.Ping):
            conn.enqueue(protocol.pong_frame())
            return
        ack_id = request.ack_id
        if ack_id is not None:
            if ack_id in conn.seen_ack_ids:
                conn.enqueue(
                    protocol.ack_frame(
                        ack_id, error=("Duplicate", f"ackId {ack_id} was already processed")
                    )
                )
                return
            conn.seen_ack_ids.add(ack_id)
        error = self._apply(conn, request)
        if ack_id is not None:
            conn.enqueue(protocol.ack_frame(ack_id, error=error))

    def _apply(self, conn: Connection, request: protocol.ClientRequest) -> tuple[str, str] | None:
        """Carry out a client request; the ack error (name, message), or None on success."""
        match request:
            case JoinGroup(group=group) | LeaveGroup(group=group):
                if not conn.permissions.can_join_leave(group):
                    return ("Forbidden", f"no permission to join or leave group {group!r}")
                if isinstance(request, JoinGroup):
                    self._hubs.join(conn, group)
                else:
                    self._hubs.leave(conn, group)
                return None
            case SendToGroup(group=group, message=message, no_echo=no_echo):
                if not conn.permissions.can_send_to(group):
                    return ("Forbidden", f"no permission to send to group {group!r}")
                hubmod.deliver(
                    self._hubs.in_group(conn.hub, group),
                    message,
                    excluded=[conn.connection_id] if no_echo else [],
                    group=group,
                    from_user_id=conn.user_id,
                )
                return None
            case Event():
                # No upstream event handlers here: the event is accepted and dropped.
                return None
            case protocol.Ping():  # answered in _on_frame, never applied
                return None
        raise WebPubSubError(f"unhandled request {request!r}")  # pragma: no cover


class WebPubSubThread:
    """A `WebPubSubServer` on its own event loop in a background thread, for synchronous code.

    ``with WebPubSubThread() as pubsub: ...`` starts it; `stop` and `start` take it down and
    bring it back on the same port; leaving the block (or `close`) ends the thread.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.server = WebPubSubServer(**kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def connection_string(self) -> str:
        """See `WebPubSubServer.connection_string`."""
        return self.server.connection_string

    @property
    def access_key(self) -> str:
        """See `WebPubSubServer.access_key`."""
        return self.server.access_key

    @property
    def port(self) -> int:
        """See `WebPubSubServer.port`."""
        return self.server.port

    @property
    def endpoint(self) -> str:
        """See `WebPubSubServer.endpoint`."""
        return self.server.endpoint

    @property
    def running(self) -> bool:
        """See `WebPubSubServer.running`."""
        return self.server.running

    @property
    def connection_count(self) -> int:
        """See `WebPubSubServer.connection_count`."""
        return self.server.connection_count

    def client_url(self, hub: str) -> str:
        """See `WebPubSubServer.client_url`."""
        return self.server.client_url(hub)

    def _run(self, coro: Coroutine[Any, Any, _T], timeout: float = 10.0) -> _T:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="webpubsub", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> None:
        """Start listening (again, on the same port, after `stop`)."""
        self._run(self.server.start())

    def stop(self) -> None:
        """Stop listening and close every client; the thread stays for a later `start`."""
        if self._loop is not None:
            self._run(self.server.stop())

    def close(self) -> None:
        """Stop the server and end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self.stop()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> WebPubSubThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
