"""The identity registry: devices and their modules, with generated keys.

Kept as one JSON file in the state directory (``registry.json``, mode 0600, under the
gitignored ``.enviromon/``), so keys are generated at run time and never committed.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enviromon_sim.iothub.errors import DeviceExistsError, DeviceNotFoundError
from enviromon_sim.iothub.sas import generate_key
from enviromon_sim.iothub.statefiles import private_dir, write_file
from enviromon_sim.iothub.topics import Identity


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a device or module needs to connect."""

    identity: Identity
    key: str
    generation_id: str | None = None


def connection_string(hostname: str, creds: Credentials) -> str:
    """``HostName=...;DeviceId=...[;ModuleId=...];SharedAccessKey=...``."""
    parts = [f"HostName={hostname}", f"DeviceId={creds.identity.device_id}"]
    if creds.identity.module_id:
        parts.append(f"ModuleId={creds.identity.module_id}")
    parts.append(f"SharedAccessKey={creds.key}")
    return ";".join(parts)


class Registry:
    """Devices and modules, persisted to ``path``. Thread-safe."""

    def __init__(self, path: str | Path) -> None:
        """Load the registry at ``path`` (an absent file is an empty registry)."""
        self._path = Path(path)
        self._lock = threading.Lock()
        self._devices: dict[str, dict[str, Any]] = {}
        self._mtime_ns = -1
        self._load()

    def _load(self) -> None:
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            self._devices = {}
            return
        if stat.st_mtime_ns == self._mtime_ns:
            return
        data = json.loads(self._path.read_text("utf-8"))
        self._devices = dict(data.get("devices", {}))
        self._mtime_ns = stat.st_mtime_ns

    def _save(self) -> None:
        private_dir(self._path.parent)
        write_file(self._path, json.dumps({"devices": self._devices}, indent=2, sort_keys=True))
        self._mtime_ns = self._path.stat().st_mtime_ns

    def add_device(self, device_id: str) -> Credentials:
        """Register a device with a fresh key."""
        Identity(device_id)  # checks the id
        with self._lock:
            self._load()
            if device_id in self._devices:
                raise DeviceExistsError(f"device {device_id!r} already exists")
            self._devices[device_id] = {"key": generate_key(), "modules": {}}
            self._save()
            return Credentials(Identity(device_id), self._devices[device_id]["key"])

    def add_module(self, device_id: str, module_id: str) -> Credentials:
        """Register a module of an existing device, with a fresh key and generation id."""
        Identity(device_id, module_id)  # checks both ids
        with self._lock:
            self._load()
            device = self._devices.get(device_id)
            if device is None:
                raise DeviceNotFoundError(f"no device {device_id!r}")
            if module_id in device["modules"]:
                raise DeviceExistsError(f"module {device_id}/{module_id} already exists")
            entry = {"key": generate_key(), "generationId": secrets.token_hex(8)}
            device["modules"][module_id] = entry
            self._save()
            return Credentials(Identity(device_id, module_id), entry["key"], entry["generationId"])

    def ensure(self, identity: Identity) -> Credentials:
        """Credentials for ``identity``, registering the device and module if missing."""
        try:
            return self.get(identity)
        except DeviceNotFoundError:
            pass
        with contextlib.suppress(DeviceExistsError):
            self.add_device(identity.device_id)
        if identity.module_id:
            with contextlib.suppress(DeviceExistsError):
                self.add_module(identity.device_id, identity.module_id)
        return self.get(identity)

    def get(self, identity: Identity) -> Credentials:
        """Credentials of a registered device or module."""
        with self._lock:
            self._load()
            device = self._devices.get(identity.device_id)
            if device is None:
                raise DeviceNotFoundError(f"no device {identity.device_id!r}")
            if identity.module_id is None:
                return Credentials(identity, device["key"])
            module = device["modules"].get(identity.module_id)
            if module is None:
                raise DeviceNotFoundError(f"no module {identity.client_id!r}")
            return Credentials(identity, module["key"], module["generationId"])

    def remove(self, identity: Identity) -> list[Identity]:
        """Delete a module, or a device with all its modules; return the identities removed."""
        with self._lock:
            self._load()
            device = self._devices.get(identity.device_id)
            if device is None:
                raise DeviceNotFoundError(f"no device {identity.device_id!r}")
            if identity.module_id is not None:
                if identity.module_id not in device["modules"]:
                    raise DeviceNotFoundError(f"no module {identity.client_id!r}")
                del device["modules"][identity.module_id]
                removed = [identity]
            else:
                removed = [Identity(identity.device_id)]
                removed += [Identity(identity.device_id, m) for m in sorted(device["modules"])]
                del self._devices[identity.device_id]
            self._save()
            return removed

    def list(self) -> list[Identity]:
        """Every device and module, devices first within each device."""
        with self._lock:
            self._load()
            out: list[Identity] = []
            for device_id in sorted(self._devices):
                out.append(Identity(device_id))
                out.extend(
                    Identity(device_id, m) for m in sorted(self._devices[device_id]["modules"])
                )
            return out
