"""iotedgedev expands our templates for every platform; the results pass the schema and our rules.

Offline, iotedgedev cannot fetch its own JSON Schemas: it logs "skip schema validation" and exits
0 whatever the manifest says (even ``"Privileged": "notabool"``). So its run proves expansion only;
the validation is ours (``edge/schema/deployment-manifest.schema.json`` and manifest_rules).
"""

from __future__ import annotations

import json

import pytest

from .conftest import CASES, ENV_FILE, Expanded, Genconfig, case_id
from .manifest_rules import (
    EDGE,
    MODULE,
    all_modules,
    check_manifest,
    create_options,
    schema_errors,
)

MODULE_JSON = json.loads((EDGE / "modules" / MODULE / "module.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_expanded_manifest_matches_the_schema(expanded: dict, case: tuple[str, bool]) -> None:
    """Every expanded manifest validates against our manifest schema."""
    assert schema_errors(expanded[case].manifest) == []


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_expanded_manifest_follows_our_rules(expanded: dict, case: tuple[str, bool]) -> None:
    """Never privileged, I2C and GPIO mapped, state bound, telemetry routed upstream."""
    assert check_manifest(expanded[case].manifest) == []


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_image_is_the_platforms_own(expanded: dict, case: tuple[str, bool]) -> None:
    """The module's image is module.json's repository, version and this platform's tag."""
    result: Expanded = expanded[case]
    image = all_modules(result.manifest)[MODULE]["settings"]["image"]
    tag = MODULE_JSON["image"]["tag"]
    repository = MODULE_JSON["image"]["repository"].replace(
        "${CONTAINER_REGISTRY_SERVER}", ENV_FILE["CONTAINER_REGISTRY_SERVER"]
    )
    suffix = ".debug" if result.debug else ""
    assert image == f"{repository}:{tag['version']}-{result.platform}{suffix}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_registry_credentials_come_from_env(expanded: dict, case: tuple[str, bool]) -> None:
    """The .env values land in registryCredentials (so config/ must never be committed)."""
    runtime = expanded[case].manifest["modulesContent"]["$edgeAgent"]["properties.desired"]
    creds = list(runtime["runtime"]["settings"]["registryCredentials"].values())
    assert creds == [
        {
            "username": ENV_FILE["CONTAINER_REGISTRY_USERNAME"],
            "password": ENV_FILE["CONTAINER_REGISTRY_PASSWORD"],
            "address": ENV_FILE["CONTAINER_REGISTRY_SERVER"],
        }
    ]


def test_debug_port_is_published_on_loopback_only(expanded: dict) -> None:
    """The debug manifests publish debugpy's port on the Pi's 127.0.0.1, the others not at all."""
    for (platform, debug), result in expanded.items():
        options, _ = create_options(MODULE, all_modules(result.manifest)[MODULE])
        bindings = options.get("HostConfig", {}).get("PortBindings", {})
        if debug:
            assert bindings == {"5678/tcp": [{"HostIp": "127.0.0.1", "HostPort": "5678"}]}, platform
        else:
            assert bindings == {}, platform
            assert "ExposedPorts" not in options, platform


def test_release_and_debug_differ_only_in_image_port_and_log_level(expanded: dict) -> None:
    """The debug manifest is the release one plus the debugger: no other drift between them."""
    for platform in {p for p, _ in expanded}:
        release = json.loads(json.dumps(expanded[(platform, False)].manifest))
        debug = json.loads(json.dumps(expanded[(platform, True)].manifest))
        for manifest in (release, debug):
            module = all_modules(manifest)[MODULE]
            options, _ = create_options(MODULE, module)
            options.pop("ExposedPorts", None)
            options["HostConfig"].pop("PortBindings", None)
            settings = module["settings"]
            for key in [k for k in settings if k.startswith("createOptions")]:
                del settings[key]
            settings["createOptions"] = options
            settings["image"] = settings["image"].removesuffix(".debug")
            module["env"].pop("ENVIRO_LOG_LEVEL", None)
        assert debug == release, platform


def test_iotedgedev_alone_lets_a_privileged_module_through(genconfig: Genconfig) -> None:
    """iotedgedev --fail-on-validation-error passes "Privileged": "notabool"; ours refuse it."""
    template = json.loads((EDGE / "deployment.template.json").read_text(encoding="utf-8"))
    module = template["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"][MODULE]
    module["settings"]["createOptions"]["HostConfig"]["Privileged"] = "notabool"
    (genconfig.solution / "privileged.template.json").write_text(json.dumps(template))
    manifest, _ = genconfig.run("privileged.template.json", "arm64v8")  # exit 0 is asserted
    assert check_manifest(manifest) == [
        "enviro_sensor: createOptions HostConfig.Privileged is set; a module never runs "
        "privileged (map the devices it needs under HostConfig.Devices instead)"
    ]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_module_create_options_fit_one_chunk(expanded: dict, case: tuple[str, bool]) -> None:
    """Our createOptions stay under 512 characters, so genconfig never splits them.

    A split manifest (createOptions01 ...) is valid for the agent but refused by tools that do
    not join chunks, such as IoT Central (vscode-azure-iot-edge issue #580).
    """
    for name, module in all_modules(expanded[case].manifest).items():
        assert [k for k in module["settings"] if k.startswith("createOptions0")] == [], name
