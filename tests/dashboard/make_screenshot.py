"""Make docs/img/dashboard.png: four streams over a day, on the real stack (run by hand).

.venv/bin/python -m tests.dashboard.make_screenshot
"""

from __future__ import annotations

import math
import tempfile
from datetime import timedelta
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.dashboard.stack import CHROMIUM, CHROMIUM_ARGS, ROOT, minutes_ago, reading, running_stack
from tests.support.azurite import Azurite


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        azurite = Azurite(Path(tmp))
        try:
            with running_stack(azurite.connection_string, "shot") as stack:
                t0 = minutes_ago(24 * 60)
                rooms = [
                    ("pi-kitchen", "Kitchen", "bme680", 21.0),
                    ("pi-bedroom", "Bedroom", "bme680", 18.5),
                    ("pi-garage", "Garage", "bme680", 9.0),
                    ("pi-sim-1", "sim-1", "simulated", 24.0),
                ]
                for n, (device, label, source, base) in enumerate(rooms):
                    bodies = []
                    for s in range(1, 24 * 12 + 1):
                        phase = 2 * math.pi * s / 288
                        temp = base + 2.5 * math.sin(phase + n) + 0.2 * math.sin(s)
                        hum = 50 - 10 * math.sin(phase + n)
                        bodies.append(
                            reading(
                                s,
                                t0 + timedelta(minutes=5 * s),
                                label=label,
                                source=source,
                                temperature=round(temp, 2),
                                humidity=round(hum, 2),
                                iaq=round(60 + 20 * math.sin(phase * 2 + n), 1),
                            )
                        )
                    stack.send(device, bodies, publish=False)
                with sync_playwright() as p:
                    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                    page = browser.new_page(viewport={"width": 1280, "height": 1000})
                    page.goto(stack.url)
                    page.wait_for_selector("body[data-rendered='true'][data-connection='live']")
                    out = ROOT / "docs" / "img" / "dashboard.png"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(out))
                    browser.close()
        finally:
            azurite.stop()


if __name__ == "__main__":
    main()
