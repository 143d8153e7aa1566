"""Runs iotedgedev's ``solution genconfig`` once per (template, platform) for the deploy tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .manifest_rules import EDGE, REPO

IOTEDGEDEV = REPO / ".venv-tools" / "bin" / "iotedgedev"
PLATFORMS = ("amd64", "arm32v7", "arm64v8")
TEMPLATES = {False: "deployment.template.json", True: "deployment.debug.template.json"}
# Stand-ins for edge/.env: the tests never read a developer's real .env (it holds a password).
ENV_FILE = {
    "CONTAINER_REGISTRY_SERVER": "registry.example.test:5000",
    "CONTAINER_REGISTRY_USERNAME": "deploy-test-user",
    "CONTAINER_REGISTRY_PASSWORD": "not-a-secret",
}
_STRICT = "--fail-on-validation-error"
CASES = [(p, False) for p in PLATFORMS] + [(p, True) for p in PLATFORMS]


@dataclass(frozen=True)
class Expanded:
    """One genconfig run: the manifest it wrote and what it printed."""

    platform: str
    debug: bool
    manifest: dict[str, Any]
    output: str


def case_id(case: tuple[str, bool]) -> str:
    return f"{case[0]}{'-debug' if case[1] else ''}"


def _solution(root: Path) -> Path:
    """A copy of edge/ with only what genconfig reads: the templates and each module.json."""
    sol = root / "solution"
    sol.mkdir()
    for name in TEMPLATES.values():
        shutil.copy(EDGE / name, sol / name)
    for module_json in (EDGE / "modules").glob("*/module.json"):
        target = sol / "modules" / module_json.parent.name
        target.mkdir(parents=True)
        shutil.copy(module_json, target / "module.json")
    (sol / ".env").write_text("".join(f"{k}={v}\n" for k, v in ENV_FILE.items()))
    return sol


class Genconfig:
    """iotedgedev's ``solution genconfig`` on a scratch copy of edge/, with a stand-in .env."""

    def __init__(self, root: Path) -> None:
        self.solution = _solution(root)
        home = root / "home"
        (home / ".iotedgedev").mkdir(parents=True)
        # Without this file iotedgedev asks about telemetry and then tries to upload it.
        (home / ".iotedgedev" / "setting.ini").write_text(
            "[DEFAULT]\nfirsttime = no\ncollect_telemetry = no\n"
        )
        # A clean environment: a CONTAINER_REGISTRY_* exported in the caller's shell would
        # win over the .env file.
        self._env = {"HOME": str(home), "PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"}

    def run(self, template: str, platform: str) -> tuple[dict[str, Any], str]:
        """Expand ``template`` (a file in the scratch solution): the manifest and the output."""
        done = subprocess.run(
            [str(IOTEDGEDEV), "solution", "genconfig", "-f", template, "-P", platform, _STRICT],
            cwd=self.solution,
            env=self._env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"genconfig {template} -P {platform} failed:\n{output}"
        stem = template.removesuffix(".template.json")
        written = self.solution / "config" / f"{stem}.{platform}.json"
        assert written.exists(), f"genconfig wrote no {written.name}:\n{output}"
        return json.loads(written.read_text(encoding="utf-8")), output


@pytest.fixture(scope="session")
def genconfig(tmp_path_factory: pytest.TempPathFactory) -> Genconfig:
    """The real iotedgedev 3.3.9 from .venv-tools/, ready to expand templates."""
    if not IOTEDGEDEV.exists():
        message = f"{IOTEDGEDEV.relative_to(REPO)} is missing: run `make tools`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return Genconfig(tmp_path_factory.mktemp("genconfig"))


@pytest.fixture(scope="session")
def expanded(genconfig: Genconfig) -> dict[tuple[str, bool], Expanded]:
    """Every template expanded for every platform."""
    results = {}
    for platform, debug in CASES:
        manifest, output = genconfig.run(TEMPLATES[debug], platform)
        results[(platform, debug)] = Expanded(platform, debug, manifest, output)
    return results
