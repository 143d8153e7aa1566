"""A calibrated reading reaches the page: `enviromon calibrate` on a simulated Pi, end to end.

The command reads the Pi's latest reading from the sink's API, patches the device twin on the
local hub; the Pi (the module's real entry point) applies it; its next readings carry the new
calibration version through the hub and the sink to the dashboard in Chromium.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from enviromon_sim.demo.stack import DemoStack
from playwright.sync_api import Page

from tests.e2e.conftest import ENVIROMON, ROOT, local_env
from tests.e2e.page import open_dashboard, tile
from tests.support.hub import wait_until

pytestmark = pytest.mark.timeout(180)

DEVICE = "pi-kitchen"


def _shown_temperature(page: Page) -> float | None:
    shown = tile(page, DEVICE)
    if not shown or "Temperature" not in shown:
        return None
    try:
        return float(shown["Temperature"].split()[0])
    except ValueError:
        return None


def test_calibrated_value_and_version_reach_the_page(
    demo_stack: DemoStack, demo_page: Page
) -> None:
    """`calibrate --temperature REF`: the page shows about REF and the new calibration version."""
    stack = demo_stack
    wait_until(
        lambda: any(d["deviceId"] == DEVICE and d["count"] >= 2 for d in stack.devices_state()),
        timeout=60,
        interval=0.5,
    )
    open_dashboard(demo_page, stack.dashboard_url)
    before = wait_until(lambda: _shown_temperature(demo_page), timeout=15)
    reference = round(before + 3.0, 1)  # a shift the page cannot show by chance
    result = subprocess.run(
        [
            ENVIROMON,
            "calibrate",
            DEVICE,
            "--temperature",
            str(reference),
            "--state-dir",
            str(stack.hub_state_dir),
            "--api",
            stack.api_base_url,
            "--timeout",
            "60",
            "--json",
        ],
        cwd=ROOT,
        env=local_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    version = outcome["version"]
    (change,) = outcome["changes"]
    assert change["newIntercept"] == pytest.approx(
        change["oldIntercept"] + reference - change["reported"], abs=1e-3
    )
    assert outcome["reading"]["calibration"] == version

    wait_until(
        lambda: (
            (tile(demo_page, DEVICE) or {})
            .get("calibration", "")
            .startswith(f"Calibration v{version}")
        ),
        timeout=15,
    )
    # The simulated room drifts slowly: within seconds the calibrated value stays near REF.
    shown = _shown_temperature(demo_page)
    assert shown is not None and abs(shown - reference) < 0.5, (shown, reference)
    state = next(d for d in stack.devices_state() if d["deviceId"] == DEVICE)
    assert state["calibration"] == version
