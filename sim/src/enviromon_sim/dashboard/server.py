"""The dashboard's static files on 127.0.0.1, with a generated ``config.json``.

Any plain file server (or an Azure Storage static website) serves ``dashboard/dist``
equally well; this one adds what the page needs locally: ``config.json`` made from the
command line, the page's Content-Security-Policy as a header too (a header can carry
``frame-ancestors``, a ``<meta>`` tag cannot), ``no-cache`` so a rebuild shows at once,
and no directory listings.
"""

from __future__ import annotations

import json
import re
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from enviromon_sim.dashboard.errors import ConfigError

#: Not 8080 (the local Web PubSub) nor 7071 (the sink's local API); the port `make demo` uses.
DEFAULT_PORT = 8070
DEFAULT_DIR = Path("dashboard/dist")
DEFAULT_HUB = "enviromon"
_HUB_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")

#: The same policy as the page's <meta> tag, plus what only a header can say.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " font-src 'self'; connect-src 'self' http: https: ws: wss:; base-uri 'none';"
    " form-action 'none'; object-src 'none'; frame-ancestors 'none'"
)


def config_json(api_base_url: str, hub: str = DEFAULT_HUB) -> bytes:
    """The page's ``config.json``, checked.

    Raises:
        ConfigError: the URL is not http(s) with a host, or the hub is not a hub name.
    """
    parts = urlsplit(api_base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"--api {api_base_url!r}: an http(s) URL such as http://127.0.0.1:7071/api"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"--api {api_base_url!r}: no query string or fragment")
    if not _HUB_RE.fullmatch(hub):
        raise ConfigError(
            f"--hub {hub!r}: a letter, then letters, digits or underscores (at most 128)"
        )
    body = {"apiBaseUrl": api_base_url.rstrip("/"), "hub": hub}
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


class _Handler(SimpleHTTPRequestHandler):
    config: bytes = b"{}"

    def end_headers(self) -> None:
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/config.json":
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(self.config)))
            self.end_headers()
            self.wfile.write(self.config)
            return
        super().do_GET()

    def do_POST(self) -> None:
        self.send_error(405, "only GET and HEAD")

    do_PUT = do_DELETE = do_PATCH = do_POST

    def list_directory(self, path: Any) -> None:
        self.send_error(404, "not found")
        return None

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log is noise next to the stand-ins' logs."""


class DashboardServer:
    """Serve ``directory`` on ``host:port`` (0: a free port) in a background thread."""

    def __init__(
        self,
        *,
        directory: Path,
        api_base_url: str,
        hub: str = DEFAULT_HUB,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
    ) -> None:
        if not (directory / "index.html").is_file():
            raise ConfigError(
                f"{directory}/index.html is missing: build the dashboard first (make dashboard)"
            )
        if not 0 <= port <= 65535:
            raise ConfigError("port must be 0..65535")
        handler = type("Handler", (_Handler,), {"config": config_json(api_base_url, hub)})
        self._server = ThreadingHTTPServer(
            (host, port), partial(handler, directory=str(directory.resolve()))
        )
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>/``."""
        host = self._server.server_address[0]
        if isinstance(host, bytes):
            host = host.decode()
        return f"http://{host}:{self.port}/"

    def start(self) -> DashboardServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="dashboard", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`stop` (from another thread or a signal)."""
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
