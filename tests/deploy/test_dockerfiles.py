"""The module's Dockerfiles agree with module.json and keep the image's promises.

No Docker engine runs here, so nothing is built: these tests read the Dockerfiles with
dockerfile-parse and check what a build would do, instruction by instruction.
"""

from __future__ import annotations

import io
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

from .manifest_rules import EDGE, MODULE, STATE_DIR

MODULE_DIR = EDGE / "modules" / MODULE
MODULE_JSON = json.loads((MODULE_DIR / "module.json").read_text(encoding="utf-8"))
PLATFORMS: dict[str, str] = MODULE_JSON["image"]["tag"]["platforms"]
# Docker Hub's per-architecture namespaces of the official python image, one per platform.
BASE_IMAGE = re.compile(r"^(?P<arch>amd64|arm32v7|arm64v8)/python:3\.11-slim-bookworm$")
PI_PLATFORMS = ("arm32v7", "arm64v8")


def _parse(platform: str) -> DockerfileParser:
    path = MODULE_DIR / PLATFORMS[platform]
    return DockerfileParser(fileobj=io.BytesIO(path.read_bytes()))


def _instructions(platform: str) -> list[dict[str, Any]]:
    return [i for i in _parse(platform).structure if i["instruction"] != "COMMENT"]


def _index(instructions: list[dict[str, Any]], instruction: str, needle: str) -> int:
    for n, item in enumerate(instructions):
        if item["instruction"] == instruction and needle in item["value"]:
            return n
    raise AssertionError(f"no {instruction} with {needle!r}")


def test_module_json_lists_every_platform_with_a_debug_variant() -> None:
    """module.json names amd64, arm32v7 and arm64v8, each with .debug, and the files exist."""
    expected = {f"{p}{d}" for p in ("amd64", "arm32v7", "arm64v8") for d in ("", ".debug")}
    assert set(PLATFORMS) == expected
    for platform, dockerfile in PLATFORMS.items():
        assert dockerfile == f"./Dockerfile.{platform}"
        assert (MODULE_DIR / dockerfile).is_file(), dockerfile
    assert MODULE_JSON["image"]["repository"] == "${CONTAINER_REGISTRY_SERVER}/enviro_sensor"
    assert MODULE_JSON["image"]["contextPath"] == "./"


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_base_image_is_the_platforms_python_311_slim(platform: str) -> None:
    """One FROM, the official python 3.11 slim bookworm image of exactly this architecture."""
    froms = [i["value"] for i in _instructions(platform) if i["instruction"] == "FROM"]
    assert len(froms) == 1, froms
    match = BASE_IMAGE.match(froms[0])
    assert match, froms[0]
    assert match["arch"] == platform.removesuffix(".debug")


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_runs_as_a_non_root_uid_in_the_device_groups(platform: str) -> None:
    """USER is a numeric non-root uid without a group, and that user is in i2c and gpio."""
    instructions = _instructions(platform)
    users = [i["value"] for i in instructions if i["instruction"] == "USER"]
    assert len(users) == 1, users
    # USER uid:gid would drop the supplementary groups (Docker's USER reference), so no ':'.
    assert re.fullmatch(r"[1-9][0-9]*", users[0]), users[0]
    user_at = [i["instruction"] for i in instructions].index("USER")
    assert all(i["instruction"] != "RUN" for i in instructions[user_at:]), "RUN after USER"
    setup = instructions[_index(instructions, "RUN", "useradd")]["value"]
    useradd = shlex.split(setup.split("useradd", 1)[1].split("&&")[0])
    assert useradd[useradd.index("--uid") + 1] == users[0]
    assert useradd[useradd.index("--groups") + 1] == "i2c,gpio"
    args = _parse(platform).args
    assert (args["I2C_GID"], args["GPIO_GID"]) == ("998", "997")  # Raspberry Pi OS's ids


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_dependencies_are_installed_before_the_code_is_copied(platform: str) -> None:
    """A code change reuses the dependency layer: requirements first, then the source."""
    instructions = _instructions(platform)
    reqs = _index(instructions, "COPY", "requirements.txt")
    install = _index(instructions, "RUN", "pip install -r requirements.txt")
    source = _index(instructions, "COPY", "src")
    project = _index(instructions, "COPY", "pyproject.toml")
    assert reqs < install < min(source, project)
    assert "src" not in instructions[reqs]["value"]
    final = instructions[_index(instructions, "RUN", "pip install --no-deps .")]["value"]
    assert "pip check" in final  # the pins and pyproject's ranges must agree


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_pi_images_install_lgpio_and_the_pc_image_does_not(platform: str) -> None:
    """gpiozero on Bookworm / a Pi 5 needs lgpio: the arm images install requirements-pi.txt."""
    install = " ".join(
        i["value"] for i in _instructions(platform) if i["instruction"] in ("COPY", "RUN")
    )
    if platform.removesuffix(".debug") in PI_PLATFORMS:
        assert "-r requirements-pi.txt" in install
        assert "requirements-pi.txt" in install.split("pip install", 1)[0]  # copied first
    else:
        assert "requirements-pi.txt" not in install


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_state_is_on_the_volume_and_matches_the_deployment(platform: str) -> None:
    """ENVIRO_STATE_DIR is the VOLUME, and the same folder the deployment binds and sets."""
    parser = _parse(platform)
    assert parser.envs["ENVIRO_STATE_DIR"] == STATE_DIR
    volumes = [i["value"] for i in _instructions(platform) if i["instruction"] == "VOLUME"]
    assert [json.loads(v) for v in volumes] == [[STATE_DIR]]
    template = json.loads((EDGE / "deployment.template.json").read_text(encoding="utf-8"))
    module = template["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"][MODULE]
    assert module["env"]["ENVIRO_STATE_DIR"]["value"] == STATE_DIR
    # lgpio opens its notification pipe in the working directory at import: it must not be
    # the state volume's parent nor a root-owned folder. /app/run is made for the user.
    workdirs = [i["value"] for i in _instructions(platform) if i["instruction"] == "WORKDIR"]
    assert workdirs[-1] == "/app/run"
    assert (
        "/app/run"
        in _instructions(platform)[_index(_instructions(platform), "RUN", "install -d")]["value"]
    )


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_entry_point_and_debugger(platform: str) -> None:
    """Release images run enviro-sensor; debug images run it under debugpy on port 5678."""
    parser = _parse(platform)
    cmd = json.loads(parser.cmd)
    if platform.endswith(".debug"):
        assert cmd == ["python", "-m", "debugpy", "--listen", "0.0.0.0:5678", "-m",
                       "enviro_sensor.cli"]  # fmt: skip
        assert "debugpy==" in parser.content
        assert re.search(r"^EXPOSE 5678$", parser.content, re.MULTILINE)
    else:
        assert cmd == ["enviro-sensor"]
        assert "debugpy" not in parser.content
        assert "EXPOSE" not in parser.content


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_no_secrets_in_the_image(platform: str) -> None:
    """No ENV or ARG carries a password, key, token or connection string."""
    parser = _parse(platform)
    secretish = re.compile(r"PASSWORD|SECRET|TOKEN|KEY|CONNECTION_STRING|SAS", re.IGNORECASE)
    assert [k for k in {**parser.envs, **parser.args} if secretish.search(k)] == []


def test_dockerfiles_differ_only_where_the_platform_or_debugger_needs() -> None:
    """All six files are one recipe: only FROM, lgpio, debugpy and CMD may differ."""

    def normalised(platform: str) -> list[str]:
        out = []
        for item in _instructions(platform):
            value = item["value"].replace(" -r requirements-pi.txt", "")
            value = value.replace(" requirements-pi.txt", "")
            if item["instruction"] in ("FROM", "CMD", "EXPOSE") or "debugpy" in value:
                continue
            out.append(f"{item['instruction']} {value}")
        return out

    reference = normalised("amd64")
    for platform in PLATFORMS:
        assert normalised(platform) == reference, platform


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    """The build context excludes everything but the requirements, pyproject, README and src."""
    lines = (MODULE_DIR / ".dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*"
    allowed = {line[1:].rstrip("/") for line in rules if line.startswith("!")}
    copied: set[str] = set()
    for platform in PLATFORMS:
        for item in _instructions(platform):
            if item["instruction"] == "COPY":
                copied.update(Path(p).as_posix() for p in item["value"].split()[:-1])
    assert copied == allowed


def test_enviro_variables_set_by_images_and_deployments_are_known() -> None:
    """Every ENVIRO_* the images or templates set is in the module's table (no silent typo)."""
    from enviro_sensor.envvars import PREFIX, known_names

    names = {k for p in PLATFORMS for k in _parse(p).envs if k.startswith(PREFIX)}
    for template in ("deployment.template.json", "deployment.debug.template.json"):
        manifest = json.loads((EDGE / template).read_text(encoding="utf-8"))
        module = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"][MODULE]
        names |= {k for k in module["env"] if k.startswith(PREFIX)}
    assert names == {"ENVIRO_STATE_DIR", "ENVIRO_LOG_LEVEL"}
    assert names <= known_names()


def test_both_commands_start_the_modules_entry_point() -> None:
    """`enviro-sensor` is the package's console script, and `-m enviro_sensor.cli` runs main."""
    import subprocess
    import sys
    import tomllib

    project = tomllib.loads((MODULE_DIR / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["scripts"]["enviro-sensor"] == "enviro_sensor.cli:main"
    done = subprocess.run(
        [sys.executable, "-m", "enviro_sensor.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: enviro-sensor" in done.stdout
