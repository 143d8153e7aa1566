"""End-to-end fixtures: the demo stack, driven by the same code `make demo` runs.

Every stack gets free ports and a state dir of its own under tmp_path, so e2e tests run beside
the rest of the suite (and beside a `make demo` on the same machine).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest
from enviromon_sim.demo.config import Ports, option_name
from enviromon_sim.demo.stack import DemoStack
from playwright.sync_api import Browser, Page

from tests.dashboard.conftest import DESKTOP
from tests.dashboard.stack import build_dashboard

ROOT = Path(__file__).resolve().parents[2]
ENVIROMON = str(Path(sys.executable).with_name("enviromon"))
#: Variables that would switch the stack to real Azure services; e2e tests run locally.
AZURE_VARS = (
    "AZURE_TABLES_CONNECTION_STRING",
    "WEBPUBSUB_CONNECTION_STRING",
    "ENVIROMON_DEVICE_CONNECTION_STRINGS",
    "ENVIROMON_API_BASE_URL",
)


def local_env() -> dict[str, str]:
    """The environment without any real-Azure connection string."""
    return {k: v for k, v in os.environ.items() if k not in AZURE_VARS}


def port_args(ports: Ports) -> list[str]:
    """``--azurite-port N --hub-mqtt-port N …`` for ``enviromon demo``."""
    args: list[str] = []
    for f in fields(Ports):
        args += [f"--{option_name(f.name)}", str(getattr(ports, f.name))]
    return args


class DemoProcess:
    """``enviromon demo`` as a user runs it, in a subprocess, with its output in a file."""

    def __init__(self, state_dir: Path, ports: Ports, *extra: str) -> None:
        self.state_dir = state_dir
        runs = len(list(state_dir.parent.glob(f"{state_dir.name}-out-*.txt")))
        self.out_path = state_dir.parent / f"{state_dir.name}-out-{runs + 1}.txt"
        self._out = self.out_path.open("wb")
        self.proc = subprocess.Popen(
            [ENVIROMON, "demo", "--state-dir", str(state_dir), *port_args(ports), *extra],
            cwd=ROOT,
            env=local_env(),
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, text: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None:
                raise AssertionError(f"demo exited {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout}s:\n{self.output()}")
            time.sleep(0.2)

    def interrupt(self, timeout: float = 20.0) -> tuple[int, float]:
        """Ctrl-C; returns the exit code and the seconds it took to exit."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=timeout)
        self._out.close()
        return code, time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL the runner alone (its children are left running, as after a crash)."""
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._out.close()


@pytest.fixture
def demo_stack(tmp_path: Path) -> Iterator[DemoStack]:
    """A running demo stack (services and devices) with free ports, stopped after the test."""
    build_dashboard()
    stack = DemoStack(
        root=ROOT,
        state_dir=tmp_path / "demo",
        ports=Ports.free(),
        devices=3,
        interval=1.0,
        persist=False,
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def demo_page(browser: Browser) -> Iterator[Page]:
    """A desktop page; errors on the page fail the test."""
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    errors: list[object] = []

    def on_error(exc: object) -> None:
        errors.append(exc)

    page.on("pageerror", on_error)
    try:
        yield page
    finally:
        context.close()
    assert errors == [], errors
