"""The page's pure parts (formulas, grid, dedup, CSV), under node's test runner."""

from __future__ import annotations

import subprocess

from tests.dashboard.stack import DASHBOARD, ROOT


def test_node_unit_tests_pass() -> None:
    """dashboard/test/*.test.mjs all pass (derived values, bounded grid, seq marks, CSV)."""
    run = subprocess.run(
        ["node", "--test", str(DASHBOARD / "test")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "# fail 0" in run.stdout and "# pass 0" not in run.stdout
