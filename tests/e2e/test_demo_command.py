"""`enviromon demo` (what `make demo` runs): it starts, Ctrl-C stops every child, it starts again.

The command runs in a subprocess as a user would run it, with free ports given as options.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.request
from pathlib import Path

from enviromon_sim.demo.config import Ports

from tests.e2e.conftest import ENVIROMON, ROOT, DemoProcess, local_env, port_args


def _recorded_pids(state_dir: Path) -> dict[str, int]:
    info = json.loads((state_dir / "pids.json").read_text())
    return {name: int(entry["pid"]) for name, entry in info.items()}


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _api_devices(ports: Ports) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{ports.api}/api/devices", timeout=5) as resp:
        return int(resp.status)


def test_ctrl_c_stops_every_child_and_a_second_run_starts_cleanly(tmp_path: Path) -> None:
    """Ctrl-C exits 0 within seconds with no child left; after a runner is SIGKILLed, the next
    run stops its leftovers and starts on the same ports."""
    ports = Ports.free()
    state = tmp_path / "demo"

    first = DemoProcess(state, ports, "--devices", "1")
    first.wait_for("Ctrl-C stops everything.")
    assert _api_devices(ports) == 200
    pids = _recorded_pids(state)
    assert {"azurite", "hub", "pubsub", "sink"} <= set(pids)
    code, took = first.interrupt()
    assert code == 0, first.output()
    assert took < 15, f"took {took:.1f}s to stop"
    assert [name for name, pid in pids.items() if _alive(pid)] == []
    assert "Traceback" not in first.output()

    second = DemoProcess(state, ports, "--devices", "1")
    second.wait_for("Ctrl-C stops everything.")
    orphans = _recorded_pids(state)
    second.kill()  # the runner dies; its children are still running
    assert all(_alive(pid) for pid in orphans.values())

    third = DemoProcess(state, ports, "--devices", "1")
    third.wait_for("Ctrl-C stops everything.")
    assert [name for name, pid in orphans.items() if _alive(pid)] == []
    assert _api_devices(ports) == 200
    code, _ = third.interrupt()
    assert code == 0, third.output()
    assert "Traceback" not in third.output()


def test_ctrl_c_during_start_up_stops_what_was_started(tmp_path: Path) -> None:
    """Ctrl-C while parts are still starting: no traceback, none of its processes left."""
    ports = Ports.free()
    state = tmp_path / "demo"
    demo = DemoProcess(state, ports, "--devices", "1")
    demo.wait_for("local IoT Hub")  # printed while Azurite and the others are still starting
    pids = _recorded_pids(state)
    code, took = demo.interrupt()
    output = demo.output()
    assert code == (0 if "Dashboard:" in output else 130), output
    assert took < 15, f"took {took:.1f}s to stop"
    assert [name for name, pid in pids.items() if _alive(pid)] == []
    assert "Traceback" not in output


def test_a_busy_port_is_one_clear_message(tmp_path: Path) -> None:
    """A port taken by another program: exit 1, the port, the service and the option to use."""
    ports = Ports.free()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports.pubsub))
        taken.listen()
        result = subprocess.run(
            [ENVIROMON, "demo", "--state-dir", str(tmp_path / "demo"), *port_args(ports)],
            cwd=ROOT,
            env=local_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"{ports.pubsub} (local Web PubSub)" in result.stderr
    assert "--pubsub-port" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "demo" / "logs").exists()  # nothing was started


def test_bad_device_count_is_one_clear_message(tmp_path: Path) -> None:
    """ENVIROMON_DEVICES that is not a number: exit 1, the variable named, no traceback."""
    result = subprocess.run(
        [ENVIROMON, "demo", "--state-dir", str(tmp_path / "demo")],
        cwd=ROOT,
        env={**local_env(), "ENVIROMON_DEVICES": "lots"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "ENVIROMON_DEVICES='lots'" in result.stderr
    assert "Traceback" not in result.stderr
