"""Our manifest checks refuse what iotedgedev lets through offline, each with a clear message."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .manifest_rules import (
    CHUNK_MAX,
    EDGE,
    MODULE,
    all_modules,
    check_manifest,
    create_options,
    schema_errors,
)


def _expand(template: dict[str, Any]) -> dict[str, Any]:
    """What genconfig does that matters here: stringify createOptions, fill the placeholders."""
    manifest = copy.deepcopy(template)
    manifest.pop("$schema-template")
    for module in all_modules(manifest).values():
        settings = module["settings"]
        settings["createOptions"] = json.dumps(settings["createOptions"], separators=(",", ":"))
        settings["image"] = settings["image"].replace(
            "${MODULES.enviro_sensor}", "registry.example.test/enviro_sensor:0.1.0-arm64v8"
        )
    text = json.dumps(manifest)
    for name in ("SERVER", "USERNAME", "PASSWORD"):
        text = text.replace("${CONTAINER_REGISTRY_" + name + "}", "x")
    return json.loads(text)


AGENT = "modulesContent/$edgeAgent/properties.desired"
BASE = _expand(json.loads((EDGE / "deployment.template.json").read_text(encoding="utf-8")))


def _module(manifest: dict[str, Any]) -> dict[str, Any]:
    return all_modules(manifest)[MODULE]


def _with_options(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """The base manifest with the module's createOptions changed by ``change``."""
    manifest = copy.deepcopy(BASE)
    settings = _module(manifest)["settings"]
    options = json.loads(settings["createOptions"])
    change(options)
    settings["createOptions"] = json.dumps(options, separators=(",", ":"))
    return manifest


def test_the_base_manifest_passes() -> None:
    """The hand-expanded template passes both, so every failure below is the change's doing."""
    assert schema_errors(BASE) == []
    assert check_manifest(BASE) == []


@pytest.mark.parametrize("value", [True, "notabool", False, 1])
def test_privileged_is_refused_whatever_its_value(value: object) -> None:
    """Privileged in createOptions fails, even as false or a junk string iotedgedev accepts."""
    manifest = _with_options(lambda o: o["HostConfig"].__setitem__("Privileged", value))
    problems = check_manifest(manifest)
    assert problems == [
        "enviro_sensor: createOptions HostConfig.Privileged is set; a module never runs "
        "privileged (map the devices it needs under HostConfig.Devices instead)"
    ]


def test_privileged_is_refused_in_system_modules_too() -> None:
    """edgeHub is checked as well as our module."""
    manifest = copy.deepcopy(BASE)
    hub = all_modules(manifest)["edgeHub"]["settings"]
    hub["createOptions"] = json.dumps({"HostConfig": {"Privileged": True}})
    assert any(
        p.startswith("edgeHub: createOptions HostConfig.Privileged")
        for p in check_manifest(manifest)
    )


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=6,
    ),
    st.sampled_from(["Privileged", "privileged", "PRIVILEGED"]),
)
def test_privileged_is_found_at_any_depth_with_any_value(value: object, key: str) -> None:
    """Any value under a Privileged key, in any letter case, is reported."""
    manifest = _with_options(lambda o: o["HostConfig"].__setitem__("Extra", {key: value}))
    assert any("never runs privileged" in p for p in check_manifest(manifest))


def test_missing_i2c_device_is_refused() -> None:
    """Without /dev/i2c-1 mapped the sensor cannot be read: a clear message says so."""

    def drop(options: dict[str, Any]) -> None:
        devices = options["HostConfig"]["Devices"]
        options["HostConfig"]["Devices"] = [d for d in devices if d["PathOnHost"] != "/dev/i2c-1"]

    assert check_manifest(_with_options(drop)) == [
        "enviro_sensor: /dev/i2c-1 is not mapped (HostConfig.Devices)"
    ]


def test_device_mapped_elsewhere_or_with_mknod_is_refused() -> None:
    """The device must keep its path inside the container, and needs no mknod right."""

    def move(options: dict[str, Any]) -> None:
        options["HostConfig"]["Devices"][0]["PathInContainer"] = "/dev/i2c-9"
        options["HostConfig"]["Devices"][1]["CgroupPermissions"] = "rwm"

    assert check_manifest(_with_options(move)) == [
        "enviro_sensor: /dev/i2c-1 must appear as /dev/i2c-1 in the container",
        "enviro_sensor: /dev/gpiochip0 needs CgroupPermissions 'rw', not mknod ('m')",
    ]


def test_missing_state_bind_and_env_are_refused() -> None:
    """State must live on a host folder at /app/state, and the module must be told so."""
    manifest = _with_options(lambda o: o["HostConfig"].__setitem__("Binds", []))
    del _module(manifest)["env"]["ENVIRO_STATE_DIR"]
    assert check_manifest(manifest) == [
        "enviro_sensor: no host folder bound at /app/state (HostConfig.Binds)",
        "enviro_sensor: env ENVIRO_STATE_DIR must be '/app/state', not None",
    ]


def test_host_namespaces_cap_add_and_docker_socket_are_refused() -> None:
    """Other ways to be root on the host are refused as firmly as Privileged."""

    def widen(options: dict[str, Any]) -> None:
        host = options["HostConfig"]
        host.update(NetworkMode="host", PidMode="host", CapAdd=["SYS_RAWIO"])
        host["Binds"].append("/var/run/docker.sock:/var/run/docker.sock")

    assert check_manifest(_with_options(widen)) == [
        "enviro_sensor: HostConfig.CapAdd ['SYS_RAWIO']: the module needs none",
        "enviro_sensor: HostConfig.NetworkMode is 'host'; keep the module in its own",
        "enviro_sensor: HostConfig.PidMode is 'host'; keep the module in its own",
        "enviro_sensor: binds the Docker socket, which is root on the host",
    ]


def test_missing_route_is_refused() -> None:
    """Telemetry that is not routed upstream never leaves the Pi."""
    manifest = copy.deepcopy(BASE)
    manifest["modulesContent"]["$edgeHub"]["properties.desired"]["routes"] = {
        "all": "FROM /messages/modules/other/outputs/* INTO $upstream"
    }
    assert check_manifest(manifest) == [
        "$edgeHub: no route 'FROM /messages/modules/enviro_sensor/outputs/telemetry INTO $upstream'"
    ]


def test_invalid_create_options_json_is_refused() -> None:
    """A createOptions string that is not JSON names the module and the parse error."""
    manifest = copy.deepcopy(BASE)
    _module(manifest)["settings"]["createOptions"] = '{"HostConfig": '
    problems = check_manifest(manifest)
    assert problems[0].startswith("enviro_sensor: createOptions is not valid JSON (")


def test_create_options_chunks_are_joined_and_bounded() -> None:
    """Chunks of 512 join into one document; an overlong chunk or total is reported."""
    text = _module(BASE)["settings"]["createOptions"]
    chunks = [text[i : i + 100] for i in range(0, len(text), 100)]
    settings = {"createOptions": chunks[0]} | {
        f"createOptions{i:02d}": c for i, c in enumerate(chunks[1:], start=1)
    }
    options, problems = create_options(MODULE, {"settings": settings})
    assert (options, problems) == (json.loads(text), [])
    padded = {"createOptions": text[:-1] + " " * CHUNK_MAX + "}"}
    _, problems = create_options(MODULE, {"settings": padded})
    assert problems == [
        f"{MODULE}: createOptions is {len(padded['createOptions'])} characters; a chunk holds 512"
    ]
    gap = {"createOptions": text, "createOptions02": "{}", "createOptions08": "{}"}
    _, problems = create_options(MODULE, {"settings": gap})
    assert problems == [
        f"{MODULE}: createOptions02, createOptions08 out of sequence (createOptions, 01 ... 07)"
    ]


def test_unexpanded_placeholder_is_refused() -> None:
    """A ${...} left in the manifest means genconfig lacked a variable: the path is named."""
    manifest = copy.deepcopy(BASE)
    _module(manifest)["settings"]["image"] = "${MODULES.enviro_sensor}"
    assert check_manifest(manifest) == [
        "modulesContent.$edgeAgent.properties.desired.modules.enviro_sensor.settings.image: "
        "unexpanded placeholder '${MODULES.enviro_sensor}'"
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda m: m["modulesContent"]["$edgeAgent"]["properties.desired"].update(
                schemaVersion="1.0"
            ),
            f"{AGENT}/schemaVersion: '1.1' was expected",
        ),
        (
            lambda m: _module(m)["settings"].update(createOptions={"HostConfig": {}}),
            f"{AGENT}/modules/enviro_sensor/settings/createOptions: "
            "{'HostConfig': {}} is not of type 'string'",
        ),
        (
            lambda m: _module(m).update(restartPolicy="sometimes"),
            f"{AGENT}/modules/enviro_sensor/restartPolicy: "
            "'sometimes' is not one of ['never', 'on-failure', 'on-unhealthy', 'always']",
        ),
        (
            lambda m: m["modulesContent"]["$edgeHub"]["properties.desired"].pop(
                "storeAndForwardConfiguration"
            ),
            "modulesContent/$edgeHub/properties.desired: "
            "'storeAndForwardConfiguration' is a required property",
        ),
        (
            lambda m: _module(m).update(Privilegd=True),
            f"{AGENT}/modules/enviro_sensor: "
            "Additional properties are not allowed ('Privilegd' was unexpected)",
        ),
    ],
    ids=["agent-schema-version", "create-options-object", "restart-policy", "no-ttl", "typo-key"],
)
def test_schema_refuses_a_broken_manifest(
    change: Callable[[dict[str, Any]], object], expected: str
) -> None:
    """The manifest schema catches the mistakes the runtime would reject or silently ignore."""
    manifest = copy.deepcopy(BASE)
    change(manifest)
    assert schema_errors(manifest) == [expected]


def test_host_config_of_the_wrong_type_is_reported_not_raised() -> None:
    """A HostConfig that is a list is one clear problem per missing piece, never a traceback."""
    manifest = _with_options(lambda o: o.__setitem__("HostConfig", ["Privileged"]))
    assert check_manifest(manifest) == [
        "enviro_sensor: createOptions HostConfig must be an object",
        "enviro_sensor: /dev/i2c-1 is not mapped (HostConfig.Devices)",
        "enviro_sensor: /dev/gpiochip0 is not mapped (HostConfig.Devices)",
        "enviro_sensor: no host folder bound at /app/state (HostConfig.Binds)",
    ]
