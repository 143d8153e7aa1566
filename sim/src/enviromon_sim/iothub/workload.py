"""A stand-in for the IoT Edge workload API, on a unix socket.

Just the two calls azure-iot-device's ``IoTEdgeHsm`` (iothub/edge_hsm.py) makes for
``IoTHubModuleClient.create_from_edge_environment()``:
- ``GET /trust-bundle?api-version=...`` → ``{"certificate": "<CA PEM>"}``
- ``POST /modules/{m}/genid/{g}/sign?api-version=...`` with
  ``{"keyId": "primary", "algo": "HMACSHA256", "data": "<base64>"}`` → ``{"digest": "<base64>"}``,
  the HMAC-SHA256 of the decoded data with the module's key (the module's key never leaves
  the hub, as with the real security daemon).
Module ids are URL-quoted by the SDK; aiohttp decodes them in ``match_info``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import TYPE_CHECKING

from aiohttp import web

from enviromon_sim.iothub.errors import DeviceNotFoundError, InvalidIdError
from enviromon_sim.iothub.topics import Identity

if TYPE_CHECKING:
    from enviromon_sim.iothub.hub import Hub

WORKLOAD_HUB_KEY: web.AppKey[Hub] = web.AppKey("workload-hub")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


async def trust_bundle(request: web.Request) -> web.Response:
    """The CA that signed the hub's server certificate."""
    if not request.query.get("api-version"):
        return _error(400, "api-version is required")
    hub = request.app[WORKLOAD_HUB_KEY]
    return web.json_response({"certificate": hub.tls.ca_pem()})


async def sign(request: web.Request) -> web.Response:
    """Sign data with a module's key, as the security daemon's HSM would."""
    hub = request.app[WORKLOAD_HUB_KEY]
    if not request.query.get("api-version"):
        return _error(400, "api-version is required")
    device_id = hub.config.workload_device_id
    assert device_id is not None
    try:
        creds = hub.registry.get(Identity(device_id, request.match_info["m"]))
    except (DeviceNotFoundError, InvalidIdError) as exc:
        return _error(404, str(exc))
    if request.match_info["g"] != creds.generation_id:
        return _error(404, "module generation id does not match")
    try:
        body = json.loads(await request.read())
        if body.get("keyId") != "primary" or body.get("algo") != "HMACSHA256":
            return _error(400, "only keyId=primary, algo=HMACSHA256 are supported")
        data = base64.b64decode(body["data"], validate=True)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        return _error(400, f"bad sign request: {exc}")
    key = base64.b64decode(creds.key)
    digest = base64.b64encode(hmac.new(key, data, hashlib.sha256).digest()).decode("ascii")
    return web.json_response({"digest": digest})


def make_workload_app(hub: Hub) -> web.Application:
    """The workload API app for ``hub``'s edge device."""
    app = web.Application(client_max_size=64 * 1024)
    app[WORKLOAD_HUB_KEY] = hub
    app.router.add_get("/trust-bundle", trust_bundle)
    app.router.add_post("/modules/{m}/genid/{g}/sign", sign)
    return app
