"""`enviromon dashboard serve`: serve the built dashboard with a config.json for a local API."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from enviromon_sim.dashboard.errors import ConfigError
from enviromon_sim.dashboard.server import DEFAULT_DIR, DEFAULT_HUB, DEFAULT_PORT, DashboardServer

DEFAULT_API = "http://127.0.0.1:7071/api"


def _serve_command(args: argparse.Namespace) -> int:
    try:
        server = DashboardServer(
            directory=Path(args.dir),
            api_base_url=args.api,
            hub=args.hub,
            host=args.host,
            port=args.port,
        )
    except ConfigError as exc:
        print(f"enviromon dashboard serve: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"enviromon dashboard serve: cannot listen on {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    print(server.url, flush=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    try:
        stop.wait()
    finally:
        server.stop()
    return 0


def register(services: argparse._SubParsersAction[Any]) -> None:
    """Add `enviromon dashboard serve` (and `publish`)."""
    parser = services.add_parser(
        "dashboard", help="serve the built dashboard locally, or publish it to Azure Storage"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="serve dashboard/dist until Ctrl-C; prints its URL first"
    )
    serve.add_argument(
        "--api", default=DEFAULT_API, help="the sink API base URL (default %(default)s)"
    )
    serve.add_argument("--hub", default=DEFAULT_HUB, help="Web PubSub hub (default %(default)s)")
    serve.add_argument("--dir", default=str(DEFAULT_DIR), help="built files (default %(default)s)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s; 0 = a free one)"
    )
    serve.set_defaults(handler=_serve_command)
    # `publish` (to an Azure Storage static website) belongs to the operator's commands.
    from enviromon_sim.ops.cli import register_publish

    register_publish(commands)
