"""The dashboard in headless chromium against the real sink, Web PubSub and Azurite."""

from __future__ import annotations

import csv
import io
import re
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from playwright.sync_api import Page, expect

from tests.dashboard.conftest import open_dashboard
from tests.dashboard.stack import Stack, iso, minutes_ago, reading


def test_tiles_show_stored_state_with_units_and_simulated_badge(page: Page, stack: Stack) -> None:
    """Tiles appear with the stored state: values with units and decimals, badge, counts."""
    t0 = minutes_ago(40)
    stack.send(
        "pi-sim",
        [reading(s, t0 + timedelta(minutes=3 * s), temperature=20 + s / 10) for s in range(1, 11)],
        publish=False,
    )
    stack.send(
        "pi-real",
        [reading(1, t0, source="bme680", label="Kitchen", temperature=19.25)],
        publish=False,
    )
    open_dashboard(page, stack)
    sim = page.locator("article.tile[data-stream='pi-sim']")
    real = page.locator("article.tile[data-stream='pi-real']")
    expect(sim.locator(".values")).to_contain_text("Temperature")
    expect(sim.locator(".values")).to_contain_text("21.00 °C")
    expect(sim.locator(".values")).to_contain_text("45.00 %RH")
    expect(sim.locator(".badge.sim")).to_be_visible()
    expect(sim.locator(".badge.sim")).to_have_text("simulated")
    expect(sim.locator(".counts")).to_contain_text("Received10")
    expect(sim.locator(".cal")).to_have_text("Calibration v3")
    expect(real.locator("h3")).to_have_text("Kitchen")
    expect(real.locator(".badge.sim")).to_be_hidden()
    expect(real.locator(".values")).to_contain_text("19.25 °C")
    # Older readings are drawn from 15-minute rollups (several readings to a point), the last
    # quarter hour or more raw: the chart holds every reading once, one point per bucket.
    rows = shown_csv(page, "pi-sim")
    assert sum(int(r["readings"]) for r in rows) == 10
    expect(page.locator("#chart-temperature")).to_have_attribute("data-points", str(len(rows) + 1))


def test_live_reading_updates_tile_and_chart_within_a_second(page: Page, stack: Stack) -> None:
    """A reading through the sink's publish step reaches the tile and the chart in < 1 s."""
    stack.send("pi-live", [reading(1, minutes_ago(10), temperature=20.0)], publish=False)
    open_dashboard(page, stack)
    tile = page.locator("article.tile[data-stream='pi-live']")
    chart = page.locator("#chart-temperature")
    expect(chart).to_have_attribute("data-points", "1")
    stack.send("pi-live", [reading(2, minutes_ago(0), temperature=23.45)])
    expect(tile.locator(".values")).to_contain_text("23.45 °C", timeout=1000)
    expect(chart).to_have_attribute("data-points", "2", timeout=1000)
    expect(tile.locator(".counts")).to_contain_text("Received2")


def test_negotiated_token_can_only_receive(page: Page, stack: Stack) -> None:
    """The page holds a token with no roles (it can neither send nor join a group)."""
    with page.expect_response(lambda r: r.url.endswith("/api/negotiate")) as info:
        page.goto(stack.url)
    url = info.value.json()["url"]
    claims = jwt.decode(
        parse_qs(urlsplit(url).query)["access_token"][0], options={"verify_signature": False}
    )
    assert "role" not in claims
    assert claims["exp"] - time.time() <= 3600
    page.wait_for_selector("body[data-connection='live']")


def test_hostile_device_strings_are_text(page: Page, stack: Stack) -> None:
    """A device id (and module id) that is HTML shows as text: no element, no dialog."""
    hostile = "<img src=x onerror=alert(1)>"
    stack.send(hostile, [reading(1, minutes_ago(5), label="x")], module="<b>mod</b>", publish=False)
    open_dashboard(page, stack)
    stack.send(hostile, [reading(2, minutes_ago(1), label="x")], module="<b>mod</b>")
    tile = page.locator("article.tile").first
    expect(tile.locator(".ids")).to_have_text(f"{hostile} / <b>mod</b>")
    expect(tile.locator(".counts")).to_contain_text("Received2")
    page.wait_for_timeout(300)  # give an onerror handler every chance to run
    assert page.locator("img").count() == 0
    assert page.locator("main b").count() == 0
    # The page fixture fails the test on any dialog or page error.


def test_stale_marker_appears_when_a_device_stops(page: Page, stack: Stack) -> None:
    """Three estimated intervals after its last reading, a stream is marked stale."""
    open_dashboard(page, stack)
    now = minutes_ago(0)
    stack.send("pi-stops", [reading(s, now - timedelta(seconds=2 * (4 - s))) for s in range(1, 5)])
    tile = page.locator("article.tile[data-stream='pi-stops']")
    expect(tile.locator(".counts")).to_contain_text("Received4")
    expect(tile.locator(".badge.stale")).to_be_hidden()
    expect(tile.locator(".badge.stale")).to_be_visible(timeout=10000)
    expect(tile).to_have_class(re.compile(r"\bis-stale\b"))


def test_range_selector_loads_older_history(page: Page, stack: Stack) -> None:
    """24 h shows only the last day; 7 d loads the readings from three days ago too."""
    old = minutes_ago(3 * 24 * 60)
    bodies = [reading(s, old + timedelta(minutes=30 * s)) for s in range(1, 6)]
    bodies.append(reading(6, minutes_ago(60)))
    stack.send("pi-old", bodies, publish=False)
    open_dashboard(page, stack)
    chart = page.locator("#chart-temperature")
    expect(chart).to_have_attribute("data-points", "1")
    page.get_by_label("7 d").check()
    expect(chart).to_have_attribute("data-points", "6")
    page.get_by_label("1 h").check()
    expect(chart).to_have_attribute("data-points", "0")


def shown_csv(page: Page, key: str) -> list[dict[str, str]]:
    tile = page.locator(f"article.tile[data-stream='{key}']")
    with page.expect_download() as info:
        tile.get_by_role("button", name=re.compile("Export")).click()
    text = Path(info.value.path()).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_export_matches_what_is_shown(page: Page, stack: Stack) -> None:
    """The CSV holds the chart's points: each reading once, its values, its bucket time."""
    t0 = minutes_ago(40).replace(second=0, microsecond=0)
    temps = [19.5 + s * 0.25 for s in range(1, 13)]
    stack.send(
        "pi-csv",
        [reading(s, t0 + timedelta(minutes=2 * s), temperature=temps[s - 1]) for s in range(1, 13)],
        publish=False,
    )
    open_dashboard(page, stack)
    page.get_by_label("1 h").check()
    page.wait_for_selector("body[data-rendered='true']")
    chart = page.locator("#chart-temperature")
    expect(chart).to_have_attribute("data-points", "12")
    rows = shown_csv(page, "pi-csv")
    assert [r["temperature (°C)"] for r in rows] == [f"{t:.2f}" for t in temps]
    assert {r["readings"] for r in rows} == {"1"}
    assert [r["time"] for r in rows] == [iso(t0 + timedelta(minutes=2 * s)) for s in range(1, 13)]
    assert {r["stream"] for r in rows} == {"pi-csv"}
    assert rows[0]["humidity (%RH)"] == "45.00"
    assert rows[0]["dewPoint (°C)"] != ""


def test_pubsub_restart_shows_reconnecting_then_backfills_once(page: Page, stack: Stack) -> None:
    """Readings committed while Web PubSub is down appear after the reconnect, none twice."""
    t0 = minutes_ago(30).replace(second=0, microsecond=0)
    at = [t0 + timedelta(seconds=30 * s) for s in range(0, 12)]
    stack.send("pi-gap", [reading(1, at[0], temperature=20.0)], publish=False)
    open_dashboard(page, stack)
    page.get_by_label("1 h").check()
    page.wait_for_selector("body[data-rendered='true'][data-connection='live']")
    chart = page.locator("#chart-temperature")
    stack.send("pi-gap", [reading(2, at[1], temperature=20.5)])
    expect(chart).to_have_attribute("data-points", "2", timeout=5000)

    negotiated: list[str] = []
    page.on("response", lambda r: negotiated.append(r.url) if "/api/negotiate" in r.url else None)
    stack.pubsub.stop()
    expect(page.locator("#connection")).to_have_text("reconnecting", timeout=5000)
    # Committed while nobody can be told: the publish fails (logged, counted), counts stay.
    stack.send("pi-gap", [reading(s + 1, at[s], temperature=20 + s / 2) for s in range(2, 8)])
    assert stack.publisher.failures >= 1
    stack.pubsub.start()
    expect(page.locator("#connection")).to_have_text("live", timeout=20000)
    assert negotiated, "the reconnect did not negotiate a fresh token"
    stack.send("pi-gap", [reading(9, at[8], temperature=24.0)])

    expect(chart).to_have_attribute("data-points", "9", timeout=5000)
    rows = shown_csv(page, "pi-gap")
    assert [r["readings"] for r in rows] == ["1"] * 9
    assert [r["time"] for r in rows] == [iso(t) for t in at[:9]]
    assert [r["temperature (°C)"] for r in rows] == [
        "20.00",
        "20.50",
        *[f"{20 + s / 2:.2f}" for s in range(2, 8)],
        "24.00",
    ]
    tile = page.locator("article.tile[data-stream='pi-gap']")
    expect(tile.locator(".counts")).to_contain_text("Received9")


def test_keyboard_reaches_range_and_export(page: Page, stack: Stack) -> None:
    """Tab reaches the range selector and each tile's export button; arrows change range."""
    stack.send("pi-kb", [reading(1, minutes_ago(5))], publish=False)
    open_dashboard(page, stack)
    reached = []
    for _ in range(10):
        page.keyboard.press("Tab")
        reached.append(
            page.evaluate("document.activeElement.value || document.activeElement.textContent")
        )
    assert "24h" in reached
    assert "Export CSV" in reached
    page.get_by_label("24 h").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_label("7 d")).to_be_checked()
    page.wait_for_selector("body[data-rendered='true']")


def many_readings(stack: Stack, key: str) -> None:
    """120 readings 10 s apart six hours ago (over 20 minutes), not published."""
    t0 = minutes_ago(6 * 60).replace(second=0, microsecond=0)
    bodies = [
        reading(s, t0 + timedelta(seconds=10 * s), temperature=20 + s / 100) for s in range(1, 121)
    ]
    stack.send(key, bodies, publish=False)


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


@pytest.mark.parametrize("shape", ["columns", "points"])
def test_overview_history_comes_from_rollups(page: Page, stack: Stack, shape: str) -> None:
    """24 h: older history from one 15m rollups request; raw telemetry only for the last 30 min.

    In the columns the page asks for, and in the points a sink without ``shape`` sends.
    """
    many_readings(stack, "pi-many")
    page.route(
        "**/api/rollups?*",
        lambda route: route.continue_(url=route.request.url.replace("=columns", "=" + shape)),
    )
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    open_dashboard(page, stack)
    rollups = [u for u in urls if "/api/rollups" in u]
    assert len(rollups) == 1
    assert query_of(rollups[0])["step"] == ["15m"]
    assert query_of(rollups[0])["shape"] == ["columns"]
    telemetry = [u for u in urls if "/telemetry" in u]
    assert telemetry, "no raw tail was fetched"
    for url in telemetry:
        start = query_of(url)["from"][0]
        assert start >= iso(minutes_ago(31)), f"raw history fetched from {start}: {url}"
    rows = shown_csv(page, "pi-many")
    assert sum(int(r["readings"]) for r in rows) == 120
    assert 2 <= len(rows) <= 3  # 20 minutes fall into two or three 15-minute steps
    weighted = sum(float(r["temperature (°C)"]) * int(r["readings"]) for r in rows) / 120
    assert abs(weighted - (20 + 60.5 / 100)) < 0.01


def test_rollups_404_falls_back_to_raw_history(page: Page, stack: Stack) -> None:
    """A sink without the rollups route (404): the page loads the whole range raw instead."""
    many_readings(stack, "pi-raw")
    page.route("**/api/rollups?*", lambda route: route.fulfill(status=404, body="{}"))
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    open_dashboard(page, stack)
    telemetry = [u for u in urls if "/telemetry" in u]
    assert any(query_of(u)["from"][0] <= iso(minutes_ago(23 * 60)) for u in telemetry)
    rows = shown_csv(page, "pi-raw")
    assert sum(int(r["readings"]) for r in rows) == 120
    assert 10 <= len(rows) <= 11
