"""Run the module's real entry point (`enviro-sensor`) as a subprocess against the local hub."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enviromon_sim.iothub.hub import HubThread
from enviromon_sim.iothub.topics import Identity

from tests.support.hub import HubDevice, wait_until

SCRIPT = Path(sys.executable).parent / "enviro-sensor"
STOP_TIMEOUT_S = 30.0
#: Short intervals keep the folder's CPU small: readings every 0.5 s (the config's minimum).
FAST = {
    "ENVIRO_SENSOR": "simulated",
    "ENVIRO_TELEMETRY_INTERVAL": "0.5",
    "ENVIRO_HUB_RETRY_INTERVAL": "1",
    "ENVIRO_HUB_REPORT_INTERVAL": "0.5",
    "ENVIRO_LOG_LEVEL": "INFO",
}


def base_env(tmp_path: Path, state: Path, **extra: str) -> dict[str, str]:
    """The test process's environment without ENVIRO_/IOTEDGE_/IOTHUB_ variables, plus ours."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ENVIRO_", "IOTEDGE_", "IOTHUB_"))
    }
    env["HOME"] = str(tmp_path)
    env["ENVIRO_STATE_DIR"] = str(state)
    env.update(FAST)
    env.update(extra)
    return env


def device_env(tmp_path: Path, dev: HubDevice, state: Path, **extra: str) -> dict[str, str]:
    """Plain device app: the connection string, the local hub's CA, the tunnel as proxy."""
    ca = tmp_path / "hub-ca.pem"
    ca.write_text(dev.ca_pem)
    return base_env(
        tmp_path,
        state,
        IOTHUB_DEVICE_CONNECTION_STRING=dev.connection_string,
        ENVIRO_HUB_CA_FILE=str(ca),
        ENVIRO_HUB_PROXY=f"http://127.0.0.1:{dev.proxy_port}",
        **extra,
    )


@dataclass
class Module:
    """A running module process; its stderr goes to ``log_path``."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = STOP_TIMEOUT_S) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> tuple[int, float]:
        """Send ``sig``; (exit code, seconds it took)."""
        start = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - start

    def rss_mb(self) -> float:
        import psutil

        return float(psutil.Process(self.proc.pid).memory_info().rss) / 2**20


@contextmanager
def run_module(
    env: dict[str, str], log_path: Path, *args: str, led: bool = False
) -> Iterator[Module]:
    """Start `enviro-sensor` (killed at the end if it is still running).

    ``led=True`` drives the status LED on gpiozero's mock pins (GPIOZERO_PIN_FACTORY=mock).
    """
    if led:
        env = {**env, "GPIOZERO_PIN_FACTORY": "mock"}
    else:
        args = ("--no-led", *args)
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "enviro_sensor.cli"]
    with log_path.open("ab") as log:
        proc = subprocess.Popen([*cmd, *args], stdout=subprocess.DEVNULL, stderr=log, env=env)
    module = Module(proc=proc, log_path=log_path)
    try:
        yield module
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)


def all_events(hub: HubThread) -> list[Any]:
    """Every event in the hub's event log (read_after pages at most 100 at a time)."""
    out: list[Any] = []
    while batch := hub.event_log.read_after(out[-1].sequence_number if out else 0, max_events=1000):
        out.extend(batch)
    return out


def events_of(hub: HubThread, identity: Identity) -> list[Any]:
    """Every event the hub stored from ``identity`` (device and module id from the hub)."""
    out = []
    for event in all_events(hub):
        sp = event.system_properties
        if sp.get("iothub-connection-device-id") != identity.device_id:
            continue
        if sp.get("iothub-connection-module-id") != identity.module_id:
            continue
        out.append(event)
    return out


def readings_of(hub: HubThread, identity: Identity) -> list[dict[str, Any]]:
    """The readings in ``identity``'s events, in arrival order (packed arrays flattened)."""
    out: list[dict[str, Any]] = []
    for event in events_of(hub, identity):
        body = json.loads(event.body)
        out.extend(body if isinstance(body, list) else [body])
    return out


def wait_readings(hub: HubThread, identity: Identity, n: int, timeout: float = 20.0) -> Any:
    """Wait until at least ``n`` readings arrived; return them."""
    return wait_until(
        lambda: (r := readings_of(hub, identity)) and len(r) >= n and r, timeout=timeout
    )


def reported(hub: HubThread, identity: Identity) -> dict[str, Any]:
    """The twin's reported properties, as the service sees them."""
    twin = hub.get_twin(identity)
    result: dict[str, Any] = twin["properties"]["reported"]
    return result
