"""The hub's admin HTTP API on 127.0.0.1: registry, twins, methods, faults, stats.

Every request needs ``Authorization: Bearer <admin_token>`` (the token is in ``hub.json``
in the state dir, mode 0600), because the registry hands out device keys.

Ids in paths are percent-encoded (``%`` is a legal id character: ``odd%41`` travels as
``odd%2541``); aiohttp decodes each path segment once.

Routes (JSON in, JSON out; errors are ``{"error": "..."}`` with a 4xx/5xx status):
- ``GET  /devices``                              every device and module id
- ``PUT  /devices/{d}`` / ``/devices/{d}/modules/{m}``     register (201; 409 if present)
- ``GET  /devices/{d}[/modules/{m}]``            one identity: ids, modules, connection state
- ``DELETE /devices/{d}[/modules/{m}]``          delete (a device with its modules), its twin
  and session; a live connection is closed
- ``GET  /devices/{d}[/modules/{m}]/connection-string``
- ``GET  /twins/{d}[/modules/{m}]``              twin (service view)
- ``PATCH /twins/{d}[/modules/{m}]``             desired patch; returns the twin
- ``POST /methods/{d}[/modules/{m}]``            invoke a direct method with
  ``{"methodName", "payload", "responseTimeoutInSeconds"}`` → ``{"status", "payload"}``
  (404 when the device is offline, 504 on timeout)
- ``POST /faults/drop`` | ``/faults/refuse {"seconds"}`` | ``/faults/hold-pubacks {"hold"}``
  | ``/faults/restart {"down_seconds"}``
- ``GET  /stats``                               counters, online ids, handler tasks, last event
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from enviromon_sim.iothub.errors import (
    DeviceExistsError,
    DeviceNotConnectedError,
    DeviceNotFoundError,
    HubError,
    InvalidIdError,
    InvalidPatchError,
    MethodTimeoutError,
)
from enviromon_sim.iothub.topics import Identity
from enviromon_sim.iothub.twins import parse_patch

if TYPE_CHECKING:
    from enviromon_sim.iothub.hub import Hub
    from enviromon_sim.iothub.server import HubCore

MAX_BODY = 64 * 1024
HUB_KEY: web.AppKey[Hub] = web.AppKey("hub")

_STATUS: list[tuple[type[Exception], int]] = [
    (DeviceNotFoundError, 404),
    (DeviceExistsError, 409),
    (InvalidIdError, 400),
    (InvalidPatchError, 400),
    (DeviceNotConnectedError, 404),
    (MethodTimeoutError, 504),
    (HubError, 400),
    (ValueError, 400),
]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {hub.admin_token}".encode()):
        return _error(401, "missing or wrong admin token")
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)
    except Exception as exc:
        for kind, status in _STATUS:
            if isinstance(exc, kind):
                return _error(status, str(exc))
        raise


def _identity(request: web.Request) -> Identity:
    device = request.match_info["d"]
    module = request.match_info.get("m")
    return Identity(device, module)


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return {}
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except ValueError as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from exc


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _core(request: web.Request) -> HubCore:
    hub = request.app[HUB_KEY]
    if hub.core is None:
        raise DeviceNotConnectedError("hub MQTT side is restarting")
    return hub.core


async def list_devices(request: web.Request) -> web.Response:
    """Every registered id."""
    hub = request.app[HUB_KEY]
    return web.json_response({"devices": [i.client_id for i in hub.registry.list()]})


async def add_device(request: web.Request) -> web.Response:
    """Register a device or module."""
    hub = request.app[HUB_KEY]
    identity = _identity(request)
    if identity.module_id is None:
        hub.registry.add_device(identity.device_id)
    else:
        hub.registry.add_module(identity.device_id, identity.module_id)
    return web.json_response(
        {"id": identity.client_id, "connectionString": hub.connection_string(identity)}, status=201
    )


async def show_device(request: web.Request) -> web.Response:
    """One device or module, shaped like ``az iot hub device-identity show`` (without keys)."""
    hub = request.app[HUB_KEY]
    identity = _identity(request)
    creds = hub.registry.get(identity)  # DeviceNotFoundError -> 404
    core = hub.core
    online = core is not None and core.online(identity)
    view: dict[str, Any] = {"deviceId": identity.device_id}
    if identity.module_id is None:
        view["modules"] = [
            i.module_id
            for i in hub.registry.list()
            if i.device_id == identity.device_id and i.module_id is not None
        ]
    else:
        view["moduleId"] = identity.module_id
        view["generationId"] = creds.generation_id
    view["authentication"] = {"type": "sas"}
    view["connectionState"] = "Connected" if online else "Disconnected"
    return web.json_response(view)


async def delete_device(request: web.Request) -> web.Response:
    """Delete a device (and its modules) or a module."""
    removed = _core(request).delete(_identity(request))
    return web.json_response({"deleted": [i.client_id for i in removed]})


async def get_connection_string(request: web.Request) -> web.Response:
    """The connection string of a device or module."""
    hub = request.app[HUB_KEY]
    return web.json_response({"connectionString": hub.connection_string(_identity(request))})


async def get_twin(request: web.Request) -> web.Response:
    """A twin, service view."""
    return web.json_response(_core(request).get_twin(_identity(request)))


async def patch_twin(request: web.Request) -> web.Response:
    """Patch desired properties."""
    patch = parse_patch(await request.read())
    return web.json_response(_core(request).patch_desired(_identity(request), patch))


async def invoke(request: web.Request) -> web.Response:
    """Invoke a direct method."""
    body = await _body(request)
    if not isinstance(body, dict) or not isinstance(body.get("methodName"), str):
        raise ValueError(
            'body must be {"methodName": str, "payload": ..., "responseTimeoutInSeconds": n}'
        )
    timeout = body.get("responseTimeoutInSeconds", 30)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
    ):
        raise ValueError("responseTimeoutInSeconds must be a number")
    status, payload = await _core(request).invoke_method(
        _identity(request), body["methodName"], body.get("payload"), float(timeout)
    )
    return web.json_response({"status": status, "payload": payload})


async def fault(request: web.Request) -> web.Response:
    """Inject a fault."""
    hub = request.app[HUB_KEY]
    kind = request.match_info["kind"]
    body = await _body(request)
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    if kind == "drop":
        return web.json_response({"dropped": _core(request).drop_connections()})
    if kind == "refuse":
        seconds = body.get("seconds")
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 <= seconds <= 3600
        ):
            raise ValueError("seconds must be a number in 0..3600")
        _core(request).refuse_connections(float(seconds))
        return web.json_response({"refusing_for": seconds})
    if kind == "hold-pubacks":
        hold = body.get("hold")
        if not isinstance(hold, bool):
            raise ValueError("hold must be true or false")
        _core(request).hold_pubacks(hold)
        return web.json_response({"holding": hold})
    if kind == "restart":
        down = body.get("down_seconds", 0)
        if isinstance(down, bool) or not isinstance(down, int | float) or not 0 <= down <= 600:
            raise ValueError("down_seconds must be a number in 0..600")
        # Answer first: the restart drops connections and takes a while.
        task = asyncio.get_running_loop().create_task(hub.restart(float(down)))
        hub.background.add(task)  # keep a reference until it is done
        task.add_done_callback(hub.background.discard)
        return web.json_response({"restarting": True, "down_seconds": down}, status=202)
    return _error(404, f"no fault {kind!r}")


async def stats(request: web.Request) -> web.Response:
    """Counters and who is online."""
    core = _core(request)
    online = sorted(cid for cid, s in core.sessions.items() if s.connection is not None)
    return web.json_response(
        {
            "stats": dict(core.stats),
            "connects": dict(core.connects),
            "online": online,
            "handlers": core.handler_count,
            "events": core.event_log.last_sequence_number(),
        }
    )


def make_admin_app(hub: Hub) -> web.Application:
    """The admin API for ``hub``."""
    app = web.Application(middlewares=[_middleware], client_max_size=MAX_BODY)
    app[HUB_KEY] = hub
    for prefix in ("/devices/{d}", "/devices/{d}/modules/{m}"):
        app.router.add_put(prefix, add_device)
        app.router.add_get(prefix, show_device)
        app.router.add_delete(prefix, delete_device)
        app.router.add_get(prefix + "/connection-string", get_connection_string)
    for prefix in ("/twins/{d}", "/twins/{d}/modules/{m}"):
        app.router.add_get(prefix, get_twin)
        app.router.add_patch(prefix, patch_twin)
    app.router.add_post("/methods/{d}", invoke)
    app.router.add_post("/methods/{d}/modules/{m}", invoke)
    app.router.add_get("/devices", list_devices)
    app.router.add_post("/faults/{kind}", fault)
    app.router.add_get("/stats", stats)
    return app
