"""A tiny client of the running local hub's admin API (found through ``hub.json``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from enviromon_sim.iothub.errors import AdminApiError, HubNotRunningError
from enviromon_sim.iothub.hub import read_state
from enviromon_sim.iothub.topics import Identity


def admin_path(identity: Identity, root: str) -> str:
    """``/{root}/{d}[/modules/{m}]`` with each id percent-encoded.

    ``%``, ``?``, ``$`` and ``'`` are legal in IoT Hub ids; unencoded, ``odd%41`` would reach
    the hub as ``oddA`` and ``a?b`` as ``a`` with a query string.
    """
    base = f"/{root}/{urllib.parse.quote(identity.device_id, safe='')}"
    if identity.module_id:
        return f"{base}/modules/{urllib.parse.quote(identity.module_id, safe='')}"
    return base


class AdminClient:
    """The running hub's admin API."""

    def __init__(self, state_dir: Path) -> None:
        """Find the running hub from ``hub.json``; raise HubNotRunningError if there is none."""
        state = read_state(state_dir)
        if not state or not state.get("admin_url"):
            raise HubNotRunningError(f"no running hub found in {state_dir}")
        self.url = str(state["admin_url"])
        self.token = str(state["admin_token"])
        self.hostname = str(state.get("hostname") or "localhost")
        try:
            self.request("GET", "/devices", timeout=3)
        except OSError as exc:
            raise HubNotRunningError(f"hub at {self.url} does not answer: {exc}") from exc

    def request(self, method: str, path: str, body: Any = None, *, timeout: float = 30) -> Any:
        """Send one request; return the decoded JSON, or raise AdminApiError with the message."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(  # noqa: S310 - the URL is the local hub's, from hub.json
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except (ValueError, AttributeError):
                message = exc.reason
            raise AdminApiError(exc.code, f"hub answered {exc.code}: {message}") from exc
