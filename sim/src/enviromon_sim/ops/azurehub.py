"""A real IoT Hub as a :class:`HubService`, through Microsoft's service SDK (``azure-iot-hub``).

Give it a connection string of a policy with registry read/write and service connect rights
(``iothubowner``, or ``service`` + ``registryReadWrite``): ``IOTHUB_CONNECTION_STRING``.
Only the SDK's public API is used; its models are turned into the same plain dicts the local
hub's admin API answers with, so the CLI prints both alike.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from enviromon_sim.iothub.topics import Identity
from enviromon_sim.ops.errors import ConfigurationError, NotFoundError, OpsError

if TYPE_CHECKING:
    from azure.iot.hub import IoTHubRegistryManager

# Fields of a device or module view worth showing; never the keys.
_SHOWN = (
    "deviceId",
    "moduleId",
    "generationId",
    "status",
    "statusReason",
    "connectionState",
    "connectionStateUpdatedTime",
    "lastActivityTime",
    "cloudToDeviceMessageCount",
    "managedBy",
)


def parse_connection_string(value: str) -> dict[str, str]:
    """``HostName=…;SharedAccessKeyName=…;SharedAccessKey=…`` as a dict; checks the three.

    Raises ConfigurationError naming what is missing, never echoing the key.
    """
    parts: dict[str, str] = {}
    for segment in value.strip().split(";"):
        if not segment.strip():
            continue
        key, sep, val = segment.partition("=")
        if not sep:
            raise ConfigurationError("IoT Hub connection string: expected key=value segments")
        parts[key.strip()] = val.strip()
    missing = [
        k for k in ("HostName", "SharedAccessKeyName", "SharedAccessKey") if not parts.get(k)
    ]
    if missing:
        raise ConfigurationError(
            "IoT Hub connection string has no " + ", ".join(missing) + " (use a shared access"
            " policy's connection string, e.g. `az iot hub connection-string show --policy-name"
            " iothubowner`)"
        )
    return parts


def identity_view(serialized: dict[str, Any], modules: list[str] | None = None) -> dict[str, Any]:
    """A device's or module's REST form (the SDK model's ``serialize()``) without its keys."""
    out = {k: serialized[k] for k in _SHOWN if serialized.get(k) not in (None, "")}
    if modules is not None:
        out["modules"] = modules
    auth = serialized.get("authentication") or {}
    out["authentication"] = {"type": auth.get("type")}
    return out


def twin_view(serialized: dict[str, Any]) -> dict[str, Any]:
    """A twin's REST form reduced to what the local hub shows: ids, version, properties."""
    props = serialized.get("properties") or {}
    out: dict[str, Any] = {"deviceId": serialized.get("deviceId")}
    if serialized.get("moduleId"):
        out["moduleId"] = serialized["moduleId"]
    if serialized.get("version") is not None:
        out["version"] = serialized["version"]
    out["properties"] = {
        "desired": dict(props.get("desired") or {}),
        "reported": dict(props.get("reported") or {}),
    }
    return out


def device_connection_string(hostname: str, identity: Identity, key: str) -> str:
    """The connection string a device or module connects with."""
    parts = [f"HostName={hostname}", f"DeviceId={identity.device_id}"]
    if identity.module_id:
        parts.append(f"ModuleId={identity.module_id}")
    parts.append(f"SharedAccessKey={key}")
    return ";".join(parts)


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


class AzureHub:
    """An IoT Hub in Azure."""

    def __init__(self, *, connection_string: str) -> None:
        """Check the connection string; the SDK client is made on first use."""
        self.hostname = parse_connection_string(connection_string)["HostName"]
        self._connection_string = connection_string
        self._manager: IoTHubRegistryManager | None = None

    def _registry(self) -> IoTHubRegistryManager:
        if self._manager is None:
            from azure.iot.hub import IoTHubRegistryManager

            self._manager = IoTHubRegistryManager.from_connection_string(self._connection_string)
        return self._manager

    @contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        """SDK errors as OpsError (404 as NotFoundError), with the hub's own message."""
        from msrest.exceptions import HttpOperationError

        try:
            yield
        except HttpOperationError as exc:
            status = getattr(exc.response, "status_code", None)
            message = f"{what}: IoT Hub answered {status}: {exc.message}"
            if status == 404:
                raise NotFoundError(message) from exc
            raise OpsError(message) from exc
        except OSError as exc:
            raise OpsError(f"{what}: cannot reach {self.hostname}: {exc}") from exc

    def list_identities(self) -> list[Identity]:
        """Every device and module, devices first."""
        out: list[Identity] = []
        with self._calling("list devices"):
            devices = sorted(d.device_id for d in self._registry().get_devices())
            for device_id in devices:
                out.append(Identity(device_id))
                modules = self._registry().get_modules(device_id)
                out.extend(Identity(device_id, m) for m in sorted(m.module_id for m in modules))
        return out

    def show(self, identity: Identity) -> dict[str, Any]:
        """One device or module, without its keys."""
        with self._calling(f"show {identity}"):
            if identity.module_id is None:
                device = self._registry().get_device(identity.device_id)
                modules = sorted(
                    m.module_id for m in self._registry().get_modules(identity.device_id)
                )
                return identity_view(device.serialize(), modules)
            module = self._registry().get_module(identity.device_id, identity.module_id)
            return identity_view(module.serialize())

    def add(self, identity: Identity) -> str:
        """Register with fresh SAS keys; the connection string."""
        primary, secondary = _new_key(), _new_key()
        with self._calling(f"add {identity}"):
            registry = self._registry()
            if identity.module_id is None:
                registry.create_device_with_sas(identity.device_id, primary, secondary, "enabled")
            else:
                if Identity(identity.device_id) not in self._devices():
                    registry.create_device_with_sas(
                        identity.device_id, _new_key(), _new_key(), "enabled"
                    )
                registry.create_module_with_sas(
                    identity.device_id, identity.module_id, "", primary, secondary
                )
        return device_connection_string(self.hostname, identity, primary)

    def _devices(self) -> set[Identity]:
        return {Identity(d.device_id) for d in self._registry().get_devices()}

    def delete(self, identity: Identity) -> list[Identity]:
        """Delete (IoT Hub deletes a device's modules with it)."""
        with self._calling(f"delete {identity}"):
            registry = self._registry()
            if identity.module_id is not None:
                registry.delete_module(identity.device_id, identity.module_id, etag="*")
                return [identity]
            modules = [
                Identity(identity.device_id, m.module_id)
                for m in registry.get_modules(identity.device_id)
            ]
            registry.delete_device(identity.device_id, etag="*")
            return [Identity(identity.device_id), *sorted(modules, key=str)]

    def get_twin(self, identity: Identity) -> dict[str, Any]:
        """The twin."""
        with self._calling(f"twin of {identity}"):
            registry = self._registry()
            if identity.module_id is None:
                twin = registry.get_twin(identity.device_id)
            else:
                twin = registry.get_module_twin(identity.device_id, identity.module_id)
            return twin_view(twin.serialize())

    def patch_desired(self, identity: Identity, patch: dict[str, Any]) -> dict[str, Any]:
        """Patch desired properties (a JSON merge patch, as IoT Hub's twin PATCH is)."""
        from azure.iot.hub.models import Twin, TwinProperties

        twin_patch = Twin(properties=TwinProperties(desired=patch))
        with self._calling(f"patch twin of {identity}"):
            registry = self._registry()
            if identity.module_id is None:
                twin = registry.update_twin(identity.device_id, twin_patch, etag="*")
            else:
                twin = registry.update_module_twin(
                    identity.device_id, identity.module_id, twin_patch, etag="*"
                )
            return twin_view(twin.serialize())
