"""The IoT Hub connection: where to connect (from the environment) and the SDK behind a Publisher.

Two ways in, the same code after that:

- **Under IoT Edge** (``IOTEDGE_WORKLOADURI`` is set by the runtime): the module client from
  ``IoTHubModuleClient.create_from_edge_environment()``; readings go to the output
  ``telemetry``, which the deployment routes ``INTO $upstream``.
- **Without IoT Edge** (``IOTHUB_DEVICE_CONNECTION_STRING``): a device connection string
  (``HostName=…;DeviceId=…;SharedAccessKey=…``), or a module one (``…;ModuleId=…``, sent to the
  output ``telemetry``), optionally with ``GatewayHostName=…`` (a leaf device behind an IoT Edge
  gateway). ``ENVIRO_HUB_CA_FILE`` names a PEM file to trust instead of the system's CAs (a
  gateway's or a local hub's CA).

``ENVIRO_HUB_PROXY`` (``http://host:port``, ``socks5://[user:password@]host:port``,
``socks4://…``) sends the MQTT/TLS connection through a proxy (a Pi behind a corporate proxy; the
tests reach the local hub this way). ``HTTPS_PROXY`` is not read on purpose: under IoT Edge the
module talks to edgeHub next to it, and the runtime's proxy variables are for edgeHub's upstream.

Why the asyncio client on a thread of our own: the sync client's ``connect``, ``send_message``,
``get_twin`` and ``patch_twin_reported_properties`` take no timeout and can hang (SDK issues #441,
#972). Each call here runs on one private event loop under ``asyncio.wait_for``, and the caller
waits on the result with a deadline, so every SDK call returns or raises within its bound. A
worker thread per call would leave a blocked thread behind on every hang; a cancelled coroutine
leaves nothing (the SDK's late completion of a cancelled call is swallowed by the loop's
exception handler below, at debug level). A send that timed out raises, so the caller keeps the
reading: if the SDK still delivers it later, the same ``message_id``, boot and seq arrive twice,
which the sink counts once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import unquote, urlsplit

from .errors import ConfigError, HubError, HubTimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")

OUTPUT_NAME = "telemetry"
CONNECTION_STRING_VAR = "IOTHUB_DEVICE_CONNECTION_STRING"
CA_FILE_VAR = "ENVIRO_HUB_CA_FILE"
PROXY_VAR = "ENVIRO_HUB_PROXY"
RETRY_INTERVAL_VAR = "ENVIRO_HUB_RETRY_INTERVAL"
REPORT_INTERVAL_VAR = "ENVIRO_HUB_REPORT_INTERVAL"
#: What ``create_from_edge_environment`` reads (azure/iot/device/iothub/abstract_clients.py).
EDGE_VARS = (
    "IOTEDGE_WORKLOADURI",
    "IOTEDGE_DEVICEID",
    "IOTEDGE_MODULEID",
    "IOTEDGE_IOTHUBHOSTNAME",
    "IOTEDGE_GATEWAYHOSTNAME",
    "IOTEDGE_APIVERSION",
    "IOTEDGE_MODULEGENERATIONID",
)
MISSING_HUB_HELP = (
    "no IoT Hub connection configured: run under IoT Edge (the runtime sets IOTEDGE_*), or set "
    f"{CONNECTION_STRING_VAR} to a device (or module) connection string; use --print to write "
    "messages to stdout instead"
)
_PROXY_TYPES = {"http": "HTTP", "socks4": "SOCKS4", "socks5": "SOCKS5"}
_CS_REQUIRED = ("HostName", "DeviceId", "SharedAccessKey")
_CS_KNOWN = {*_CS_REQUIRED, "ModuleId", "GatewayHostName"}
_LATE_GRACE_S = 2.0  # how much longer than the call's own deadline the caller waits


@dataclass(frozen=True, slots=True, kw_only=True)
class Proxy:
    """A proxy for the MQTT/TLS connection (the SDK's ``ProxyOptions``)."""

    kind: Literal["HTTP", "SOCKS4", "SOCKS5"]
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, text: str, *, var: str = PROXY_VAR) -> Proxy:
        """``http://host:port`` or ``socks5://[user:password@]host:port``.

        Raises:
            ConfigError: not such a URL (the message names ``var``, never the password).
        """
        try:
            url = urlsplit(text.strip())
            port = url.port
        except ValueError:
            raise ConfigError(f"{var}: not a proxy URL (http://host:port)") from None
        kind = _PROXY_TYPES.get(url.scheme.lower())
        if kind is None:
            raise ConfigError(
                f"{var}: scheme must be http, socks4 or socks5, got {url.scheme or 'none'!r}"
            )
        if not url.hostname:
            raise ConfigError(f"{var}: no host (expected {url.scheme}://host:port)")
        if port is None:
            raise ConfigError(f"{var}: no port (expected {url.scheme}://host:port)")
        if url.path not in ("", "/") or url.query or url.fragment:
            raise ConfigError(f"{var}: expected only scheme://host:port")
        if kind == "HTTP" and (url.username or url.password):
            # The SDK ignores credentials for an HTTP proxy: say so rather than drop them.
            raise ConfigError(f"{var}: the SDK supports no credentials for an HTTP proxy")
        return cls(
            kind=kind,  # type: ignore[arg-type]
            host=url.hostname,
            port=port,
            username=unquote(url.username) if url.username else None,
            password=unquote(url.password) if url.password else None,
        )

    def describe(self) -> str:
        """For logs: never the credentials."""
        return f"{self.kind.lower()}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class HubSettings:
    """Where and how to connect, from the environment (:meth:`from_env`).

    Attributes:
        mode: "edge" (IoT Edge workload API) or "connection-string".
        connection_string: the device or module connection string (mode "connection-string").
        identity: "device" or "device/module", for logs and reported properties.
        ca_pem: a CA to trust (PEM text), or None for the system's (under IoT Edge: the
            runtime's trust bundle).
        proxy: the proxy, or None.
        retry_interval: seconds between the SDK's reconnect attempts after a dropped
            connection (the SDK's own default is 10).
        report_interval: reported properties at most this often (seconds).
    """

    mode: Literal["edge", "connection-string"]
    identity: str
    connection_string: str | None = None
    ca_pem: str | None = None
    proxy: Proxy | None = None
    retry_interval: int = 5
    report_interval: float = 5.0

    def __repr__(self) -> str:
        # The connection string holds the device key: never print it.
        return (
            f"HubSettings(mode={self.mode!r}, identity={self.identity!r}, "
            f"ca={'yes' if self.ca_pem else 'no'}, proxy={self.proxy and self.proxy.describe()!r})"
        )

    @property
    def is_module(self) -> bool:
        """Whether the identity is a module (messages go to the ``telemetry`` output)."""
        return "/" in self.identity

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HubSettings | None:
        """The settings the environment gives, or None when it names no hub at all.

        Raises:
            ConfigError: a variable is set but unusable; every problem is named at once.
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name)
            return value.strip() if value and value.strip() else None

        problems: list[str] = []
        proxy: Proxy | None = None
        if (text := get(PROXY_VAR)) is not None:
            try:
                proxy = Proxy.parse(text)
            except ConfigError as exc:
                problems.append(str(exc))
        retry = 5
        if (text := get(RETRY_INTERVAL_VAR)) is not None:
            if text.isdigit() and 1 <= int(text) <= 300:
                retry = int(text)
            else:
                problems.append(
                    f"{RETRY_INTERVAL_VAR}: expected whole seconds 1..300, got {text!r}"
                )
        report = 5.0
        if (text := get(REPORT_INTERVAL_VAR)) is not None:
            try:
                report = float(text)
            except ValueError:
                report = -1.0
            if not 0.5 <= report <= 3600:
                problems.append(f"{REPORT_INTERVAL_VAR}: expected seconds 0.5..3600, got {text!r}")
        ca_pem: str | None = None
        if (ca_file := get(CA_FILE_VAR)) is not None:
            ca_pem = _read_ca(ca_file, problems)

        settings: HubSettings | None = None
        if get("IOTEDGE_WORKLOADURI") is not None:
            missing = [name for name in EDGE_VARS if get(name) is None]
            if missing:
                problems.append(
                    "IOTEDGE_WORKLOADURI is set but these are not: " + ", ".join(missing)
                )
            else:
                settings = cls(
                    mode="edge",
                    identity=f"{get('IOTEDGE_DEVICEID')}/{get('IOTEDGE_MODULEID')}",
                    ca_pem=ca_pem,
                    proxy=proxy,
                    retry_interval=retry,
                    report_interval=report,
                )
        elif (cs := get(CONNECTION_STRING_VAR)) is not None:
            parts = parse_connection_string(cs, problems)
            if parts is not None:
                identity = parts["DeviceId"]
                if "ModuleId" in parts:
                    identity += "/" + parts["ModuleId"]
                settings = cls(
                    mode="connection-string",
                    identity=identity,
                    connection_string=cs,
                    ca_pem=ca_pem,
                    proxy=proxy,
                    retry_interval=retry,
                    report_interval=report,
                )
        if problems:
            raise ConfigError("; ".join(problems))
        return settings


def _read_ca(path: str, problems: list[str]) -> str | None:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{CA_FILE_VAR}: cannot read {path!r}: {exc}")
        return None
    if "-----BEGIN CERTIFICATE-----" not in text:
        problems.append(f"{CA_FILE_VAR}: {path!r} holds no PEM certificate")
        return None
    return text


def parse_connection_string(text: str, problems: list[str]) -> dict[str, str] | None:
    """The fields of an IoT Hub connection string, or None (problems recorded, never the key)."""
    parts: dict[str, str] = {}
    for item in text.split(";"):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not value:
            problems.append(f"{CONNECTION_STRING_VAR}: {key or item[:20]!r} has no value")
            continue
        if key not in _CS_KNOWN:
            problems.append(f"{CONNECTION_STRING_VAR}: unknown field {key[:40]!r}")
            continue
        parts[key] = value
    missing = [key for key in _CS_REQUIRED if key not in parts]
    if missing:
        problems.append(
            f"{CONNECTION_STRING_VAR}: missing {', '.join(missing)} "
            "(expected HostName=…;DeviceId=…;SharedAccessKey=…)"
        )
    for key in ("DeviceId", "ModuleId"):
        found = parts.get(key)
        if found is not None and ("/" in found or len(found) > 128):
            problems.append(f"{CONNECTION_STRING_VAR}: {key} is not a valid id")
    if missing or any(p.startswith(CONNECTION_STRING_VAR) for p in problems):
        return None
    return parts


MethodHandler = Callable[[str, Any], tuple[int, Any]]


class HubClient:
    """The SDK client behind the :class:`~enviro_sensor.reading.Publisher` protocol.

    Every public method is safe from any thread and returns or raises within its timeout.
    Connect first (:meth:`connect`; retried by the caller), then :meth:`set_handlers`. After a
    dropped connection the SDK reconnects by itself every ``retry_interval`` s;
    ``on_connection_change`` hears about both directions.
    """

    def __init__(
        self,
        *,
        settings: HubSettings,
        connect_timeout: float = 30.0,
        call_timeout: float = 10.0,
        keep_alive: int = 60,
        on_connection_change: Callable[[bool], None] | None = None,
    ) -> None:
        """Prepare the client; nothing is opened before :meth:`connect`.

        Args:
            settings: where to connect.
            connect_timeout: bound of a connect, and of creating the client under IoT Edge
                (which asks the workload API for the trust bundle).
            call_timeout: bound of every other SDK call.
            keep_alive: MQTT keep-alive in seconds (how soon a dead connection is noticed).
            on_connection_change: called with True/False when the SDK connects or loses the
                connection (on an SDK thread; keep it short).

        Raises:
            ValueError: a timeout is not positive or keep_alive is out of 5..1200.
        """
        for name, value in (("connect_timeout", connect_timeout), ("call_timeout", call_timeout)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if not 5 <= keep_alive <= 1200:
            raise ValueError(f"keep_alive must be 5..1200 s, got {keep_alive}")
        self._settings = settings
        self._connect_timeout = connect_timeout
        self._call_timeout = call_timeout
        self._keep_alive = keep_alive
        self._on_change = on_connection_change
        self._client: Any = None
        self._connected = False
        self._closed = False
        self._state_lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(_quiet_late_completions)
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="hub-client", daemon=True
        )
        self._thread.start()

    @property
    def settings(self) -> HubSettings:
        """Where this client connects."""
        return self._settings

    @property
    def on_connection_change(self) -> Callable[[bool], None] | None:
        """Called with True/False when the SDK connects or loses the connection."""
        return self._on_change

    @on_connection_change.setter
    def on_connection_change(self, listener: Callable[[bool], None] | None) -> None:
        self._on_change = listener

    @property
    def connected(self) -> bool:
        """Whether the SDK holds a live connection (as it last told us)."""
        return self._connected

    # ----- calls ------------------------------------------------------------------------
    def connect(self) -> None:
        """Create the SDK client (first time) and connect.

        Raises:
            HubTimeoutError: no connection within ``connect_timeout``.
            HubError: refused (bad credentials, hub unavailable) or no route to the hub.
        """
        if self._closed:
            raise HubError("the hub client is closed")
        if self._client is None:
            self._client = self._call(
                lambda: asyncio.to_thread(self._create), self._connect_timeout, "create client"
            )
        self._call(self._client.connect, self._connect_timeout, "connect")
        self._set_connected(bool(self._client.connected))

    def set_handlers(self, *, on_desired: Callable[[Any], None], on_method: MethodHandler) -> None:
        """Subscribe to desired-property patches and direct methods (after :meth:`connect`).

        ``on_desired`` gets each patch (a dict with ``$version``); ``on_method`` gets
        ``(name, payload)`` and returns ``(status, payload)``. Both run on SDK threads.

        Raises:
            HubError, HubTimeoutError: the subscription did not go through.
        """
        client = self._require()

        def on_patch(patch: Any) -> None:
            try:
                on_desired(patch)
            except Exception:  # an SDK handler thread must never see our error
                log.exception("desired-property patch handler failed")

        def on_request(request: Any) -> None:
            self._answer(request, on_method)

        # The SDK's handler setters subscribe and wait for the SUBACK without a timeout, so
        # they run on a worker thread under our deadline.
        def install() -> None:
            client.on_twin_desired_properties_patch_received = on_patch
            client.on_method_request_received = on_request

        self._call(lambda: asyncio.to_thread(install), self._connect_timeout, "subscribe")

    def send(self, body: bytes, *, message_id: str, properties: dict[str, str]) -> None:
        """Send one message; returns once the hub acknowledged it (the Publisher protocol).

        Raises:
            HubError: not connected, or the send failed; HubTimeoutError: no acknowledgement
                within ``call_timeout``. Either way the caller keeps the message.
        """
        client = self._require()
        if not self._connected:
            # The SDK does not queue while offline (#441): fail fast, don't start a send.
            raise HubError("not connected to the hub")
        from azure.iot.device import Message

        message = Message(  # type: ignore[no-untyped-call]
            body,
            message_id=message_id,
            content_encoding="utf-8",
            content_type="application/json",
        )
        message.custom_properties.update(properties)
        if self._settings.is_module:
            self._call(
                lambda: client.send_message_to_output(message, OUTPUT_NAME),
                self._call_timeout,
                f"send {message_id}",
            )
        else:
            self._call(
                lambda: client.send_message(message), self._call_timeout, f"send {message_id}"
            )

    def get_twin(self) -> dict[str, Any]:
        """The whole twin: ``{"desired": {...}, "reported": {...}}``.

        Raises:
            HubError, HubTimeoutError: no twin within ``call_timeout``.
        """
        client = self._require()
        twin = self._call(client.get_twin, self._call_timeout, "get twin")
        if not isinstance(twin, dict) or not isinstance(twin.get("desired"), dict):
            raise HubError("get twin: the hub answered with no desired properties")
        return twin

    def patch_reported(self, patch: Mapping[str, Any]) -> None:
        """Update reported properties.

        Raises:
            HubError, HubTimeoutError: not accepted within ``call_timeout``.
        """
        client = self._require()
        if not self._connected:
            raise HubError("not connected to the hub")
        self._call(
            lambda: client.patch_twin_reported_properties(dict(patch)),
            self._call_timeout,
            "patch reported properties",
        )

    def close(self, timeout: float = 3.0) -> None:
        """Disconnect and release the SDK's threads within ``timeout`` s; safe to call twice.

        Short on purpose: it runs on SIGTERM, and a container runtime kills after ~10 s.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self._client is not None:
                self._call(self._client.shutdown, timeout, "shutdown")
        except HubError as exc:
            log.warning("hub client did not shut down cleanly: %s", exc)
        finally:
            self._connected = False
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5.0)

    # ----- internals --------------------------------------------------------------------
    def _require(self) -> Any:
        if self._closed:
            raise HubError("the hub client is closed")
        if self._client is None:
            raise HubError("not connected to the hub yet")
        return self._client

    def _call(self, start: Callable[[], Awaitable[T]], timeout: float, what: str) -> T:
        """Run ``start()`` on the private loop under ``timeout``; SDK errors become HubError."""

        async def bounded() -> T:
            return await asyncio.wait_for(start(), timeout)

        future = asyncio.run_coroutine_threadsafe(bounded(), self._loop)
        try:
            return future.result(timeout + _LATE_GRACE_S)
        except TimeoutError as exc:
            future.cancel()
            raise HubTimeoutError(f"{what}: no answer from the hub within {timeout:g} s") from exc
        except HubError:
            raise
        except Exception as exc:  # the SDK raises its own ClientError family, and OSErrors
            raise HubError(f"{what} failed: {type(exc).__name__}: {exc}") from exc

    def _create(self) -> Any:
        """Build the SDK client (runs on a worker thread: the edge path does HTTP calls)."""
        from azure.iot.device import ProxyOptions
        from azure.iot.device.aio import IoTHubDeviceClient, IoTHubModuleClient

        s = self._settings
        kwargs: dict[str, Any] = {
            "keep_alive": self._keep_alive,
            "connection_retry_interval": s.retry_interval,
            # Our supervisor owns connecting: a send while offline must fail at once, not
            # start a connect that may hang.
            "auto_connect": False,
            # We fetch the whole twin ourselves after every connect and REPLACE the config with
            # it; the SDK's synthetic "patch" after a reconnect would look like a real patch.
            "ensure_desired_properties": False,
        }
        if s.proxy is not None:
            kwargs["proxy_options"] = ProxyOptions(  # type: ignore[no-untyped-call]
                s.proxy.kind, s.proxy.host, s.proxy.port, s.proxy.username, s.proxy.password
            )
        if s.ca_pem is not None:
            kwargs["server_verification_cert"] = s.ca_pem
        client: Any
        if s.mode == "edge":
            client = IoTHubModuleClient.create_from_edge_environment(**kwargs)
        else:
            assert s.connection_string is not None
            cls = IoTHubModuleClient if s.is_module else IoTHubDeviceClient
            client = cls.create_from_connection_string(s.connection_string, **kwargs)
        client.on_connection_state_change = self._on_state_change
        return client

    def _on_state_change(self) -> None:
        client = self._client
        if client is not None:
            self._set_connected(bool(client.connected))

    def _set_connected(self, connected: bool) -> None:
        with self._state_lock:
            changed = connected != self._connected
            self._connected = connected
        if changed:
            log.info("hub %s: %s", self._settings.identity, "connected" if connected else "lost")
            if self._on_change is not None:
                try:
                    self._on_change(connected)
                except Exception:
                    log.exception("connection-change listener failed")

    def _answer(self, request: Any, handle: MethodHandler) -> None:
        from azure.iot.device import MethodResponse

        name = str(request.name)
        try:
            status, payload = handle(name, request.payload)
        except Exception as exc:  # a hostile payload must never end the module
            log.exception("direct method %s failed", name[:64])
            status, payload = 500, {"error": f"{type(exc).__name__}: {exc}"}
        response = MethodResponse.create_from_method_request(request, status, payload)
        try:
            self._call(
                lambda: self._require().send_method_response(response),
                self._call_timeout,
                f"answer method {name[:64]}",
            )
        except HubError as exc:
            log.warning("could not answer direct method %s: %s", name[:64], exc)


def _quiet_late_completions(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The SDK completing a call we already gave up on (cancelled future): expected, not news."""
    if isinstance(context.get("exception"), asyncio.InvalidStateError):
        log.debug("late SDK completion after a timeout: %s", context.get("message"))
        return
    loop.default_exception_handler(context)
