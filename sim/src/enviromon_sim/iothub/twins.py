"""Device and module twins: desired and reported properties, each with a ``$version``.

Patches follow IoT Hub: a JSON object merged into the section (``null`` deletes a key), and
every accepted patch bumps that section's ``$version`` by one. A patch that is not valid is
refused as a whole. Twins persist to one JSON file in the state directory.
"""

from __future__ import annotations

import copy
import json
import math
import threading
from pathlib import Path
from typing import Any

from enviromon_sim.iothub.errors import InvalidPatchError
from enviromon_sim.iothub.statefiles import private_dir, write_file
from enviromon_sim.iothub.topics import Identity

MAX_SECTION_BYTES = 32 * 1024  # IoT Hub: desired and reported are 32 KB each
MAX_DEPTH = 10  # IoT Hub: nesting depth of objects in a twin section
MAX_KEY_LENGTH = 1024
_BAD_KEY_CHARS = set(".$ ") | {chr(c) for c in range(32)}


def _reject_constant(name: str) -> Any:
    raise InvalidPatchError(f"{name} is not valid JSON")


def parse_patch(raw: bytes | str) -> dict[str, Any]:
    """Parse a patch body: a JSON object, no NaN/Infinity, no ``$`` keys, limited depth."""
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, InvalidPatchError):
            raise
        raise InvalidPatchError(f"patch is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidPatchError("a twin patch must be a JSON object")
    value.pop("$version", None)  # clients may echo it; IoT Hub ignores it in a patch
    check_patch(value)
    return value


def check_patch(patch: Any, depth: int = 1) -> None:
    """Raise InvalidPatchError unless ``patch`` is an object of allowed keys and values."""
    if not isinstance(patch, dict):
        raise InvalidPatchError("a twin patch must be a JSON object")
    if depth > MAX_DEPTH:
        raise InvalidPatchError(f"twin objects nest at most {MAX_DEPTH} deep")
    for key, value in patch.items():
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
            raise InvalidPatchError(f"invalid property name {key!r}")
        if _BAD_KEY_CHARS & set(key):
            raise InvalidPatchError(f"property name {key!r} contains '.', '$', space or control")
        _check_value(value, depth)


def _check_value(value: Any, depth: int) -> None:
    if isinstance(value, dict):
        check_patch(value, depth + 1)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                check_patch(item, depth + 1)
            else:
                _check_value(item, depth)
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidPatchError("NaN and Infinity are not valid twin values")
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise InvalidPatchError(f"unsupported twin value type {type(value).__name__}")


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """JSON merge patch, in place: ``null`` deletes, objects merge, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    _strip_nulls(target)


def _strip_nulls(obj: dict[str, Any]) -> None:
    for key in [k for k, v in obj.items() if v is None]:
        del obj[key]
    for value in obj.values():
        if isinstance(value, dict):
            _strip_nulls(value)


class TwinStore:
    """Twins of every identity, persisted to ``path``. Thread-safe."""

    def __init__(self, path: str | Path) -> None:
        """Load the twins at ``path`` (an absent file means no twins yet)."""
        self._path = Path(path)
        self._lock = threading.Lock()
        self._twins: dict[str, dict[str, Any]] = {}
        if self._path.exists():
            self._twins = json.loads(self._path.read_text("utf-8"))

    def _entry(self, identity: Identity) -> dict[str, Any]:
        return self._twins.setdefault(
            identity.client_id,
            {"desired": {}, "reported": {}, "desiredVersion": 1, "reportedVersion": 1},
        )

    def _save(self) -> None:
        private_dir(self._path.parent)
        write_file(self._path, json.dumps(self._twins, sort_keys=True))

    def device_view(self, identity: Identity) -> dict[str, Any]:
        """The twin as the device sees it on ``$iothub/twin/res/200``."""
        with self._lock:
            entry = self._entry(identity)
            desired = copy.deepcopy(entry["desired"])
            desired["$version"] = entry["desiredVersion"]
            reported = copy.deepcopy(entry["reported"])
            reported["$version"] = entry["reportedVersion"]
            return {"desired": desired, "reported": reported}

    def service_view(self, identity: Identity) -> dict[str, Any]:
        """The twin as ``az iot hub module-twin show`` prints it (the fields we keep)."""
        view = self.device_view(identity)
        out: dict[str, Any] = {"deviceId": identity.device_id}
        if identity.module_id:
            out["moduleId"] = identity.module_id
        out["version"] = view["desired"]["$version"] + view["reported"]["$version"]
        out["properties"] = view
        return out

    def _patch(self, identity: Identity, section: str, patch: dict[str, Any]) -> int:
        check_patch(patch)
        with self._lock:
            entry = self._entry(identity)
            updated = copy.deepcopy(entry[section])
            merge(updated, patch)
            if len(json.dumps(updated).encode("utf-8")) > MAX_SECTION_BYTES:
                raise InvalidPatchError(f"{section} properties would exceed 32 KB")
            entry[section] = updated
            entry[f"{section}Version"] += 1
            self._save()
            return int(entry[f"{section}Version"])

    def patch_desired(self, identity: Identity, patch: dict[str, Any]) -> int:
        """Apply a desired patch; return the new desired ``$version``."""
        return self._patch(identity, "desired", patch)

    def patch_reported(self, identity: Identity, patch: dict[str, Any]) -> int:
        """Apply a reported patch; return the new reported ``$version``."""
        return self._patch(identity, "reported", patch)

    def remove(self, identity: Identity) -> None:
        """Forget the twin of ``identity`` (its device or module was deleted)."""
        with self._lock:
            if self._twins.pop(identity.client_id, None) is not None:
                self._save()
