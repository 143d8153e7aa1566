"""axe-core (from npm) on the live page at phone and desktop widths: no serious or critical."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.dashboard.conftest import DESKTOP, PHONE, open_dashboard
from tests.dashboard.stack import ARTIFACTS, ROOT, Stack, minutes_ago, reading

AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture(params=["phone", "desktop"])
def axe_page(browser: Browser, stack: Stack, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page at the width named by the param, with CSP bypassed so axe can be injected."""
    viewport = PHONE if request.param == "phone" else DESKTOP
    context = browser.new_context(viewport=viewport, bypass_csp=True)
    pg = context.new_page()
    try:
        yield pg
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
        pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    finally:
        context.close()


def test_axe_finds_no_serious_or_critical_violation(axe_page: Page, stack: Stack) -> None:
    """Tiles (simulated, real, alert, stale), charts and controls pass axe-core."""
    t0 = minutes_ago(50)
    stack.send("pi-one", [reading(s, t0 + timedelta(minutes=5 * s)) for s in range(1, 9)])
    stack.send("pi-hot", [reading(1, minutes_ago(2), temperature=33.0, source="bme680")])
    open_dashboard(axe_page, stack)
    axe_page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = axe_page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    bad = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert bad == []
    width = axe_page.evaluate("document.documentElement.scrollWidth")
    assert width <= axe_page.viewport_size["width"], "the page scrolls sideways"  # type: ignore[index]
