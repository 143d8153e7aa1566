"""Fixtures of the browser tests: the real stack and Debian's chromium through Playwright."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.dashboard.stack import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, Stack, running_stack

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 320, "height": 640}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian chromium (never a Playwright browser download)."""
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def stack(azurite: str, table_prefix: str) -> Iterator[Stack]:
    """Sink + API + local Web PubSub + dashboard server, fresh tables per test."""
    with running_stack(azurite, table_prefix) as s:
        yield s


@pytest.fixture
def page(browser: Browser, stack: Stack, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A desktop page on the stack; page errors fail the test; a screenshot is saved after."""
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    pg = context.new_page()
    errors: list[Any] = []

    def on_error(exc: Any) -> None:
        errors.append(exc)

    def on_dialog(dialog: Any) -> None:
        errors.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    pg.on("pageerror", on_error)
    pg.on("dialog", on_dialog)
    try:
        yield pg
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
        try:
            pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        finally:
            context.close()
    assert errors == [], errors


def open_dashboard(page: Page, stack: Stack) -> None:
    """Load the page and wait until it has loaded everything and is live."""
    page.goto(stack.url)
    page.wait_for_selector("body[data-rendered='true'][data-connection='live']", timeout=15000)
