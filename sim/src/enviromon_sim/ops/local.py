"""The local hub as a :class:`HubService`: its admin API, or its registry file when not running.

Twins need a running hub (the twin's device must be told of a desired patch).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from enviromon_sim.iothub.adminclient import AdminClient, admin_path
from enviromon_sim.iothub.errors import (
    AdminApiError,
    DeviceExistsError,
    DeviceNotFoundError,
    HubNotRunningError,
)
from enviromon_sim.iothub.registry import Registry, connection_string
from enviromon_sim.iothub.topics import Identity
from enviromon_sim.iothub.twins import TwinStore
from enviromon_sim.ops.errors import NotFoundError, OpsError


class LocalHub:
    """The hub whose state is in ``state_dir`` (``enviromon hub serve --state-dir``)."""

    def __init__(self, *, state_dir: Path, hostname: str = "localhost") -> None:
        """Connect to the running hub's admin API if there is one, else use the files."""
        if not hostname or "/" in hostname:
            raise ValueError(f"invalid hostname {hostname!r}")
        self.state_dir = Path(state_dir)
        self.hostname = hostname
        try:
            self._admin: AdminClient | None = AdminClient(self.state_dir)
        except HubNotRunningError:
            self._admin = None
        self._registry = Registry(self.state_dir / "registry.json")

    @property
    def running(self) -> bool:
        """Whether a running hub answered."""
        return self._admin is not None

    @property
    def event_log_path(self) -> Path:
        """The built-in endpoint's event log."""
        return self.state_dir / "events.sqlite"

    def _api(self, method: str, path: str, body: Any = None) -> Any:
        if self._admin is None:
            raise OpsError(
                f"no running hub in {self.state_dir}: start `enviromon hub serve` (twins,"
                " methods and live state need it)"
            )
        try:
            return self._admin.request(method, path, body)
        except AdminApiError as exc:
            if exc.status == 404:
                raise NotFoundError(str(exc)) from exc
            raise OpsError(str(exc)) from exc

    def list_identities(self) -> list[Identity]:
        """Every device and module, devices first."""
        if self._admin is None:
            return self._registry.list()
        return [Identity.parse(cid) for cid in self._api("GET", "/devices")["devices"]]

    def show(self, identity: Identity) -> dict[str, Any]:
        """One device or module, without its keys."""
        if self._admin is not None:
            view: dict[str, Any] = self._api("GET", admin_path(identity, "devices"))
            return view
        try:
            creds = self._registry.get(identity)
        except DeviceNotFoundError as exc:
            raise NotFoundError(str(exc)) from exc
        out: dict[str, Any] = {"deviceId": identity.device_id}
        if identity.module_id is None:
            out["modules"] = [
                i.module_id
                for i in self._registry.list()
                if i.device_id == identity.device_id and i.module_id is not None
            ]
        else:
            out["moduleId"] = identity.module_id
            out["generationId"] = creds.generation_id
        out["authentication"] = {"type": "sas"}
        out["connectionState"] = "Disconnected"  # no hub running: nothing is connected
        return out

    def add(self, identity: Identity) -> str:
        """Register; the connection string."""
        if self._admin is None:
            try:
                if identity.module_id is None:
                    creds = self._registry.add_device(identity.device_id)
                else:
                    with contextlib.suppress(DeviceExistsError):
                        self._registry.add_device(identity.device_id)
                    creds = self._registry.add_module(identity.device_id, identity.module_id)
            except DeviceExistsError as exc:
                raise OpsError(str(exc)) from exc
            return connection_string(self.hostname, creds)
        if identity.module_id is not None:
            known = {Identity.parse(c) for c in self._api("GET", "/devices")["devices"]}
            if Identity(identity.device_id) not in known:
                self._api("PUT", admin_path(Identity(identity.device_id), "devices"))
        return str(self._api("PUT", admin_path(identity, "devices"))["connectionString"])

    def ensure(self, identity: Identity) -> str:
        """The connection string of ``identity``, registering it first when it is new."""
        try:
            return self.add(identity)
        except NotFoundError:
            raise
        except OpsError:
            if self._admin is None:
                try:
                    creds = self._registry.get(identity)
                except DeviceNotFoundError as exc:
                    raise NotFoundError(str(exc)) from exc
                return connection_string(self.hostname, creds)
            path = admin_path(identity, "devices") + "/connection-string"
            return str(self._api("GET", path)["connectionString"])

    def delete(self, identity: Identity) -> list[Identity]:
        """Delete; the identities removed."""
        if self._admin is None:
            try:
                removed = self._registry.remove(identity)
            except DeviceNotFoundError as exc:
                raise NotFoundError(str(exc)) from exc
            twins = TwinStore(self.state_dir / "twins.json")
            for gone in removed:
                twins.remove(gone)
            return removed
        removed = self._api("DELETE", admin_path(identity, "devices"))["deleted"]
        return [Identity.parse(cid) for cid in removed]

    def get_twin(self, identity: Identity) -> dict[str, Any]:
        """The twin."""
        twin: dict[str, Any] = self._api("GET", admin_path(identity, "twins"))
        return twin

    def patch_desired(self, identity: Identity, patch: dict[str, Any]) -> dict[str, Any]:
        """Patch desired properties; the twin after."""
        twin: dict[str, Any] = self._api("PATCH", admin_path(identity, "twins"), patch)
        return twin
