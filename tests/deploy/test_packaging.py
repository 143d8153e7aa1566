"""The module's package metadata, its image pins and the template's twin defaults agree."""

from __future__ import annotations

import json
import tomllib

import pytest
from enviro_sensor.config import ModuleConfig
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from .manifest_rules import EDGE, MODULE, REPO

MODULE_DIR = EDGE / "modules" / MODULE
PROJECT = tomllib.loads((MODULE_DIR / "pyproject.toml").read_text(encoding="utf-8"))["project"]
IMAGE_PYTHON = Version("3.11")  # the Dockerfiles' python:3.11-slim-bookworm


def _pins(name: str) -> dict[str, Version]:
    """name -> pinned version of a requirements file (options and comments skipped)."""
    pins = {}
    for line in (MODULE_DIR / name).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f"{name}: {line} is not pinned"
        pins[req.name.lower()] = Version(spec.version)
    return pins


def test_requires_python_is_311_and_the_image_has_it() -> None:
    """The code needs 3.11 (datetime.UTC); metadata says so and the image's Python fits it."""
    spec = SpecifierSet(PROJECT["requires-python"])
    assert IMAGE_PYTHON in spec
    assert Version("3.10") not in spec


def test_image_pins_satisfy_the_package_dependencies() -> None:
    """requirements.txt pins each runtime dependency at a version pyproject accepts."""
    pins = _pins("requirements.txt")
    for line in PROJECT["dependencies"]:
        req = Requirement(line)
        assert req.name.lower() in pins, f"{req.name} is not pinned in requirements.txt"
        assert pins[req.name.lower()] in req.specifier, f"{req.name}=={pins[req.name.lower()]}"


def test_gpiozero_floor_is_the_first_release_that_finds_a_pi_5s_gpiochip0() -> None:
    """gpiozero 2.0.1 and older open gpiochip4 on every Pi 5; post1 checks it exists first."""
    (gpiozero,) = [Requirement(d) for d in PROJECT["dependencies"] if d.startswith("gpiozero")]
    assert Version("2.0.1") not in gpiozero.specifier
    assert Version("2.0.1.post1") in gpiozero.specifier


def test_pi_extra_and_pi_image_pin_lgpio() -> None:
    """The pi extra asks for lgpio; the Pi images pin a release that has real wheels."""
    (extra,) = [Requirement(r) for r in PROJECT["optional-dependencies"]["pi"]]
    assert extra.name == "lgpio"
    pins = _pins("requirements-pi.txt")
    assert list(pins) == ["lgpio"]
    assert pins["lgpio"] in extra.specifier
    # lgpio 0.0.0.2 on PyPI is an empty placeholder wheel: the floor must exclude it.
    assert Version("0.0.0.2") not in extra.specifier
    options = (MODULE_DIR / "requirements-pi.txt").read_text(encoding="utf-8").splitlines()
    assert "--only-binary lgpio" in options


def test_image_tag_version_is_the_package_version() -> None:
    """module.json's tag version follows the package version, so images name the code in them."""
    module_json = json.loads((MODULE_DIR / "module.json").read_text(encoding="utf-8"))
    assert module_json["image"]["tag"]["version"] == PROJECT["version"]


def test_template_twin_defaults_are_the_modules_defaults() -> None:
    """The templates' desired properties are what the module uses with no twin at all."""
    defaults = ModuleConfig().to_desired()
    del defaults["$version"]
    for name in ("deployment.template.json", "deployment.debug.template.json"):
        template = json.loads((EDGE / name).read_text(encoding="utf-8"))
        desired = template["modulesContent"][MODULE]["properties.desired"]
        assert desired == defaults, name
        # ...and the module's own validation takes them as a desired document.
        assert ModuleConfig().apply_patch(desired) == ModuleConfig()


def test_template_twin_defaults_match_the_contract_schema_when_there_is_one() -> None:
    """If contract/ has a twin desired-properties schema, the template's defaults validate."""
    import jsonschema

    schemas = sorted((REPO / "contract").glob("*twin*.schema.json"))
    if not schemas:
        pytest.skip("contract/ has no twin schema yet")
    template = json.loads((EDGE / "deployment.template.json").read_text(encoding="utf-8"))
    desired = template["modulesContent"][MODULE]["properties.desired"]
    for path in schemas:
        schema = json.loads(path.read_text(encoding="utf-8"))
        jsonschema.validators.validator_for(schema)(schema).validate(desired)


def test_env_and_generated_config_are_git_ignored() -> None:
    """edge/.env (the registry password) and genconfig's edge/config/ never get committed."""
    import shutil
    import subprocess

    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    paths = ["edge/.env", "edge/config/deployment.arm32v7.json", ".venv-tools/bin/iotedgedev"]
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", *paths],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout.split() == paths
    lines = (EDGE / ".env.template").read_text(encoding="utf-8").splitlines()
    settings = [line for line in lines if line and not line.startswith("#")]
    assert settings == [f"CONTAINER_REGISTRY_{k}=" for k in ("SERVER", "USERNAME", "PASSWORD")]


@pytest.mark.parametrize(
    "project", ["pyproject.toml", "cloud/sink/pyproject.toml", "sim/pyproject.toml"]
)
def test_every_package_needs_python_311(project: str) -> None:
    """Every package uses datetime.UTC (3.11+): none may claim 3.10."""
    meta = tomllib.loads((REPO / project).read_text(encoding="utf-8"))["project"]
    spec = SpecifierSet(meta["requires-python"])
    assert Version("3.11") in spec and Version("3.10") not in spec
