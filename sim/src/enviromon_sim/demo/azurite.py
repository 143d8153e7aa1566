"""Azurite (Microsoft's Azure Storage emulator, from npm) for Tables.

Started as ``node node_modules/azurite/dist/src/table/main.js`` directly: ``npx azurite`` runs
it as a grandchild that is left running when npx gets SIGTERM. Always on 127.0.0.1 (the Tables
SDK needs an IP host to use Azurite's path-style URLs, not ``localhost``).
"""

from __future__ import annotations

import http.client
from pathlib import Path

#: Azurite's documented, public development account and key: not secrets.
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
#: Azurite's own default Tables port.
DEFAULT_PORT = 10002


def table_main(root: Path) -> Path:
    """Where npm puts Azurite's Tables server under a project ``root``."""
    return root / "node_modules" / "azurite" / "dist" / "src" / "table" / "main.js"


def command(main_js: Path, *, port: int, location: Path | None) -> list[str]:
    """The command line: in memory when ``location`` is None, else persisted there."""
    argv = [
        "node",
        str(main_js),
        "--tableHost",
        "127.0.0.1",
        "--tablePort",
        str(port),
        "--skipApiVersionCheck",
        "--disableProductStyleUrl",
        "--disableTelemetry",
        "--silent",
    ]
    if location is None:
        argv.append("--inMemoryPersistence")
    else:
        argv += ["--location", str(location)]
    return argv


def connection_string(port: int) -> str:
    """The connection string of the dev account on a local Azurite Tables port."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
        f"TableEndpoint=http://127.0.0.1:{port}/{DEV_ACCOUNT};"
    )


def answers(port: int) -> bool:
    """Whether Azurite answers HTTP on ``port`` (any answer: an unsigned request gets 403)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", f"/{DEV_ACCOUNT}/Tables")
        conn.getresponse().read()
        return True
    except OSError:
        return False
    finally:
        conn.close()
