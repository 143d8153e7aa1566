"""``enviromon hub ...``: run the local IoT Hub and manage it, shaped like ``az iot hub``.

- ``enviromon hub serve [--port 8883] [--proxy-port N] [--admin-port N] [--state-dir DIR]``
- ``enviromon hub device add pi-1 [--module enviro_sensor]``
- ``enviromon hub connection-string pi-1 [--module enviro_sensor]``
- ``enviromon hub twin show pi-1[/module]``
- ``enviromon hub twin set pi-1[/module] '<desired patch json>'``
- ``enviromon hub invoke pi-1/enviro_sensor identify '{"seconds": 5}' [--timeout 30]``
- ``enviromon hub fault drop|refuse SECONDS|hold-pubacks on/off|restart [SECONDS]``

Registry commands talk to a running hub through its admin API (found via ``hub.json`` in the
state dir) and fall back to the state dir's registry when no hub is running. Twin, invoke and
fault commands need a running hub.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from enviromon_sim.exitcodes import EXIT_PORT_IN_USE
from enviromon_sim.iothub.adminclient import AdminClient, admin_path
from enviromon_sim.iothub.errors import (
    DeviceExistsError,
    HubError,
    HubNotRunningError,
    PortInUseError,
)
from enviromon_sim.iothub.hub import Hub, HubConfig
from enviromon_sim.iothub.registry import Registry, connection_string
from enviromon_sim.iothub.topics import Identity

DEFAULT_STATE_DIR = ".enviromon/hub"
logger = logging.getLogger(__name__)


def _identity(args: argparse.Namespace) -> Identity:
    identity = Identity.parse(args.id)
    module = getattr(args, "module", None)
    if module:
        if identity.module_id:
            raise HubError("give the module either as pi-1/module or with --module, not both")
        identity = Identity(identity.device_id, module)
    return identity


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the hub until interrupted."""
    workload = Path(args.workload_socket) if args.workload_socket else None
    config = HubConfig(
        state_dir=Path(args.state_dir),
        hostname=args.hostname,
        mqtt_port=args.port,
        proxy_port=args.proxy_port,
        admin_port=args.admin_port,
        workload_socket=workload,
        workload_device_id=args.workload_device,
    )

    async def run() -> None:
        hub = Hub(config)
        try:
            await hub.start()
        except BaseException:
            await hub.stop()  # close whatever listener opened before the one that failed
            raise
        print(f"local IoT Hub '{config.hostname}': MQTT/TLS on {config.host}:{hub.mqtt_port}")
        if hub.proxy_port:
            print(f"HTTP CONNECT tunnel: {config.host}:{hub.proxy_port}")
        print(f"CA certificate (server_verification_cert): {hub.tls.ca_cert.resolve()}")
        print(f"admin API: {hub.admin_url}  (token in {(hub.state_dir / 'hub.json').resolve()})")
        if workload:
            print(f"workload API: unix://{workload.resolve()}")
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await hub.stop()

    try:
        asyncio.run(run())
    except PortInUseError as exc:
        print(
            f"error: {exc}; stop what uses it, or choose another port (0 = any free)",
            file=sys.stderr,
        )
        return EXIT_PORT_IN_USE
    except OSError as exc:  # e.g. a port below 1024 without the right to bind it
        print(f"error: cannot start the hub: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _running_hub(state_dir: Path) -> AdminClient | None:
    """The running hub's admin API, or None: registry commands then use the file directly."""
    try:
        return AdminClient(state_dir)
    except HubNotRunningError:
        return None


def cmd_device_add(args: argparse.Namespace) -> int:
    """Register a device (and optionally a module) and print its connection string."""
    identity = _identity(args)
    state_dir = Path(args.state_dir)
    client = _running_hub(state_dir)
    if client is None:
        registry = Registry(state_dir / "registry.json")
        if identity.module_id is None:
            creds = registry.add_device(identity.device_id)
        else:
            with contextlib.suppress(DeviceExistsError):
                registry.add_device(identity.device_id)
            creds = registry.add_module(identity.device_id, identity.module_id)
        print(connection_string(args.hostname, creds))
        return 0
    known = set(client.request("GET", "/devices")["devices"])
    if identity.module_id is not None and identity.device_id not in known:
        client.request("PUT", admin_path(Identity(identity.device_id), "devices"))
    print(client.request("PUT", admin_path(identity, "devices"))["connectionString"])
    return 0


def cmd_connection_string(args: argparse.Namespace) -> int:
    """Print the connection string of a registered device or module."""
    identity = _identity(args)
    state_dir = Path(args.state_dir)
    client = _running_hub(state_dir)
    if client is None:
        registry = Registry(state_dir / "registry.json")
        print(connection_string(args.hostname, registry.get(identity)))
    else:
        path = admin_path(identity, "devices") + "/connection-string"
        print(client.request("GET", path)["connectionString"])
    return 0


def cmd_twin_show(args: argparse.Namespace) -> int:
    """Print a twin."""
    client = AdminClient(Path(args.state_dir))
    _print_json(client.request("GET", admin_path(_identity(args), "twins")))
    return 0


def cmd_twin_set(args: argparse.Namespace) -> int:
    """Apply a desired patch and print the twin."""
    try:
        patch = json.loads(args.patch)
    except ValueError as exc:
        raise HubError(f"patch is not valid JSON: {exc}") from exc
    client = AdminClient(Path(args.state_dir))
    _print_json(client.request("PATCH", admin_path(_identity(args), "twins"), patch))
    return 0


def cmd_invoke(args: argparse.Namespace) -> int:
    """Invoke a direct method and print its status and payload."""
    try:
        payload = json.loads(args.payload) if args.payload else None
    except ValueError as exc:
        raise HubError(f"payload is not valid JSON: {exc}") from exc
    client = AdminClient(Path(args.state_dir))
    body = {"methodName": args.method, "payload": payload, "responseTimeoutInSeconds": args.timeout}
    result = client.request(
        "POST", admin_path(_identity(args), "methods"), body, timeout=args.timeout + 10
    )
    _print_json(result)
    return 0 if 200 <= int(result["status"]) < 300 else 1


def cmd_fault(args: argparse.Namespace) -> int:
    """Inject a fault into the running hub."""
    client = AdminClient(Path(args.state_dir))
    body: dict[str, Any] = {}
    if args.kind == "refuse":
        body = {"seconds": float(args.value or 10)}
    elif args.kind == "hold-pubacks":
        body = {"hold": (args.value or "on") in ("on", "true", "1")}
    elif args.kind == "restart":
        body = {"down_seconds": float(args.value or 0)}
    _print_json(client.request("POST", f"/faults/{args.kind}", body))
    return 0


def _run(handler: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return int(handler(args))
        except HubError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return wrapped


def _add_common(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """``--state-dir`` and ``--hostname``; without ``defaults`` an absent option sets nothing."""
    state_default = os.environ.get("ENVIROMON_HUB_STATE", DEFAULT_STATE_DIR)
    parser.add_argument(
        "--state-dir",
        default=state_default if defaults else argparse.SUPPRESS,
        help=f"registry, twins, event log, certificates (default: {state_default})",
    )
    parser.add_argument(
        "--hostname",
        default="localhost" if defaults else argparse.SUPPRESS,
        help="IoT Hub host name (default: localhost)",
    )


def register(services: argparse._SubParsersAction[Any]) -> None:
    """Add this service's sub-commands to `enviromon`."""
    hub = services.add_parser("hub", help="the local IoT Hub (shaped like `az iot hub`)")
    _add_common(hub, defaults=True)
    # The same options are accepted after the command too (`hub serve --state-dir X`, as
    # `az` takes them); given there, they win.
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, defaults=False)
    cmds = hub.add_subparsers(dest="hub_command", required=True, metavar="COMMAND")

    serve = cmds.add_parser("serve", help="run the hub", parents=[common])
    serve.add_argument(
        "--port", type=int, default=8883, help="MQTT/TLS port; 0 = any free (default: 8883)"
    )
    serve.add_argument(
        "--proxy-port", type=int, default=None, help="also open an HTTP CONNECT tunnel"
    )
    serve.add_argument(
        "--admin-port", type=int, default=0, help="admin API port (default: any free)"
    )
    serve.add_argument(
        "--workload-socket", help="serve the IoT Edge workload API on this unix socket"
    )
    serve.add_argument("--workload-device", help="the edge device id the workload API signs for")
    serve.set_defaults(handler=_run(cmd_serve))

    device = cmds.add_parser("device", help="devices in the registry")
    device_cmds = device.add_subparsers(dest="device_command", required=True, metavar="COMMAND")
    add = device_cmds.add_parser("add", help="register a device (and a module)", parents=[common])
    add.add_argument("id", help="device id, or device/module")
    add.add_argument("--module", help="also register this module of the device")
    add.set_defaults(handler=_run(cmd_device_add))

    cs = cmds.add_parser(
        "connection-string", help="print a device's or module's connection string", parents=[common]
    )
    cs.add_argument("id", help="device id, or device/module")
    cs.add_argument("--module", help="the module's connection string")
    cs.set_defaults(handler=_run(cmd_connection_string))

    twin = cmds.add_parser("twin", help="read or patch a twin")
    twin_cmds = twin.add_subparsers(dest="twin_command", required=True, metavar="COMMAND")
    show = twin_cmds.add_parser("show", help="print a twin", parents=[common])
    show.add_argument("id", help="device id, or device/module")
    show.set_defaults(handler=_run(cmd_twin_show))
    tset = twin_cmds.add_parser("set", help="patch desired properties", parents=[common])
    tset.add_argument("id", help="device id, or device/module")
    tset.add_argument("patch", help="desired patch, JSON")
    tset.set_defaults(handler=_run(cmd_twin_set))

    invoke = cmds.add_parser("invoke", help="invoke a direct method", parents=[common])
    invoke.add_argument("id", help="device id, or device/module")
    invoke.add_argument("method", help="method name")
    invoke.add_argument("payload", nargs="?", default=None, help="payload, JSON")
    invoke.add_argument("--timeout", type=float, default=30.0, help="seconds (default: 30)")
    invoke.set_defaults(handler=_run(cmd_invoke))

    fault = cmds.add_parser("fault", help="inject a fault into the running hub", parents=[common])
    fault.add_argument("kind", choices=["drop", "refuse", "hold-pubacks", "restart"])
    fault.add_argument(
        "value", nargs="?", help="seconds (refuse, restart) or on/off (hold-pubacks)"
    )
    fault.set_defaults(handler=_run(cmd_fault))
