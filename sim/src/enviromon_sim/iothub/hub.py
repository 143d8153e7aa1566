"""The local IoT Hub as one object: listeners around a `HubCore`, plus a thread runner.

``Hub`` (async ``start``/``stop``/``restart``) opens:
- the MQTT/TLS listener (port 8883 by default, as the SDK always dials 8883);
- optionally an HTTP CONNECT listener (``proxy_port``): the SDK's documented ``proxy_options``
  lets a client reach a hub on any port, which is how parallel tests avoid fixed ports;
- the admin HTTP API on 127.0.0.1 (``admin.py``);
- optionally the IoT Edge workload API on a unix socket (``workload.py``).
It writes ``hub.json`` (ports, admin URL and token, CA path) into the state dir for the CLI.

``HubThread`` runs a Hub on its own event loop in a background thread, for sync code and tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import ssl
import stat
import threading
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from enviromon_sim.exitcodes import is_port_in_use
from enviromon_sim.iothub.errors import PortInUseError
from enviromon_sim.iothub.eventlog import EventLog
from enviromon_sim.iothub.registry import Credentials, Registry, connection_string
from enviromon_sim.iothub.server import HubCore
from enviromon_sim.iothub.statefiles import private_dir, write_file
from enviromon_sim.iothub.tls import TlsFiles, ensure_dev_certs, server_context
from enviromon_sim.iothub.topics import Identity, check_id
from enviromon_sim.iothub.tunnel import Tunnel
from enviromon_sim.iothub.twins import TwinStore

logger = logging.getLogger(__name__)
T = TypeVar("T")

STATE_FILE = "hub.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class HubConfig:
    """How to run the hub. Ports of 0 mean "pick a free one"; None means "do not open".

    Attributes:
        state_dir: registry, twins, sessions, event log, certificates, hub.json.
        hostname: the IoT Hub host name in connection strings and SAS resource URIs.
        host: the address every TCP listener binds; loopback only (checked).
        mqtt_port: MQTT over TLS. The SDK always connects to 8883.
        proxy_port: HTTP CONNECT tunnel into the MQTT listener, for clients given
            ``proxy_options`` (tests on free ports).
        admin_port: the admin HTTP API.
        workload_socket: path of the IoT Edge workload API unix socket.
        workload_device_id: the edge device whose modules the workload API signs for.
    """

    state_dir: Path
    hostname: str = "localhost"
    host: str = "127.0.0.1"
    mqtt_port: int | None = 8883
    proxy_port: int | None = None
    admin_port: int | None = 0
    workload_socket: Path | None = None
    workload_device_id: str | None = None

    def __post_init__(self) -> None:
        for name in ("mqtt_port", "proxy_port", "admin_port"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 65535:
                raise ValueError(f"{name} must be 0..65535, got {value}")
        if not _is_loopback(self.host):
            raise ValueError(f"host must be a loopback address, got {self.host!r}")
        if not self.hostname or "/" in self.hostname:
            raise ValueError(f"invalid hostname {self.hostname!r}")
        if self.workload_socket is not None:
            check_id(self.workload_device_id, "workload device id")


class Hub:
    """The local IoT Hub. Create, ``await start()``, use, ``await stop()``."""

    def __init__(self, config: HubConfig) -> None:
        """Prepare the hub; nothing is opened until ``start``."""
        self.config = config
        self.state_dir = private_dir(config.state_dir)
        self.tls: TlsFiles = ensure_dev_certs(self.state_dir / "tls")
        self.registry = Registry(self.state_dir / "registry.json")
        self.admin_token = secrets.token_urlsafe(24)
        self.core: HubCore | None = None
        self.event_log: EventLog | None = None
        self.mqtt_port: int | None = None
        self.proxy_port: int | None = None
        self.admin_port: int | None = None
        self._ssl: ssl.SSLContext = server_context(self.tls)
        self._servers: list[asyncio.Server] = []
        self._runners: list[web.AppRunner] = []
        self._tunnel: Tunnel | None = None
        self.background: set[asyncio.Task[None]] = set()  # e.g. a restart the admin API began

    # ----- lifecycle -------------------------------------------------------------------
    def _open_core(self) -> None:
        """Load the event log, twins and sessions from the state dir into a new HubCore."""
        self.event_log = EventLog(self.state_dir / "events.sqlite")
        self.core = HubCore(
            state_dir=self.state_dir,
            hostname=self.config.hostname,
            registry=self.registry,
            twins=TwinStore(self.state_dir / "twins.json"),
            event_log=self.event_log,
        )
        self.core.start()

    async def start(self) -> None:
        """Open the state and every listener."""
        self._open_core()
        await self._open_mqtt(
            self.mqtt_port or self.config.mqtt_port, self.proxy_port or self.config.proxy_port
        )
        if self.config.admin_port is not None and not self._runners:
            from enviromon_sim.iothub.admin import make_admin_app

            runner = web.AppRunner(make_admin_app(self), access_log=None)
            await runner.setup()
            port = self.admin_port or self.config.admin_port
            site = web.TCPSite(runner, self.config.host, port)
            try:
                await _listen("admin API", self.config.host, port, site.start())
            except PortInUseError:
                await runner.cleanup()
                raise
            self.admin_port = _site_port(runner)
            self._runners.append(runner)
            if self.config.workload_socket is not None:
                from enviromon_sim.iothub.workload import make_workload_app

                wl = web.AppRunner(make_workload_app(self), access_log=None)
                await wl.setup()
                _remove_stale_socket(self.config.workload_socket)
                await web.UnixSite(wl, str(self.config.workload_socket)).start()
                # It signs tokens with module keys: only this user may connect (as the real
                # one is limited to the iotedge group).
                os.chmod(self.config.workload_socket, 0o600)
                self._runners.append(wl)
        self._write_state()
        logger.info(
            "hub up: mqtt %s, proxy %s, admin %s", self.mqtt_port, self.proxy_port, self.admin_url
        )

    async def _open_mqtt(self, mqtt_port: int | None, proxy_port: int | None) -> None:
        assert self.core is not None
        host = self.config.host
        if mqtt_port is not None:
            srv = await _listen(
                "MQTT",
                host,
                mqtt_port,
                asyncio.start_server(
                    self.core.serve, host, mqtt_port, ssl=self._ssl, ssl_handshake_timeout=10
                ),
            )
            self.mqtt_port = srv.sockets[0].getsockname()[1]
            self._servers.append(srv)
        if proxy_port is not None and self._tunnel is None:
            # The tunnel stays open across restarts (see tunnel.py for why).
            tunnel = Tunnel(host=host, port=proxy_port, target=lambda: self.mqtt_port)
            await _listen("HTTP CONNECT tunnel", host, proxy_port, tunnel.start())
            self._tunnel = tunnel
            self.proxy_port = self._tunnel.port

    async def _close_mqtt(self) -> None:
        for srv in self._servers:
            srv.close()
        if self.core is not None:
            await self.core.close()
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 5)
        self._servers.clear()
        if self.event_log is not None:
            self.event_log.close()
        self.core = None
        self.event_log = None

    async def stop(self) -> None:
        """Close every listener and connection, keeping all state on disk."""
        # A restart the admin API began must not reopen listeners after this stop.
        for task in list(self.background):
            task.cancel()
        if self.background:
            await asyncio.wait(self.background, timeout=10)
        await self._close_mqtt()
        if self._tunnel is not None:
            await self._tunnel.stop()
            self._tunnel = None
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / STATE_FILE).unlink()

    async def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the MQTT side, stay down, come back with state reloaded from disk.

        Every connection is dropped; sessions, twins and the event log are read back from the
        state dir, and the listeners reopen on the same ports.
        """
        await self._close_mqtt()
        await asyncio.sleep(down_seconds)
        self._open_core()
        await self._open_mqtt(
            self.mqtt_port if self.config.mqtt_port is not None else None,
            self.proxy_port if self.config.proxy_port is not None else None,
        )

    # ----- helpers ---------------------------------------------------------------------
    @property
    def admin_url(self) -> str | None:
        """Base URL of the admin API (None when it is not open)."""
        return f"http://{self.config.host}:{self.admin_port}" if self.admin_port else None

    def _write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "hostname": self.config.hostname,
            "mqtt_port": self.mqtt_port,
            "proxy_port": self.proxy_port,
            "admin_url": self.admin_url,
            "admin_token": self.admin_token,
            "ca": str(self.tls.ca_cert),
            "workload_socket": str(self.config.workload_socket or ""),
        }
        write_file(self.state_dir / STATE_FILE, json.dumps(state, indent=2))

    def connection_string(self, identity: Identity) -> str:
        """The connection string of a registered device or module."""
        return connection_string(self.config.hostname, self.registry.get(identity))

    def add(self, identity: Identity) -> Credentials:
        """Register (if needed) a device or module; return its credentials."""
        return self.registry.ensure(identity)


async def _listen(what: str, host: str, port: int, opening: Awaitable[T]) -> T:
    """Await ``opening`` (a listener being bound); a taken port becomes PortInUseError."""
    try:
        return await opening
    except OSError as exc:
        if is_port_in_use(exc):
            raise PortInUseError(what, host, port) from exc
        raise


def _is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only: the hub hands out keys, never to the network."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket left by an earlier run; refuse to touch anything that is not a socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a unix socket")
    os.unlink(path)


def _site_port(runner: web.AppRunner) -> int:
    server = runner.server
    assert server is not None
    for site in runner.sites:
        srv = getattr(site, "_server", None)
        if srv is not None and srv.sockets:
            return int(srv.sockets[0].getsockname()[1])
    raise RuntimeError("admin site has no socket")


def read_state(state_dir: str | Path) -> dict[str, Any] | None:
    """The running hub's ``hub.json`` (None when no hub has written one)."""
    path = Path(state_dir) / STATE_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text("utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return data


async def _cancel_other_tasks() -> list[str]:
    """Cancel every task on this loop but the caller; return what they were."""
    me = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not me]
    for task in others:
        task.cancel()
    if others:
        await asyncio.wait(others, timeout=5)
    return sorted(repr(t.get_coro()) for t in others)


class HubThread:
    """Run a `Hub` on its own event loop in a daemon thread (for tests and sync tools).

    Every method is safe to call from any other thread; each waits at most ``timeout`` s.
    """

    def __init__(self, config: HubConfig, *, timeout: float = 30.0) -> None:
        """Prepare; call ``start`` to run."""
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.config = config
        self.timeout = timeout
        self.loop = asyncio.new_event_loop()
        # The thread owns the tunnel, so it survives `restart` (a new Hub object).
        self.hub = Hub(replace(config, proxy_port=None))
        self._tunnel: Tunnel | None = None
        if config.proxy_port is not None:
            self._tunnel = Tunnel(
                host=config.host, port=config.proxy_port, target=lambda: self.hub.mqtt_port
            )
        self._thread = threading.Thread(target=self._run, name="local-iothub", daemon=True)
        self._stopped = False
        self.leftover_tasks: list[str] = []

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the hub's loop and wait for its result."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout or self.timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise

    def run(self, fn: Any, *args: Any) -> Any:
        """Call a plain function on the hub's loop (for HubCore methods that touch sessions)."""

        async def _call() -> Any:
            return fn(*args)

        return self.call(_call())

    def start(self) -> HubThread:
        """Start the thread and the hub."""
        self._thread.start()
        self.call(self.hub.start())
        if self._tunnel is not None:
            self.call(self._tunnel.start())
        return self

    @property
    def proxy_port(self) -> int | None:
        """The HTTP CONNECT tunnel's port (for the SDK's ``proxy_options``)."""
        return self._tunnel.port if self._tunnel is not None else None

    def stop(self) -> None:
        """Stop the hub and the thread (a second call does nothing).

        Tasks still on the loop after the hub has stopped are a leak: they are logged, kept
        in ``leftover_tasks`` for tests to check, and cancelled.
        """
        if self._stopped:
            return
        self._stopped = True
        try:
            if self._tunnel is not None:
                self.call(self._tunnel.stop())
            self.call(self.hub.stop())
            self.leftover_tasks = self.call(_cancel_other_tasks())
            if self.leftover_tasks:
                logger.warning("tasks left after the hub stopped: %s", self.leftover_tasks)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(self.timeout)
            self.loop.close()

    def restart(self, down_seconds: float = 0.0, *, forget_sessions: bool = False) -> None:
        """Stop the whole hub and start a new `Hub` object on the same ports and state dir.

        Nothing survives but what is on disk. ``forget_sessions`` deletes the persisted MQTT
        sessions in between: a broker that forgets them, which the SDK does not recover from.
        """
        old = self.hub
        self.call(old.stop())
        if forget_sessions:
            (old.state_dir / "sessions.json").unlink(missing_ok=True)
        config = replace(
            self.config,
            mqtt_port=old.mqtt_port if self.config.mqtt_port is not None else None,
            proxy_port=None,
            admin_port=old.admin_port if self.config.admin_port is not None else None,
        )
        self.call(asyncio.sleep(down_seconds), timeout=down_seconds + self.timeout)
        self.hub = Hub(config)
        self.call(self.hub.start())

    @property
    def event_log(self) -> EventLog:
        """The running hub's event log (the built-in endpoint)."""
        assert self.hub.event_log is not None
        return self.hub.event_log

    @property
    def core(self) -> HubCore:
        """The running hub's core."""
        assert self.hub.core is not None
        return self.hub.core

    def drop_connections(self) -> int:
        """Fault: abort every connection."""
        return int(self.run(self.core.drop_connections))

    def refuse_connections(self, seconds: float) -> None:
        """Fault: refuse CONNECTs for ``seconds``."""
        self.run(self.core.refuse_connections, seconds)

    def hold_pubacks(self, hold: bool) -> None:
        """Fault: hold back (True) or release (False) PUBACKs."""
        self.run(self.core.hold_pubacks, hold)

    def invoke(
        self, identity: Identity, name: str, payload: Any, timeout: float = 10.0
    ) -> tuple[int, Any]:
        """Call a direct method; (status, payload)."""
        return self.call(self.core.invoke_method(identity, name, payload, timeout), timeout + 5)

    def patch_desired(self, identity: Identity, patch: dict[str, Any]) -> dict[str, Any]:
        """Patch desired properties and push them to the client."""
        result: dict[str, Any] = self.run(self.core.patch_desired, identity, patch)
        return result

    def get_twin(self, identity: Identity) -> dict[str, Any]:
        """The service view of a twin."""
        result: dict[str, Any] = self.run(self.core.get_twin, identity)
        return result

    def online(self, identity: Identity) -> bool:
        """Whether ``identity`` has a live connection."""
        return bool(self.run(self.core.online, identity))
