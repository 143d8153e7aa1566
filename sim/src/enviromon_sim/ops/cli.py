"""The operator's commands, shaped like ``az iot hub``, for the local hub or a real one.

- ``enviromon device add|list|show|delete ID [--module M]``
- ``enviromon twin show ID`` / ``enviromon twin update ID --desired '{...}'``
- ``enviromon monitor-events [--device-id D] [--module-id M] [--timeout S] [--count N]``
- ``enviromon calibrate DEVICE[/MODULE] --temperature 21.3 [--humidity 48] [--pressure 1012]``
- ``enviromon load --devices 10 --rate 1 --duration 60 [--shape schema1|websim|legacy|simtemp]``
- ``enviromon dashboard publish --function-app NAME --storage-account NAME`` (registered into the
  dashboard's own ``dashboard`` group)

Which hub: ``--login CONNECTION_STRING`` or ``IOTHUB_CONNECTION_STRING`` (a shared access
policy of a real IoT Hub) selects Azure; otherwise the local hub whose state is in
``--state-dir`` (default ``.enviromon/hub`` or ``$ENVIROMON_HUB_STATE``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enviromon_sim.exitcodes import EXIT_TIMEOUT
from enviromon_sim.iothub.errors import HubError
from enviromon_sim.iothub.topics import Identity
from enviromon_sim.ops.calibrate import (
    EventLogReadings,
    Outcome,
    ReadingSource,
    SinkApiReadings,
    calibrate,
)
from enviromon_sim.ops.errors import ConfigurationError, OpsError, WaitTimeoutError
from enviromon_sim.ops.events import Arrived, azure_events, event_view, local_events, matches
from enviromon_sim.ops.publish import ACCOUNT_NAME, api_base_url, publish
from enviromon_sim.ops.service import HubService

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

    from enviromon_sim.ops.load import Plan

LOGIN_ENV = "IOTHUB_CONNECTION_STRING"
EVENTS_ENV = "IOTHUB_EVENTS_CONNECTION"
API_ENV = "ENVIROMON_API_URL"
STATE_ENV = "ENVIROMON_HUB_STATE"
DEFAULT_STATE_DIR = ".enviromon/hub"


def _login(args: argparse.Namespace) -> str | None:
    value = args.login or os.environ.get(LOGIN_ENV, "")
    return value.strip() or None


def service_for(args: argparse.Namespace) -> HubService:
    """The hub the options name: Azure with a connection string, else the local one."""
    login = _login(args)
    if login is not None:
        from enviromon_sim.ops.azurehub import AzureHub

        return AzureHub(connection_string=login)
    from enviromon_sim.ops.local import LocalHub

    return LocalHub(state_dir=Path(args.state_dir), hostname=args.hostname)


def _identity(args: argparse.Namespace) -> Identity:
    identity = Identity.parse(args.id)
    module = getattr(args, "module", None)
    if module:
        if identity.module_id:
            raise OpsError("give the module either as pi-1/module or with --module, not both")
        identity = Identity(identity.device_id, module)
    return identity


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True), flush=True)


# ----- device and twin ------------------------------------------------------------------


def cmd_device_add(args: argparse.Namespace) -> int:
    """Register and print the connection string."""
    print(service_for(args).add(_identity(args)))
    return 0


def cmd_device_list(args: argparse.Namespace) -> int:
    """Print every device and module id, one a line (``--json``: a JSON list)."""
    ids = [str(i) for i in service_for(args).list_identities()]
    if args.json:
        _print_json(ids)
    else:
        for cid in ids:
            print(cid)
    return 0


def cmd_device_show(args: argparse.Namespace) -> int:
    """Print one device or module."""
    _print_json(service_for(args).show(_identity(args)))
    return 0


def cmd_device_delete(args: argparse.Namespace) -> int:
    """Delete and print what went."""
    for gone in service_for(args).delete(_identity(args)):
        print(f"deleted {gone}")
    return 0


def cmd_twin_show(args: argparse.Namespace) -> int:
    """Print a twin."""
    _print_json(service_for(args).get_twin(_identity(args)))
    return 0


def cmd_twin_update(args: argparse.Namespace) -> int:
    """Patch desired properties and print the twin."""
    try:
        patch = json.loads(args.desired)
    except ValueError as exc:
        raise OpsError(f"--desired is not valid JSON: {exc}") from exc
    if not isinstance(patch, dict):
        raise OpsError("--desired must be a JSON object")
    _print_json(service_for(args).patch_desired(_identity(args), patch))
    return 0


# ----- monitor-events -------------------------------------------------------------------


def _events(args: argparse.Namespace, stop: Callable[[], bool]) -> Iterator[Arrived]:
    events = args.events_connection_string or os.environ.get(EVENTS_ENV, "").strip()
    if events:
        return azure_events(
            events, consumer_group=args.consumer_group, from_start=args.from_start, stop=stop
        )
    if _login(args) is not None:
        raise ConfigurationError(
            f"monitor-events on a real IoT Hub reads its Event Hub-compatible endpoint: give"
            f" --events-connection-string or {EVENTS_ENV} (IoT Hub → Built-in endpoints)"
        )
    path = Path(args.state_dir) / "events.sqlite"
    return local_events(path, from_start=args.from_start, stop=stop)


def cmd_monitor_events(args: argparse.Namespace) -> int:
    """Print events as they arrive until the timeout, the count, or Ctrl-C."""
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else float("inf")
    printed = 0

    def stop() -> bool:
        return time.monotonic() >= deadline or (args.count is not None and printed >= args.count)

    device = args.device_id
    module = args.module_id
    for event in _events(args, stop):
        if not matches(event, device, module):
            continue
        _print_json(event_view(event))
        printed += 1
        if stop():
            break
    if args.count is not None and printed < args.count:
        print(
            f"timed out after {args.timeout:g} s: {printed} of {args.count} events", file=sys.stderr
        )
        return EXIT_TIMEOUT
    return 0


# ----- calibrate ------------------------------------------------------------------------


def _readings(args: argparse.Namespace) -> ReadingSource:
    api = args.api or os.environ.get(API_ENV, "").strip()
    if api:
        return SinkApiReadings(base_url=api)
    if _login(args) is not None:
        raise ConfigurationError(
            f"calibrate on a real IoT Hub reads the latest reading from the sink's API: give"
            f" --api https://<function app>.azurewebsites.net/api (or {API_ENV})"
        )
    return EventLogReadings(path=Path(args.state_dir) / "events.sqlite")


def _summary(outcome: Outcome) -> dict[str, Any]:
    return {
        "version": outcome.version,
        "changes": [
            {
                "quantity": c.key,
                "reported": c.reported,
                "reference": c.reference,
                "slope": c.slope,
                "oldIntercept": c.old_intercept,
                "newIntercept": c.new_intercept,
            }
            for c in outcome.changes
        ],
        "reading": None
        if outcome.reading is None
        else {"values": dict(outcome.reading.values), "calibration": outcome.reading.calibration},
    }


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Compute new intercepts from reference values, patch the twin, wait for the result."""
    references = {
        key: value
        for key in ("temperature", "humidity", "pressure")
        if (value := getattr(args, key)) is not None
    }
    identity = _identity(args)
    say: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    try:
        outcome = calibrate(
            service=service_for(args),
            readings=_readings(args),
            identity=identity,
            references=references,
            timeout=args.timeout,
            wait=not args.no_wait,
            say=say,
        )
    except WaitTimeoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    if args.json:
        _print_json(_summary(outcome))
        return 0
    for c in outcome.changes:
        print(
            f"{c.key}: reported {c.reported:g}, reference {c.reference:g}: intercept"
            f" {c.old_intercept:g} -> {c.new_intercept:g} (slope {c.slope:g})"
        )
    if outcome.reading is None:
        print(f"twin patched: desired version {outcome.version}")
    else:
        shown = ", ".join(
            f"{k} {outcome.reading.values[k]:g}" for k in references if k in outcome.reading.values
        )
        print(f"calibration version {outcome.version} applied: {shown}")
    return 0


# ----- load -----------------------------------------------------------------------------


def _load_plan(args: argparse.Namespace) -> Plan:
    """Devices and how to reach them: a file of connection strings, a real hub, or the local."""
    from enviromon_sim.ops.load import Plan

    common: dict[str, Any] = {
        "rate": args.rate,
        "duration": args.duration,
        "shape": args.shape,
        "seed": args.seed,
    }
    if not 1 <= args.devices <= 1000:
        raise OpsError("--devices: 1 to 1000")
    Plan(connection_strings=["DeviceId=check"] * args.devices, **common)  # checks, before any I/O
    ids = [Identity(f"{args.prefix}{i:04d}") for i in range(1, args.devices + 1)]
    if args.connection_strings:
        try:
            text = Path(args.connection_strings).read_text("utf-8")
        except OSError as exc:
            raise OpsError(f"--connection-strings: {exc}") from exc
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        return Plan(connection_strings=lines[: args.devices], **common)
    if _login(args) is not None:
        service = service_for(args)
        return Plan(connection_strings=[service.add(i) for i in ids], **common)
    from enviromon_sim.iothub.hub import read_state
    from enviromon_sim.ops.local import LocalHub

    local = LocalHub(state_dir=Path(args.state_dir), hostname=args.hostname)
    state = read_state(args.state_dir)
    if not local.running or state is None:
        raise OpsError(f"no running hub in {args.state_dir}: start `enviromon hub serve`")
    proxy = args.proxy_port
    if proxy is None and state.get("mqtt_port") != 8883:
        proxy = state.get("proxy_port")
        if not proxy:
            raise OpsError(
                f"the local hub listens on {state.get('mqtt_port')}, and the SDK dials 8883:"
                " restart it with --port 8883, or with --proxy-port 0"
            )
    try:
        ca = Path(str(state["ca"])).read_text("utf-8")
    except (KeyError, OSError) as exc:
        raise OpsError(f"cannot read the hub's CA certificate: {exc}") from exc
    return Plan(
        connection_strings=[local.ensure(i) for i in ids], ca_pem=ca, proxy_port=proxy, **common
    )


def cmd_load(args: argparse.Namespace) -> int:
    """Run the load generator; print a summary; exit 1 if any message failed."""
    import asyncio

    from enviromon_sim.ops.load import run

    plan = _load_plan(args)
    show = not args.no_progress and sys.stderr.isatty()
    from tqdm import tqdm

    with tqdm(total=plan.total, unit="msg", disable=not show, file=sys.stderr) as bar:
        result = asyncio.run(run(plan, on_sent=bar.update))
    summary = {
        "devices": len(plan.connection_strings),
        "shape": plan.shape,
        "planned": plan.total,
        "sent": result.sent,
        "failed": result.failed,
        "connectFailed": result.connect_failed,
        "seconds": round(result.elapsed, 3),
        "messagesPerSecond": round(result.rate, 1),
    }
    if args.json:
        _print_json(summary)
    else:
        print(
            f"sent {result.sent}/{plan.total} {plan.shape} messages from"
            f" {summary['devices']} devices in {result.elapsed:.1f} s"
            f" ({result.rate:.1f} msg/s); failed {result.failed}"
        )
    for error in result.errors[:5]:
        print(f"error: {error}", file=sys.stderr)
    return 0 if result.failed == 0 else 1


# ----- dashboard publish ------------------------------------------------------------------

STORAGE_CONNECTION_ENV = "AZURE_STORAGE_CONNECTION_STRING"
STORAGE_KEY_ENV = "AZURE_STORAGE_KEY"
DEFAULT_DASHBOARD_DIR = Path("dashboard/dist")


def _blob_service(args: argparse.Namespace) -> BlobServiceClient:
    from azure.storage.blob import BlobServiceClient

    conn = args.connection_string or os.environ.get(STORAGE_CONNECTION_ENV, "").strip()
    if conn:
        try:
            return BlobServiceClient.from_connection_string(conn)
        except ValueError as exc:
            raise ConfigurationError(f"storage connection string: {exc}") from exc
    if not args.storage_account:
        raise ConfigurationError(
            f"give --storage-account NAME (with {STORAGE_KEY_ENV}) or --connection-string"
            f" (or {STORAGE_CONNECTION_ENV})"
        )
    if not ACCOUNT_NAME.fullmatch(args.storage_account):
        raise ConfigurationError(
            f"--storage-account {args.storage_account!r}: 3-24 lower-case letters and digits"
        )
    key = os.environ.get(STORAGE_KEY_ENV, "").strip()
    if not key:
        raise ConfigurationError(
            f"{STORAGE_KEY_ENV} is not set (az storage account keys list -n"
            f" {args.storage_account} --query [0].value -o tsv)"
        )
    url = f"https://{args.storage_account}.blob.core.windows.net"
    return BlobServiceClient(account_url=url, credential=key)


def cmd_dashboard_publish(args: argparse.Namespace) -> int:
    """Publish; print what was uploaded and the config the page will read."""
    from enviromon_sim.dashboard.errors import ConfigError
    from enviromon_sim.dashboard.server import config_json

    if (args.function_app is None) == (args.api_base_url is None):
        raise ConfigurationError("give one of --function-app NAME or --api-base-url URL")
    api = args.api_base_url or api_base_url(args.function_app)
    try:
        config = config_json(api, args.hub)
    except ConfigError as exc:
        raise ConfigurationError(str(exc)) from exc
    result = publish(
        service=_blob_service(args), directory=Path(args.dir), config=config, prune=args.prune
    )
    for name in result.files:
        print(f"uploaded {name}")
    for name in result.pruned:
        print(f"deleted {name}")
    print(f"config.json: {config.decode('utf-8')}")
    return 0


def register_publish(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``publish`` to the ``enviromon dashboard`` group (the dashboard's CLI calls this)."""
    pub = commands.add_parser(
        "publish", help="upload the built dashboard to a Storage static website ($web)"
    )
    pub.add_argument("--function-app", help="the sink's Function App: its API is the page's")
    pub.add_argument(
        "--api-base-url",
        help="the sink API base URL instead (e.g. the template's apiBaseUrl output)",
    )
    pub.add_argument("--hub", default="enviromon", help="Web PubSub hub (default %(default)s)")
    pub.add_argument("--storage-account", help=f"the Storage account (key in ${STORAGE_KEY_ENV})")
    pub.add_argument(
        "--connection-string",
        help=f"a Storage connection string (default ${STORAGE_CONNECTION_ENV})",
    )
    pub.add_argument(
        "--dir", default=str(DEFAULT_DASHBOARD_DIR), help="built files (default %(default)s)"
    )
    pub.add_argument(
        "--prune", action="store_true", help="delete blobs in $web the new site does not have"
    )
    pub.set_defaults(handler=_run(cmd_dashboard_publish))


# ----- wiring ---------------------------------------------------------------------------


def _run(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapped(args: argparse.Namespace) -> int:
        if not getattr(args, "verbose", False):
            # The Azure SDKs log every connect and send at INFO: keep their warnings only.
            logging.getLogger("azure").setLevel(logging.WARNING)
            logging.getLogger("uamqp").setLevel(logging.WARNING)
        try:
            return int(handler(args))
        except (OpsError, HubError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return wrapped


def hub_options() -> argparse.ArgumentParser:
    """``--login``, ``--state-dir``, ``--hostname``: which hub (a parent parser)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--login",
        help=f"a real IoT Hub's connection string (default: ${LOGIN_ENV}; unset: the local hub)",
    )
    state_default = os.environ.get(STATE_ENV, DEFAULT_STATE_DIR)
    parser.add_argument(
        "--state-dir",
        default=state_default,
        help=f"the local hub's state dir (default: {state_default})",
    )
    parser.add_argument(
        "--hostname", default="localhost", help="the local hub's host name (default: localhost)"
    )
    return parser


def register(services: argparse._SubParsersAction[Any]) -> None:
    """Add ``device``, ``twin``, ``monitor-events`` and ``calibrate`` to `enviromon`."""
    common = hub_options()

    device = services.add_parser("device", help="devices and modules (az iot hub device-identity)")
    cmds = device.add_subparsers(dest="device_command", required=True, metavar="COMMAND")
    for name, handler, text in (
        ("add", cmd_device_add, "register; prints the connection string"),
        ("show", cmd_device_show, "one device or module (never its keys)"),
        ("delete", cmd_device_delete, "delete a module, or a device with its modules"),
    ):
        sub = cmds.add_parser(name, help=text, parents=[common])
        sub.add_argument("id", help="device id, or device/module")
        sub.add_argument("--module", help="the device's module")
        sub.set_defaults(handler=_run(handler))
    listing = cmds.add_parser("list", help="every device and module id", parents=[common])
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    listing.set_defaults(handler=_run(cmd_device_list))

    twin = services.add_parser("twin", help="device and module twins (az iot hub module-twin)")
    twin_cmds = twin.add_subparsers(dest="twin_command", required=True, metavar="COMMAND")
    show = twin_cmds.add_parser("show", help="print a twin", parents=[common])
    show.add_argument("id", help="device id, or device/module")
    show.set_defaults(handler=_run(cmd_twin_show))
    update = twin_cmds.add_parser("update", help="patch desired properties", parents=[common])
    update.add_argument("id", help="device id, or device/module")
    update.add_argument("--desired", required=True, help="desired patch, JSON (null deletes)")
    update.set_defaults(handler=_run(cmd_twin_update))

    mon = services.add_parser(
        "monitor-events",
        help="print telemetry as it arrives (az iot hub monitor-events)",
        parents=[common],
    )
    mon.add_argument("-d", "--device-id", help="only this device")
    mon.add_argument("-m", "--module-id", help="only this module")
    mon.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to listen; 0 = until Ctrl-C (300)"
    )
    mon.add_argument("--count", type=int, help="stop after this many events")
    mon.add_argument(
        "--from-start", action="store_true", help="from the oldest retained event, not from now"
    )
    mon.add_argument(
        "--events-connection-string",
        help=f"real hub: the Event Hub-compatible endpoint (default: ${EVENTS_ENV})",
    )
    mon.add_argument(
        "--consumer-group", default="$Default", help="real hub: consumer group ($Default)"
    )
    mon.set_defaults(handler=_run(cmd_monitor_events))

    cal = services.add_parser(
        "calibrate",
        help="set a stream's intercepts from a reference instrument, and wait for the result",
        parents=[common],
    )
    cal.add_argument("id", help="device id, or device/module (e.g. pi-1/enviro_sensor)")
    cal.add_argument("--module", help="the device's module")
    cal.add_argument("--temperature", type=float, help="the reference's temperature, °C")
    cal.add_argument("--humidity", type=float, help="the reference's relative humidity, %%RH")
    cal.add_argument("--pressure", type=float, help="the reference's station pressure, hPa")
    cal.add_argument(
        "--api",
        help=f"the sink's REST API base URL, e.g. http://127.0.0.1:7071/api (default: ${API_ENV};"
        " unset: the local hub's event log)",
    )
    cal.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for the reading (120)"
    )
    cal.add_argument("--no-wait", action="store_true", help="patch the twin and return")
    cal.add_argument("--json", action="store_true", help="print the outcome as JSON")
    cal.set_defaults(handler=_run(cmd_calibrate))

    from enviromon_sim.ops.shapes import SHAPES

    load = services.add_parser(
        "load",
        help="N simulated devices on the real SDK, at a rate, for a duration",
        parents=[common],
    )
    load.add_argument("--devices", type=int, default=10, help="how many (default 10)")
    load.add_argument(
        "--rate", type=float, default=1.0, help="messages per second per device (default 1)"
    )
    load.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    load.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        default="schema1",
        help="schema1 (ours), websim (Raspberry Pi web simulator), legacy (the original"
        " enviromon function's fields), simtemp (SimulatedTemperatureSensor)",
    )
    load.add_argument(
        "--prefix", default="load-", help="device ids: PREFIX0001, PREFIX0002… (default load-)"
    )
    load.add_argument(
        "--connection-strings", help="a file of device connection strings, one a line"
    )
    load.add_argument(
        "--proxy-port",
        type=int,
        help="local hub: its HTTP CONNECT tunnel port (default: from hub.json when the hub"
        " is not on 8883)",
    )
    load.add_argument("--seed", type=int, help="seed of the simulated values")
    load.add_argument("--no-progress", action="store_true", help="no progress bar")
    load.add_argument("--json", action="store_true", help="print the summary as JSON")
    load.set_defaults(handler=_run(cmd_load))
