"""The hub's MQTT side: connections, persistent sessions, per-identity routing, faults.

Speaks the MQTT 3.1.1 subset of ``mqtt.py`` over TLS. Routing follows IoT Hub: a connection
authenticates as one device or module (SAS token checked against the registry) and may only
publish its own telemetry, ask for its own twin, patch its own reported properties and answer
its own method calls; it may only subscribe to its own topics. Device telemetry and module
output ``telemetry`` are appended to the built-in endpoint (the event log).

Sessions are persistent (the SDK connects with clean_session=False and never re-subscribes),
and are written to ``sessions.json`` so they survive a restart of the hub.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import ssl
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from enviromon_sim.iothub import mqtt, sas
from enviromon_sim.iothub.errors import (
    AuthError,
    DeviceNotConnectedError,
    DeviceNotFoundError,
    InvalidIdError,
    InvalidPatchError,
    MethodTimeoutError,
    ProtocolError,
)
from enviromon_sim.iothub.eventlog import Event, EventLog, NewEvent
from enviromon_sim.iothub.eventwriter import EventWriter
from enviromon_sim.iothub.registry import Registry
from enviromon_sim.iothub.statefiles import write_file
from enviromon_sim.iothub.topics import (
    METHODS_FILTER,
    Identity,
    MethodResponse,
    Telemetry,
    TwinGet,
    TwinReportedPatch,
    allowed_filters,
    desired_patch_topic,
    matches,
    method_request_topic,
    parse_inbound,
    twin_response_topic,
)
from enviromon_sim.iothub.twins import TwinStore, parse_patch

logger = logging.getLogger(__name__)

ROUTED_OUTPUT = "telemetry"  # FROM /messages/modules/*/outputs/telemetry INTO $upstream
MAX_MESSAGE_BYTES = 256 * 1024  # IoT Hub's message size limit
MAX_HELD_MESSAGES = 1000  # per offline session; the oldest is dropped past this
MAX_PACKET_BYTES = MAX_MESSAGE_BYTES + 64 * 1024  # a message plus its topic and header
MAX_CONNECT_BYTES = 8 * 1024
CONNECT_TIMEOUT_S = 10.0  # TLS done, the whole CONNECT must arrive within this
MAX_KEEP_ALIVE_S = 1200


@dataclass
class Session:
    """What the hub keeps for a client id between connections."""

    client_id: str
    subscriptions: dict[str, int] = field(default_factory=dict)
    queued: deque[tuple[str, bytes]] = field(default_factory=deque)
    inflight: dict[int, tuple[str, bytes]] = field(default_factory=dict)
    next_packet_id: int = 1
    clean: bool = False
    connection: Connection | None = None

    def packet_id(self) -> int:
        """The next free packet id for a QoS 1 delivery."""
        for _ in range(0xFFFF):
            pid = self.next_packet_id
            self.next_packet_id = pid % 0xFFFF + 1
            if pid not in self.inflight:
                return pid
        raise ProtocolError("no free packet id: 65535 messages in flight")

    def granted_qos(self, topic: str) -> int | None:
        """The highest QoS of a subscription matching ``topic`` (None: not subscribed)."""
        best: int | None = None
        for topic_filter, qos in self.subscriptions.items():
            if matches(topic_filter, topic) and (best is None or qos > best):
                best = qos
        return best


class Connection:
    """One live, authenticated MQTT connection."""

    def __init__(
        self, *, identity: Identity, session: Session, writer: asyncio.StreamWriter, expiry: int
    ) -> None:
        """Bind a connection to its identity and session."""
        self.identity = identity
        self.session = session
        self.writer = writer
        self.expiry = expiry
        self.held_pubacks: list[int] = []
        self.closed = False
        self.expiry_timer: asyncio.TimerHandle | None = None

    def __str__(self) -> str:
        return str(self.identity)

    def send(self, packet: mqtt.Packet) -> None:
        """Queue a packet on the transport (no-op once closed)."""
        if not self.closed:
            self.writer.write(mqtt.encode(packet))

    def abort(self) -> None:
        """Drop the connection at once, as a network failure would (no goodbye)."""
        if not self.closed:
            self.closed = True
            self.writer.transport.abort()


class HubCore:
    """Sessions, routing, twins, methods and faults: the hub without its listeners."""

    def __init__(
        self,
        *,
        state_dir: Path,
        hostname: str,
        registry: Registry,
        twins: TwinStore,
        event_log: EventLog,
    ) -> None:
        """Serve identities from ``registry`` for IoT Hub ``hostname``."""
        self.state_dir = state_dir
        self.hostname = hostname
        self.registry = registry
        self.twins = twins
        self.event_log = event_log
        self.stats: Counter[str] = Counter()
        self.connects: Counter[str] = Counter()  # client id -> accepted CONNECTs
        self.sessions: dict[str, Session] = {}
        self._sessions_path = state_dir / "sessions.json"
        self._writer = EventWriter(log=event_log)
        self._pending_methods: dict[tuple[str, str], asyncio.Future[tuple[int, bytes]]] = {}
        self._rids = itertools.count(1)
        self._refuse_until = 0.0
        self._hold_pubacks = False
        self._handlers: set[asyncio.Task[Any]] = set()
        self.load_sessions()

    # ----- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start the background writer (call on the hub's event loop)."""
        self._writer.start()

    async def close(self) -> None:
        """Drop every connection, flush the event log writer, save sessions."""
        self.drop_connections()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)
        await self._writer.stop()
        for fut in self._pending_methods.values():
            if not fut.done():
                fut.set_exception(DeviceNotConnectedError("hub stopped"))
        self.save_sessions()

    def load_sessions(self) -> None:
        """Read persisted sessions (subscriptions and held messages)."""
        if not self._sessions_path.exists():
            return
        data = json.loads(self._sessions_path.read_text("utf-8"))
        for client_id, entry in data.items():
            self.sessions[client_id] = Session(
                client_id,
                subscriptions={k: int(v) for k, v in entry["subscriptions"].items()},
                queued=deque((t, base64.b64decode(p)) for t, p in entry["queued"]),
            )

    def save_sessions(self) -> None:
        """Persist sessions; messages in flight are saved as queued, to be sent again."""
        data = {
            s.client_id: {
                "subscriptions": s.subscriptions,
                "queued": [
                    [t, base64.b64encode(p).decode("ascii")]
                    for t, p in [*s.inflight.values(), *s.queued]
                ],
            }
            for s in self.sessions.values()
            if not s.clean
        }
        write_file(self._sessions_path, json.dumps(data))

    # ----- faults ----------------------------------------------------------------------
    def drop_connections(self) -> int:
        """Abort every live connection, as a network failure would. Returns how many."""
        conns = [s.connection for s in self.sessions.values() if s.connection is not None]
        for conn in conns:
            conn.abort()
        self.stats["dropped_by_fault"] += len(conns)
        return len(conns)

    def refuse_connections(self, seconds: float) -> None:
        """Answer every CONNECT with 'server unavailable' for ``seconds`` (0 ends it)."""
        self._refuse_until = time.monotonic() + seconds if seconds > 0 else 0.0

    def hold_pubacks(self, hold: bool) -> None:
        """Stop (True) or resume (False) acknowledging client publishes.

        Resuming sends the held PUBACKs on the connections still open.
        """
        self._hold_pubacks = hold
        if not hold:
            for session in self.sessions.values():
                conn = session.connection
                if conn is not None:
                    held, conn.held_pubacks = conn.held_pubacks, []
                    for pid in held:
                        conn.send(mqtt.PubAck(pid))

    @property
    def handler_count(self) -> int:
        """Connection handler tasks running, authenticated or not (a leak shows here)."""
        return len(self._handlers)

    def delete(self, identity: Identity) -> list[Identity]:
        """Delete a device (with its modules) or a module: registry, twin, session, connection.

        Returns the identities removed; a live connection of any of them is aborted, as IoT
        Hub disconnects a deleted device.
        """
        removed = self.registry.remove(identity)
        for gone in removed:
            self.twins.remove(gone)
            session = self.sessions.pop(gone.client_id, None)
            if session is not None and session.connection is not None:
                session.connection.abort()
        self.save_sessions()
        return removed

    def online(self, identity: Identity) -> bool:
        """Whether ``identity`` has a live connection."""
        session = self.sessions.get(identity.client_id)
        return session is not None and session.connection is not None

    # ----- connections -----------------------------------------------------------------
    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection until it ends.

        Whatever one client sends (garbage, a hostile id, a huge length, bytes dribbled one at
        a time) ends at worst its own connection; every wait here has a deadline.
        """
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        # Before authentication only a CONNECT-sized packet is accepted (a SAS token is ~200 B).
        decoder = mqtt.PacketDecoder(max_packet_size=MAX_CONNECT_BYTES)
        conn: Connection | None = None

        async def next_packet(limit: float) -> mqtt.Packet:
            # The deadline covers the whole packet, not each read: a client that dribbles
            # bytes (slow loris) is closed as surely as a silent one.
            async with asyncio.timeout(limit):
                while (packet := decoder.next_packet()) is None:
                    data = await reader.read(65536)
                    if not data:
                        raise ConnectionResetError("peer closed the connection")
                    decoder.push(data)
            return packet

        try:
            first = await next_packet(CONNECT_TIMEOUT_S)
            if not isinstance(first, mqtt.Connect):
                raise ProtocolError("first packet is not CONNECT")
            conn = self._accept(first, writer)
            if conn is None:
                await asyncio.wait_for(writer.drain(), CONNECT_TIMEOUT_S)
                return
            decoder.max_packet_size = MAX_PACKET_BYTES
            # MQTT 3.1.1: a client silent for 1.5 x its keep-alive is gone. Keep-alive 0
            # ("none") or a huge one gets the hub's own bound, so no connection idles forever.
            keep_alive = min(first.keep_alive or MAX_KEEP_ALIVE_S, MAX_KEEP_ALIVE_S)
            timeout = keep_alive * 1.5
            while not conn.closed:
                packet = await next_packet(timeout)
                if isinstance(packet, mqtt.Disconnect):
                    break
                self._dispatch(conn, packet)
                # A client that stops reading is closed too, rather than buffered for.
                if writer.transport.get_write_buffer_size() > 1 << 20:
                    await asyncio.wait_for(writer.drain(), timeout)
                if await self._writer.wait_for_room(timeout):
                    self.stats["flow_control_waits"] += 1
        except TimeoutError:
            logger.info("%s: keep-alive, CONNECT or write timeout, closing", conn or "client")
            self.stats["timeouts"] += 1
        except ProtocolError as exc:
            logger.warning("%s: %s; closing", conn or "client", exc)
            self.stats["protocol_errors"] += 1
        except (ConnectionError, ssl.SSLError, OSError, asyncio.IncompleteReadError) as exc:
            logger.debug("connection ended: %r", exc)
        except Exception:  # a bug must cost one connection, never the hub
            logger.exception("%s: unexpected error, closing", conn or "client")
            self.stats["handler_errors"] += 1
        finally:
            if conn is not None:
                self._detach(conn)
            if not writer.transport.is_closing():
                writer.close()  # flushes what is queued (a refusing CONNACK) first
            if task is not None:
                self._handlers.discard(task)

    def _authenticate(self, connect: mqtt.Connect) -> tuple[int, Identity | None, int]:
        """(CONNACK code, identity, token expiry)."""
        try:
            identity = Identity.parse(connect.client_id)
        except InvalidIdError:
            return mqtt.CONNACK_REFUSED_IDENTIFIER_REJECTED, None, 0
        # Username: {hostname}/{device}[/{module}]/?api-version=... (hostname not encoded).
        expected_user = f"{self.hostname}/{identity.client_id}/"
        if not (connect.username or "").lower().startswith(expected_user.lower()):
            return mqtt.CONNACK_REFUSED_BAD_USERNAME_PASSWORD, None, 0
        try:
            token = sas.parse_token((connect.password or b"").decode("utf-8"))
            creds = self.registry.get(identity)
            sas.verify(
                token,
                key_b64=creds.key,
                expected_uri=sas.resource_uri(
                    self.hostname, identity.device_id, identity.module_id
                ),
                now=time.time(),
            )
        except (AuthError, DeviceNotFoundError, UnicodeDecodeError) as exc:
            logger.info("refused %s: %s", identity, exc)
            # 5 (not authorized) is what the SDK maps to UnauthorizedError -> CredentialError.
            return mqtt.CONNACK_REFUSED_NOT_AUTHORIZED, None, 0
        return mqtt.CONNACK_ACCEPTED, identity, token.expiry

    def _accept(self, connect: mqtt.Connect, writer: asyncio.StreamWriter) -> Connection | None:
        if connect.protocol_level != 4:
            writer.write(mqtt.encode(mqtt.ConnAck(mqtt.CONNACK_REFUSED_PROTOCOL_VERSION)))
            return None
        if time.monotonic() < self._refuse_until:
            self.stats["refused_by_fault"] += 1
            writer.write(mqtt.encode(mqtt.ConnAck(mqtt.CONNACK_REFUSED_SERVER_UNAVAILABLE)))
            return None
        rc, identity, expiry = self._authenticate(connect)
        if rc or identity is None:
            self.stats["refused_auth"] += 1
            writer.write(mqtt.encode(mqtt.ConnAck(rc)))
            return None
        session = self.sessions.get(identity.client_id)
        if session is not None and session.connection is not None:
            logger.info("%s connected again; dropping its older connection", identity)
            session.connection.abort()
            self._detach(session.connection)
        present = session is not None and not connect.clean_session
        if session is None or connect.clean_session:
            session = Session(identity.client_id, clean=connect.clean_session)
            self.sessions[identity.client_id] = session
        conn = Connection(identity=identity, session=session, writer=writer, expiry=expiry)
        session.connection = conn
        self.connects[identity.client_id] += 1
        self.stats["connections"] += 1
        writer.write(mqtt.encode(mqtt.ConnAck(mqtt.CONNACK_ACCEPTED, present)))
        # IoT Hub closes a connection when its token expires; the SDK renews before that.
        delay = max(0.0, expiry - time.time())
        conn.expiry_timer = asyncio.get_running_loop().call_later(delay, self._expire, conn)
        logger.info("%s connected (session present: %s)", identity, present)
        for pid, (topic, payload) in sorted(session.inflight.items()):
            conn.send(mqtt.Publish(topic, payload, 1, pid, dup=True))
        while session.queued:
            topic, payload = session.queued.popleft()
            self._send(session, conn, topic, payload, 1)
        return conn

    def _expire(self, conn: Connection) -> None:
        if not conn.closed:
            logger.info("%s: SAS token expired, closing", conn.identity)
            self.stats["expired"] += 1
            conn.abort()

    def _detach(self, conn: Connection) -> None:
        conn.closed = True
        if conn.expiry_timer is not None:
            conn.expiry_timer.cancel()
        session = conn.session
        if session.connection is conn:
            session.connection = None
            if session.clean:
                self.sessions.pop(session.client_id, None)
            logger.info("%s disconnected", conn.identity)

    # ----- inbound ---------------------------------------------------------------------
    def _dispatch(self, conn: Connection, packet: mqtt.Packet) -> None:
        if isinstance(packet, mqtt.Publish):
            self._on_publish(conn, packet)
        elif isinstance(packet, mqtt.PubAck):
            conn.session.inflight.pop(packet.packet_id, None)
        elif isinstance(packet, mqtt.Subscribe):
            self._on_subscribe(conn, packet)
        elif isinstance(packet, mqtt.Unsubscribe):
            for topic_filter in packet.topics:
                conn.session.subscriptions.pop(topic_filter, None)
            self.save_sessions()
            conn.send(mqtt.UnsubAck(packet.packet_id))
        elif isinstance(packet, mqtt.PingReq):
            conn.send(mqtt.PingResp())
        else:
            raise ProtocolError(f"unexpected {type(packet).__name__} from a client")

    def _on_subscribe(self, conn: Connection, packet: mqtt.Subscribe) -> None:
        allowed = allowed_filters(conn.identity)
        codes: list[int] = []
        for topic_filter, qos in packet.topics:
            if topic_filter in allowed and qos in (0, 1, 2):
                granted = min(qos, 1)
                conn.session.subscriptions[topic_filter] = granted
                codes.append(granted)
            else:
                logger.warning("%s may not subscribe to %r", conn.identity, topic_filter)
                codes.append(mqtt.SUBACK_FAILURE)
        self.save_sessions()
        conn.send(mqtt.SubAck(packet.packet_id, tuple(codes)))

    def _ack(self, conn: Connection, packet: mqtt.Publish) -> None:
        if packet.qos != 1 or packet.packet_id is None:
            return
        if self._hold_pubacks:
            conn.held_pubacks.append(packet.packet_id)
        else:
            conn.send(mqtt.PubAck(packet.packet_id))

    def _on_publish(self, conn: Connection, packet: mqtt.Publish) -> None:
        if len(packet.payload) > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"message of {len(packet.payload)} bytes exceeds 256 KB")
        inbound = parse_inbound(packet.topic, conn.identity)
        if isinstance(inbound, Telemetry):
            self._on_telemetry(conn, packet, inbound)
            return
        if isinstance(inbound, TwinGet):
            view = self.twins.device_view(conn.identity)
            self._deliver_to(conn.session, twin_response_topic(200, inbound.rid), _json(view))
        elif isinstance(inbound, TwinReportedPatch):
            try:
                version = self.twins.patch_reported(conn.identity, parse_patch(packet.payload))
            except InvalidPatchError as exc:
                logger.warning("%s: reported patch refused: %s", conn.identity, exc)
                self.stats["twin_patch_refused"] += 1
                body = _json({"errorCode": 400, "message": str(exc)})
                self._deliver_to(conn.session, twin_response_topic(400, inbound.rid), body)
            else:
                self._deliver_to(conn.session, twin_response_topic(204, inbound.rid, version), b"")
        elif isinstance(inbound, MethodResponse):
            fut = self._pending_methods.get((conn.identity.client_id, inbound.rid))
            if fut is not None and not fut.done():
                fut.set_result((inbound.status, packet.payload))
            else:
                logger.info("%s answered unknown or late method rid %s", conn.identity, inbound.rid)
        self._ack(conn, packet)

    def _on_telemetry(self, conn: Connection, packet: mqtt.Publish, msg: Telemetry) -> None:
        identity = conn.identity
        if identity.module_id is not None and msg.output_name != ROUTED_OUTPUT:
            # Only FROM /messages/modules/*/outputs/telemetry INTO $upstream is routed.
            self.stats["messages_unrouted"] += 1
            self._ack(conn, packet)
            return
        system = {
            "iothub-connection-device-id": identity.device_id,
            "iothub-connection-auth-method": json.dumps(
                {
                    "scope": "module" if identity.module_id else "device",
                    "type": "sas",
                    "issuer": "iothub",
                    "acceptingIpFilterRule": None,
                }
            ),
            "iothub-enqueuedtime": datetime.now(UTC).isoformat(),
            **msg.system_properties,
        }
        if identity.module_id is not None:
            system["iothub-connection-module-id"] = identity.module_id

        def done(_: Event) -> None:
            self.stats["messages_routed"] += 1
            self._ack(conn, packet)

        def failed() -> None:
            self.stats["event_log_errors"] += 1
            conn.abort()

        self._writer.submit(NewEvent(system, msg.properties, packet.payload), done, failed)

    # ----- outbound --------------------------------------------------------------------
    def _send(
        self, session: Session, conn: Connection, topic: str, payload: bytes, qos: int
    ) -> None:
        if qos:
            pid = session.packet_id()
            # Sent (so encoded) before it is held: a message that cannot be encoded must not
            # sit in the session and break every later reconnect of that client.
            conn.send(mqtt.Publish(topic, payload, 1, pid))
            session.inflight[pid] = (topic, payload)
        else:
            conn.send(mqtt.Publish(topic, payload))

    def _deliver_to(self, session: Session, topic: str, payload: bytes) -> bool:
        """Send to a session if it subscribed; hold QoS 1 for an offline one.

        Returns whether the message was sent or held.
        """
        qos = session.granted_qos(topic)
        if qos is None:
            return False
        conn = session.connection
        if conn is not None and not conn.closed:
            self._send(session, conn, topic, payload, qos)
            return True
        if qos == 0:
            return False
        session.queued.append((topic, payload))
        while len(session.queued) > MAX_HELD_MESSAGES:
            session.queued.popleft()
            self.stats["held_dropped"] += 1
        self.save_sessions()
        return True

    # ----- service side ----------------------------------------------------------------
    def get_twin(self, identity: Identity) -> dict[str, Any]:
        """The service view of a twin (the identity must be registered)."""
        self.registry.get(identity)
        return self.twins.service_view(identity)

    def patch_desired(self, identity: Identity, patch: dict[str, Any]) -> dict[str, Any]:
        """Apply a desired patch, push it to the client, return the updated twin."""
        self.registry.get(identity)
        patch = dict(patch)
        patch.pop("$version", None)
        version = self.twins.patch_desired(identity, patch)
        session = self.sessions.get(identity.client_id)
        if session is not None:
            self._deliver_to(
                session, desired_patch_topic(version), _json({**patch, "$version": version})
            )
        return self.twins.service_view(identity)

    async def invoke_method(
        self,
        identity: Identity,
        name: str,
        payload: Any,
        timeout: float,  # noqa: ASYNC109
    ) -> tuple[int, Any]:
        """Call a direct method and wait for its answer: (status, payload).

        Raises:
            DeviceNotFoundError: not registered.
            DeviceNotConnectedError: not connected, or not subscribed to methods (IoT Hub 404).
            MethodTimeoutError: no answer within ``timeout`` seconds (IoT Hub 504).
        """
        self.registry.get(identity)
        if not name or "/" in name or len(name) > 128:
            raise ValueError(f"invalid method name {name!r}")
        if not 0 < timeout <= 300:
            raise ValueError("method timeout must be in (0, 300] seconds")
        session = self.sessions.get(identity.client_id)
        conn = session.connection if session is not None else None
        if session is None or conn is None or METHODS_FILTER not in session.subscriptions:
            raise DeviceNotConnectedError(f"{identity} is not connected and listening for methods")
        rid = format(next(self._rids), "x")
        fut: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        key = (identity.client_id, rid)
        self._pending_methods[key] = fut
        try:
            self._deliver_to(session, method_request_topic(name, rid), _json(payload))
            try:
                status, raw = await asyncio.wait_for(fut, timeout)
            except TimeoutError as exc:
                raise MethodTimeoutError(
                    f"{identity} did not answer {name!r} in {timeout}s"
                ) from exc
        finally:
            self._pending_methods.pop(key, None)
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", errors="replace")
        return status, body


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")
