"""`enviromon dashboard serve`: the built files, a generated config.json, safe headers."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from enviromon_sim.dashboard.errors import ConfigError
from enviromon_sim.dashboard.server import DashboardServer, config_json

from tests.dashboard.stack import DIST, ROOT, build_dashboard


@pytest.fixture(scope="module")
def server() -> Iterator[DashboardServer]:
    build_dashboard()
    with DashboardServer(
        directory=DIST, api_base_url="http://127.0.0.1:7071/api/", hub="enviromon", port=0
    ) as s:
        yield s


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_serves_the_page_and_a_generated_config(server: DashboardServer) -> None:
    """index.html and app.js are served; config.json points at the API given, hub included."""
    status, headers, body = get(server.url)
    assert status == 200 and b'<script src="app.js"' in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, _, body = get(server.url + "app.js")
    assert status == 200 and len(body) > 1000
    status, headers, body = get(server.url + "config.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == {"apiBaseUrl": "http://127.0.0.1:7071/api", "hub": "enviromon"}


def test_no_listing_no_escape_no_writes(server: DashboardServer) -> None:
    """Directories are not listed, paths cannot leave dist, only GET/HEAD are served."""
    assert get(server.url + "nothing/")[0] == 404
    status, _, body = get(server.url + "../../pyproject.toml")
    assert status == 404 and b"enviromon-dev" not in body
    assert get(server.url + "%2e%2e/%2e%2e/pyproject.toml")[0] == 404
    req = urllib.request.Request(server.url + "config.json", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 405


@pytest.mark.parametrize(
    ("api", "hub"),
    [
        ("ftp://x/api", "enviromon"),
        ("127.0.0.1:7071/api", "enviromon"),
        ("http://127.0.0.1:7071/api?x=1", "enviromon"),
        ("http://127.0.0.1:7071/api", "9hub"),
        ("http://127.0.0.1:7071/api", "hub-name"),
    ],
)
def test_bad_config_is_refused(api: str, hub: str) -> None:
    """A bad API URL or hub name is a ConfigError naming the option."""
    with pytest.raises(ConfigError, match=r"--api|--hub"):
        config_json(api, hub)


def test_cli_bad_arguments_exit_2_without_traceback(tmp_path: Path) -> None:
    """The command says what is wrong (missing build, bad URL) and exits 2."""
    cmd = [sys.executable, "-m", "enviromon_sim.cli", "dashboard", "serve", "--port", "0"]
    empty = subprocess.run(
        [*cmd, "--dir", str(tmp_path)], capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert empty.returncode == 2
    assert "make dashboard" in empty.stderr and "Traceback" not in empty.stderr
    bad = subprocess.run(
        [*cmd, "--dir", str(DIST), "--api", "nonsense"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "--api" in bad.stderr and "Traceback" not in bad.stderr
