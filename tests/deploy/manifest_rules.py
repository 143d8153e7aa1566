"""Our rules for an expanded IoT Edge deployment manifest, on top of its JSON Schema.

The schema (``edge/schema/deployment-manifest.schema.json``) says what the runtime accepts; these
rules say what *we* accept for enviro_sensor: never privileged, only the devices it needs, its
state on a host folder, its telemetry routed upstream. Each problem is one sentence naming the
module and the fix, so a failing test (or a hand-edited manifest) reads as a to-do list.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema

REPO = Path(__file__).resolve().parents[2]
EDGE = REPO / "edge"
SCHEMA_PATH = EDGE / "schema" / "deployment-manifest.schema.json"

MODULE = "enviro_sensor"
STATE_DIR = "/app/state"
REQUIRED_DEVICES = ("/dev/i2c-1", "/dev/gpiochip0")
TELEMETRY_ROUTE = f"FROM /messages/modules/{MODULE}/outputs/telemetry INTO $upstream"

# createOptions is a string in the agent's twin, at most 512 characters a chunk (a twin value's
# old limit), up to 8 chunks (createOptions, createOptions01 ... createOptions07) that the agent
# joins: 4 KB in all (Azure/iotedge#396).
CHUNK_MAX = 512
CHUNKS_MAX = 8

# Capabilities the module needs beyond Docker's defaults: none (I2C and GPIO are character
# devices; the device cgroup rule and the i2c/gpio group are all it takes).
ALLOWED_CAP_ADD: frozenset[str] = frozenset()
PLACEHOLDER = re.compile(r"\$\{[^}]*\}")


def schema_errors(manifest: Any) -> list[str]:
    """Every way ``manifest`` breaks the manifest schema, as "path: message" lines."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.path)))
    return [f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors]


def all_modules(manifest: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """System and custom modules of the agent's desired properties, by name."""
    desired = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]
    return {**desired.get("systemModules", {}), **desired.get("modules", {})}


def create_options(name: str, module: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The module's createOptions chunks joined and parsed, and the problems found doing it."""
    settings = module.get("settings", {})
    chunks: list[str] = []
    problems: list[str] = []
    for i in range(CHUNKS_MAX):
        key = "createOptions" if i == 0 else f"createOptions{i:02d}"
        if key not in settings:
            break
        value = settings[key]
        if not isinstance(value, str):
            problems.append(f"{name}: {key} must be a string (stringified JSON)")
            return {}, problems
        if len(value) > CHUNK_MAX:
            problems.append(f"{name}: {key} is {len(value)} characters; a chunk holds {CHUNK_MAX}")
        chunks.append(value)
    extra = sorted(
        k for k in settings if k.startswith("createOptions") and k not in _chunk_keys(len(chunks))
    )
    if extra:
        problems.append(f"{name}: {', '.join(extra)} out of sequence (createOptions, 01 ... 07)")
    text = "".join(chunks)
    if not text:
        return {}, problems
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        problems.append(f"{name}: createOptions is not valid JSON ({exc})")
        return {}, problems
    if not isinstance(parsed, dict):
        problems.append(f"{name}: createOptions must be a JSON object")
        return {}, problems
    return parsed, problems


def _chunk_keys(count: int) -> set[str]:
    return {"createOptions" if i == 0 else f"createOptions{i:02d}" for i in range(count)}


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (path, value) pair in a JSON document, keys and leaves alike."""
    yield path, value
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]")


def check_manifest(manifest: Mapping[str, Any], *, module: str = MODULE) -> list[str]:
    """Our rules for an expanded manifest; an empty list means it passes."""
    problems: list[str] = []
    for path, value in _walk(manifest):
        if isinstance(value, str) and PLACEHOLDER.search(value):
            problems.append(f"{path}: unexpanded placeholder {PLACEHOLDER.search(value)[0]!r}")
    try:
        modules = all_modules(manifest)
    except (KeyError, TypeError):
        return [*problems, "modulesContent.$edgeAgent.properties.desired is missing"]
    for name, entry in modules.items():
        options, found = create_options(name, entry)
        problems.extend(found)
        problems.extend(_privilege_problems(name, options))
    if module not in modules:
        return [*problems, f"{module}: not in $edgeAgent modules"]
    entry = modules[module]
    options, _ = create_options(module, entry)
    problems.extend(_device_problems(module, options))
    problems.extend(_state_problems(module, entry, options))
    problems.extend(_route_problems(manifest))
    return problems


def _privilege_problems(name: str, options: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    for path, _ in _walk(options):
        if path.rsplit(".", 1)[-1].lower() == "privileged":
            problems.append(
                f"{name}: createOptions {path} is set; a module never runs privileged "
                "(map the devices it needs under HostConfig.Devices instead)"
            )
    host = options.get("HostConfig", {})
    if not isinstance(host, Mapping):
        return [*problems, f"{name}: createOptions HostConfig must be an object"]
    cap_add = set(host.get("CapAdd") or [])
    if name == MODULE and cap_add - ALLOWED_CAP_ADD:
        problems.append(f"{name}: HostConfig.CapAdd {sorted(cap_add)}: the module needs none")
    for key in ("NetworkMode", "PidMode", "IpcMode", "UsernsMode"):
        if str(host.get(key, "")).lower() == "host":
            problems.append(f"{name}: HostConfig.{key} is 'host'; keep the module in its own")
    for bind in host.get("Binds") or []:
        if str(bind).split(":", 1)[0].rstrip("/") in ("/var/run/docker.sock", "/run/docker.sock"):
            problems.append(f"{name}: binds the Docker socket, which is root on the host")
    return problems


def _host(options: Mapping[str, Any]) -> Mapping[str, Any]:
    """HostConfig, or {} when it is missing or not an object (reported by the privilege check)."""
    host = options.get("HostConfig", {})
    return host if isinstance(host, Mapping) else {}


def _device_problems(name: str, options: Mapping[str, Any]) -> list[str]:
    devices = _host(options).get("Devices") or []
    mapped = {
        d.get("PathOnHost"): d for d in devices if isinstance(d, Mapping) and d.get("PathOnHost")
    }
    problems = []
    for path in REQUIRED_DEVICES:
        device = mapped.get(path)
        if device is None:
            problems.append(f"{name}: {path} is not mapped (HostConfig.Devices)")
        elif device.get("PathInContainer", path) != path:
            problems.append(f"{name}: {path} must appear as {path} in the container")
        elif "m" in str(device.get("CgroupPermissions", "rw")):
            problems.append(f"{name}: {path} needs CgroupPermissions 'rw', not mknod ('m')")
    return problems


def _state_problems(name: str, entry: Mapping[str, Any], options: Mapping[str, Any]) -> list[str]:
    host = _host(options)
    binds = [str(b).split(":") for b in host.get("Binds") or []]
    mounts = [m for m in host.get("Mounts") or [] if isinstance(m, Mapping)]
    bound = any(len(b) >= 2 and b[0].startswith("/") and b[1] == STATE_DIR for b in binds) or any(
        m.get("Target") == STATE_DIR and m.get("Type") == "bind" for m in mounts
    )
    problems = []
    if not bound:
        problems.append(f"{name}: no host folder bound at {STATE_DIR} (HostConfig.Binds)")
    state_env = entry.get("env", {}).get("ENVIRO_STATE_DIR", {}).get("value")
    if state_env != STATE_DIR:
        problems.append(f"{name}: env ENVIRO_STATE_DIR must be {STATE_DIR!r}, not {state_env!r}")
    return problems


def _route_problems(manifest: Mapping[str, Any]) -> list[str]:
    hub = manifest["modulesContent"].get("$edgeHub", {}).get("properties.desired", {})
    routes = hub.get("routes", {})
    statements = [r.get("route", "") if isinstance(r, Mapping) else r for r in routes.values()]
    if not any(" ".join(str(s).split()) == TELEMETRY_ROUTE for s in statements):
        return [f"$edgeHub: no route {TELEMETRY_ROUTE!r}"]
    return []
