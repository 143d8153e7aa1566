"""Reading the dashboard as a person would: a tile's shown values and counts, from the DOM."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page

# dt label → dd text, for the values and the counts of one tile; plus its calibration line.
_TILE_JS = """
(stream) => {
  const tile = [...document.querySelectorAll("article.tile")]
    .find((t) => t.dataset.stream === stream);
  if (!tile) return null;
  const shown = {};
  for (const box of tile.querySelectorAll("dl > div")) {
    const dt = box.querySelector("dt"), dd = box.querySelector("dd");
    if (dt && dd) shown[dt.textContent.trim()] = dd.textContent.trim();
  }
  shown.calibration = tile.querySelector(".cal").textContent.trim();
  return shown;
}
"""


def open_dashboard(page: Page, url: str) -> None:
    """Load the page and wait until everything is drawn and it is live."""
    page.goto(url)
    page.wait_for_selector("body[data-rendered='true'][data-connection='live']", timeout=30_000)


def tile(page: Page, stream: str) -> dict[str, Any] | None:
    """What the tile of ``stream`` shows (``Received``, ``Missing``, ``Temperature``…)."""
    shown: dict[str, Any] | None = page.evaluate(_TILE_JS, stream)
    return shown


def shown_counts(page: Page, stream: str) -> tuple[int, int, int] | None:
    """(Received, Missing, Duplicates) as the page shows them, or None before the tile has them."""
    shown = tile(page, stream)
    if not shown:
        return None
    try:
        return int(shown["Received"]), int(shown["Missing"]), int(shown["Duplicates"])
    except (KeyError, ValueError):
        return None
