"""The demo stack: every service and simulated Pi, started in order and stopped as one.

Order (each waits for a readiness check before the next starts): Azurite → local IoT Hub →
local Web PubSub → the sink's local runner (reads the hub's event log, serves the API) → the
dashboard's static server → the simulated Pis. A service named in the environment as a real
Azure one is skipped (``config.External``). ``stop`` stops the Pis first (they send what they
can), then the services, each process group with SIGTERM and then SIGKILL.

The CLI (``enviromon demo``), the end-to-end tests and the benchmark all drive this class.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import shutil
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enviromon_sim.demo import azurite
from enviromon_sim.demo.children import Child, group_alive, stop_all, stop_groups
from enviromon_sim.demo.config import External, Ports, check_ports, device_ids
from enviromon_sim.demo.errors import DemoError
from enviromon_sim.iothub.hub import STATE_FILE, read_state
from enviromon_sim.iothub.registry import Registry, connection_string
from enviromon_sim.iothub.statefiles import private_dir
from enviromon_sim.iothub.topics import Identity
from enviromon_sim.webpubsub.cli import load_or_create_key

_log = logging.getLogger(__name__)

HUB_HOSTNAME = "localhost"
PUBSUB_HUB = "enviromon"
#: Seconds a service may take to become ready (Azurite on a busy 2-core box needs a few).
READY_TIMEOUT_S = 60.0
#: Seconds each stop phase (Pis, then services) waits before SIGKILL.
STOP_GRACE_S = 5.0
PIDS_FILE = "pids.json"


@dataclass(frozen=True, slots=True)
class Progress:
    """One line of start-up progress: what is up, where, and how long it took."""

    name: str
    detail: str
    seconds: float


class DemoStack:
    """The whole local pipeline. ``start()``, use, ``stop()`` (or use as a context manager)."""

    def __init__(
        self,
        *,
        root: Path,
        state_dir: Path,
        ports: Ports,
        devices: int = 3,
        interval: float = 2.0,
        external: External | None = None,
        table_prefix: str = "enviromon",
        persist: bool = True,
        python: str = sys.executable,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        if not 0 <= devices <= 200:
            raise ValueError("devices must be 0..200")
        if not 0.5 <= interval <= 86_400:
            raise ValueError("interval must be 0.5..86400 s")
        self.root = root.resolve()
        self.state_dir = state_dir.resolve()
        self.ports = ports
        self.device_count = devices
        self.interval = interval
        self.external = external or External()
        self.table_prefix = table_prefix
        self.persist = persist
        self.python = python
        self._on_progress = on_progress or (lambda p: None)
        self.children: dict[str, Child] = {}
        self.tables_connection_string = self.external.tables or azurite.connection_string(
            ports.azurite
        )
        self.pubsub_connection_string: str | None = self.external.pubsub
        self.device_ids: list[str] = []
        self.started_at: float | None = None

    # ----- where things are ---------------------------------------------------------------
    @property
    def hub_state_dir(self) -> Path:
        """The local hub's state: registry, twins, event log, certificates, hub.json."""
        return self.state_dir / "hub"

    @property
    def logs_dir(self) -> Path:
        """One log file per child."""
        return self.state_dir / "logs"

    @property
    def api_base_url(self) -> str:
        """The sink's API, as the dashboard calls it."""
        if self.external.api_base_url:
            return self.external.api_base_url.rstrip("/")
        return f"http://127.0.0.1:{self.ports.api}/api"

    @property
    def dashboard_url(self) -> str:
        """The page to open."""
        return f"http://127.0.0.1:{self.ports.dashboard}/"

    @property
    def dashboard_origin(self) -> str:
        """The dashboard's origin, allowed by the API's CORS setting."""
        return f"http://127.0.0.1:{self.ports.dashboard}"

    def needed_ports(self) -> set[str]:
        """The ``Ports`` fields of the services this stack starts itself."""
        needed = {"dashboard"}
        if self.external.tables is None:
            needed.add("azurite")
        if self.external.pubsub is None:
            needed.add("pubsub")
        if not self.external.real_hub:
            needed |= {"hub_mqtt", "hub_tunnel", "hub_admin", "api"}
        return needed

    # ----- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> DemoStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start everything; return once every part is ready.

        Raises:
            DemoError: a port is busy, a tool is missing, or a service failed to start; what
                was started is stopped again first.
        """
        self.started_at = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.stop_leftovers()
        check_ports(self.ports, self.needed_ports())
        try:
            # Independent parts start together; each is then waited for, so one slow start
            # (Azurite's node process, Python imports on a busy machine) hides the others'.
            tables = self.spawn_azurite() if self.external.tables is None else None
            hub = None if self.external.real_hub else self.spawn_hub()
            pubsub = self.spawn_pubsub() if self.external.pubsub is None else None
            dashboard = self.spawn_dashboard()
            if hub is not None:
                hub.wait()
            self.start_devices()  # they read at once and connect in the background
            if tables is not None:
                tables.wait()
            if not self.external.real_hub:
                self.spawn_sink().wait()  # after Tables: it creates its tables at start
            if pubsub is not None:
                pubsub.wait()
            dashboard.wait()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> list[str]:
        """Stop the Pis, then the services; return the names that had to be SIGKILLed."""
        devices = [c for n, c in self.children.items() if n.startswith("device ")]
        services = [c for c in reversed(self.children.values()) if c not in devices]
        killed = stop_all(devices, grace=STOP_GRACE_S)
        killed += stop_all(services, grace=STOP_GRACE_S)
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / PIDS_FILE).unlink()
        return killed

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        slug = name.replace(" ", "-")
        child = Child(
            name=name,
            argv=argv,
            log_path=self.logs_dir / f"{slug}.log",
            env={**os.environ, **(env or {})},
            cwd=self.root,
        )
        child.start()
        self.children[name] = child
        self._write_pids()
        return child

    def report(self, name: str, detail: str, seconds: float) -> None:
        """One progress line."""
        self._on_progress(Progress(name, detail, seconds))

    def _write_pids(self) -> None:
        """Record our children, so a later start can stop them if this runner was killed."""
        pids = {name: {"pid": c.pid, "argv": c.argv} for name, c in self.children.items()}
        tmp = self.state_dir / (PIDS_FILE + ".tmp")
        tmp.write_text(json.dumps(pids), encoding="utf-8")
        tmp.replace(self.state_dir / PIDS_FILE)  # whole, for a reader at any moment

    def stop_leftovers(self) -> list[str]:
        """Stop the children of an earlier runner that was killed before it could.

        Only processes whose command line is exactly the one recorded are touched.
        """
        path = self.state_dir / PIDS_FILE
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        leftovers: dict[str, int] = {}
        for name, info in recorded.items():
            pid = int(info.get("pid") or 0)
            if pid <= 1 or not group_alive(pid):
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
            except OSError:
                continue
            if [a.decode(errors="replace") for a in cmdline] == info.get("argv"):
                leftovers[name] = pid
        if leftovers:
            _log.warning("stopping what an earlier demo left running: %s", ", ".join(leftovers))
            stop_groups(leftovers.values(), grace=STOP_GRACE_S)
        path.unlink(missing_ok=True)
        return list(leftovers)

    # ----- the services --------------------------------------------------------------------
    def spawn_azurite(self) -> Pending:
        """Azurite for Tables, persisted under the state dir (or in memory)."""
        main_js = azurite.table_main(self.root)
        if not main_js.exists():
            raise DemoError(f"Azurite is not installed ({main_js} is missing): run `make node`")
        if shutil.which("node") is None:
            raise DemoError("Node.js 20+ is needed for Azurite: `node` is not on PATH")
        location = None
        if self.persist:
            location = self.state_dir / "azurite"
            location.mkdir(parents=True, exist_ok=True)
        port = self.ports.azurite
        child = self._spawn("azurite", azurite.command(main_js, port=port, location=location))
        return Pending(
            self,
            child,
            lambda: azurite.answers(port),
            what="answering HTTP",
            label=("Azurite (Tables)", f"http://127.0.0.1:{port}"),
        )

    def spawn_hub(self) -> Pending:
        """The local IoT Hub, with the demo's devices registered."""
        self.device_ids = device_ids(self.device_count)
        registry = Registry(private_dir(self.hub_state_dir) / "registry.json")
        for device_id in self.device_ids:
            registry.ensure(Identity(device_id))
        # A hub.json left by a killed hub must not pass for this one's.
        (self.hub_state_dir / STATE_FILE).unlink(missing_ok=True)
        argv = [
            self.python,
            "-m",
            "enviromon_sim.cli",
            "hub",
            "--state-dir",
            str(self.hub_state_dir),
            "--hostname",
            HUB_HOSTNAME,
            "serve",
            "--port",
            str(self.ports.hub_mqtt),
            "--proxy-port",
            str(self.ports.hub_tunnel),
            "--admin-port",
            str(self.ports.hub_admin),
        ]
        child = self._spawn("hub", argv)

        def ready() -> bool:
            state = read_state(self.hub_state_dir)
            return state is not None and state.get("pid") == child.pid and self._hub_admin_answers()

        return Pending(
            self,
            child,
            ready,
            what="serving",
            label=(
                "local IoT Hub",
                f"mqtts://127.0.0.1:{self.ports.hub_mqtt} (tunnel :{self.ports.hub_tunnel})",
            ),
        )

    def hub_admin(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        """One request to the running local hub's admin API (token from hub.json)."""
        state = read_state(self.hub_state_dir)
        if not state:
            raise DemoError("the local hub is not running")
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(  # noqa: S310 - the local hub's own URL
            str(state["admin_url"]) + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {state['admin_token']}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return json.loads(resp.read() or b"null")

    def _hub_admin_answers(self) -> bool:
        try:
            self.hub_admin("GET", "/devices", timeout=2)
        except (OSError, ValueError, DemoError):
            return False
        return True

    def spawn_pubsub(self) -> Pending:
        """The local Web PubSub, with its AccessKey kept (0600) under the state dir."""
        key_file = self.state_dir / "pubsub.key"
        key = load_or_create_key(key_file)
        port = self.ports.pubsub
        self.pubsub_connection_string = (
            f"Endpoint=http://127.0.0.1;Port={port};AccessKey={key};Version=1.0;"
        )
        argv = [
            self.python,
            "-m",
            "enviromon_sim.cli",
            "pubsub",
            "serve",
            "--port",
            str(port),
            "--key-file",
            str(key_file),
            "--hub",
            PUBSUB_HUB,
        ]
        child = self._spawn("pubsub", argv)
        return Pending(
            self,
            child,
            lambda: _http_answers(port, "/client/hubs/" + PUBSUB_HUB),
            what="answering HTTP",
            label=("local Web PubSub", f"http://127.0.0.1:{port}"),
        )

    def sink_env(self) -> dict[str, str]:
        """The sink's settings, as app settings would give them on Azure."""
        env = {
            "AZURE_TABLES_CONNECTION_STRING": self.tables_connection_string,
            "ENVIROMON_CORS_ORIGINS": self.dashboard_origin,
            "ENVIROMON_TABLE_PREFIX": self.table_prefix,
            "WEBPUBSUB_HUB": PUBSUB_HUB,
        }
        if self.pubsub_connection_string:
            env["WEBPUBSUB_CONNECTION_STRING"] = self.pubsub_connection_string
        return env

    def spawn_sink(self, *, batch_size: int = 100) -> Pending:
        """The sink's local runner: the hub's event log in, Tables and Web PubSub out, the API."""
        argv = [
            self.python,
            "-m",
            "enviromon_sink.local_runner",
            "--eventlog",
            str(self.hub_state_dir / "events.sqlite"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.ports.api),
            "--batch-size",
            str(batch_size),
        ]
        child = self._spawn("sink", argv, self.sink_env())
        return Pending(
            self,
            child,
            lambda: _http_status(self.ports.api, "/api/devices") == 200,
            what="serving /api/devices",
            label=("sink (local runner + API)", self.api_base_url),
        )

    def kill_sink(self) -> None:
        """SIGKILL the sink's runner (a crash mid-batch, for fault tests)."""
        self.children["sink"].kill()

    def restart_sink(self, *, batch_size: int = 100) -> None:
        """Start the sink's runner again after ``kill_sink`` (same port, same checkpoint)."""
        del self.children["sink"]
        self.spawn_sink(batch_size=batch_size).wait()

    def spawn_dashboard(self) -> Pending:
        """The dashboard's static server, with a config.json pointing at the sink's API."""
        dist = self.root / "dashboard" / "dist"
        if not (dist / "index.html").exists():
            raise DemoError(f"the dashboard is not built ({dist} is missing): run `make dashboard`")
        argv = [
            self.python,
            "-m",
            "enviromon_sim.cli",
            "dashboard",
            "serve",
            "--api",
            self.api_base_url,
            "--hub",
            PUBSUB_HUB,
            "--dir",
            str(dist),
            "--port",
            str(self.ports.dashboard),
        ]
        child = self._spawn("dashboard", argv)
        return Pending(
            self,
            child,
            lambda: _http_status(self.ports.dashboard, "/config.json") == 200,
            what="serving config.json",
            label=("dashboard", self.dashboard_url),
        )

    def device_env(self, device_id: str, connection: str) -> dict[str, str]:
        """A simulated Pi's environment: where its hub is, and how often it reads."""
        env = {
            "IOTHUB_DEVICE_CONNECTION_STRING": connection,
            "ENVIRO_TELEMETRY_INTERVAL": f"{self.interval:g}",
            "ENVIRO_LOG_LEVEL": "INFO",
            # A simulated Pi has simulated GPIO: gpiozero's mock pins, so `identify` blinks
            # (in memory) instead of answering that there is no LED.
            "GPIOZERO_PIN_FACTORY": "mock",
        }
        if not self.external.real_hub:
            env["ENVIRO_HUB_CA_FILE"] = str(self.hub_state_dir / "tls" / "ca.pem")
            # The SDK always dials 8883; the hub's CONNECT tunnel lets it sit on any port.
            env["ENVIRO_HUB_PROXY"] = f"http://127.0.0.1:{self.ports.hub_tunnel}"
            env["ENVIRO_HUB_RETRY_INTERVAL"] = "1"
        return env

    def device_argv(self, index: int, device_id: str) -> list[str]:
        """The module's real entry point with the simulated sensor, a seed of its own."""
        return [
            self.python,
            "-m",
            "enviro_sensor.cli",
            "--sensor",
            "simulated",
            "--seed",
            str(1000 + index),
            "--device-id",
            device_id,
            "--state-dir",
            str(self.state_dir / "devices" / device_id),
        ]

    def start_devices(self) -> None:
        """The simulated Pis, each the module's real entry point with the real SDK."""
        if not self.device_count:
            return
        if self.external.real_hub:
            connections = list(self.external.device_connection_strings)[: self.device_count]
            self.device_ids = [_device_id_of(c) for c in connections]
        else:
            connections = [self.device_connection_string(d) for d in self.device_ids]
        began = time.monotonic()
        for index, (device_id, conn) in enumerate(zip(self.device_ids, connections, strict=True)):
            self.start_device(index, device_id, conn)
        self.report(
            "simulated Pis",
            f"{len(self.device_ids)} started: " + ", ".join(self.device_ids),
            time.monotonic() - began,
        )

    def start_device(self, index: int, device_id: str, connection: str) -> Child:
        """Start (or start again) one simulated Pi."""
        return self._spawn(
            f"device {device_id}",
            self.device_argv(index, device_id),
            self.device_env(device_id, connection),
        )

    def stop_device(self, device_id: str) -> None:
        """SIGTERM one simulated Pi and wait for it (it sends what it can, then exits)."""
        stop_all([self.children[f"device {device_id}"]], grace=STOP_GRACE_S * 2)

    # ----- reading the result --------------------------------------------------------------
    def devices_state(self) -> list[dict[str, Any]]:
        """``GET /api/devices`` of the sink's API."""
        with urllib.request.urlopen(  # noqa: S310 - our own API
            self.api_base_url + "/devices", timeout=10
        ) as resp:
            body = json.loads(resp.read())
        return list(body["devices"])

    def device_connection_string(self, device_id: str) -> str:
        """The local hub's connection string for one of the demo's devices."""
        registry = Registry(self.hub_state_dir / "registry.json")
        return connection_string(HUB_HOSTNAME, registry.get(Identity(device_id)))


class Pending:
    """A started part not yet known to be ready: ``wait()`` checks, then reports progress."""

    def __init__(
        self,
        stack: DemoStack,
        child: Child,
        probe: Callable[[], bool],
        *,
        what: str,
        label: tuple[str, str],
    ) -> None:
        self._stack = stack
        self._child = child
        self._probe = probe
        self._what = what
        self._label = label

    def wait(self) -> None:
        """Block until ready (raises ServiceFailedError), then print its progress line."""
        took = self._child.wait_ready(self._probe, timeout=READY_TIMEOUT_S, what=self._what)
        self._stack.report(*self._label, took)


def _device_id_of(connection: str) -> str:
    for part in connection.split(";"):
        key, _, value = part.partition("=")
        if key.strip() == "DeviceId":
            return value.strip()
    raise DemoError("a device connection string without DeviceId")


def _http_status(port: int, path: str) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except OSError:
        return None
    finally:
        conn.close()


def _http_answers(port: int, path: str) -> bool:
    return _http_status(port, path) is not None
