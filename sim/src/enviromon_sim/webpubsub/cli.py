"""`enviromon pubsub serve`: run the local Web PubSub until Ctrl-C.

The first line on stdout is the connection string, so scripts can read it:
``conn=$(enviromon pubsub serve --port 0 | head -1)``. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from enviromon_sim.exitcodes import EXIT_PORT_IN_USE, is_port_in_use
from enviromon_sim.webpubsub.server import WebPubSubServer, generate_access_key

logger = logging.getLogger(__name__)

#: The port Microsoft's Web PubSub local emulator uses, so its sample settings work unchanged.
DEFAULT_PORT = 8080
DEFAULT_KEY_FILE = Path(".enviromon/pubsub.key")


def load_or_create_key(path: Path) -> str:
    """The AccessKey kept in ``path``; a new one is generated (mode 0600) on first use."""
    try:
        key = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        key = ""
    if key:
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = generate_access_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    logger.info("generated a new access key in %s", path)
    return key


async def _serve(server: WebPubSubServer) -> None:
    await server.start()
    print(server.connection_string, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def _serve_command(args: argparse.Namespace) -> int:
    key = load_or_create_key(Path(args.key_file))
    try:
        server = WebPubSubServer(
            host=args.host, port=args.port, access_key=key, hubs=args.hub or None
        )
    except ValueError as exc:  # ProtocolError (a bad --hub) is a ValueError too
        logger.error("%s", exc)
        return 2
    try:
        asyncio.run(_serve(server))
    except OSError as exc:
        if is_port_in_use(exc):
            print(
                f"error: cannot listen on {args.host}:{args.port} (Web PubSub): address in use;"
                " stop what uses it, or choose another --port (0 = any free)",
                file=sys.stderr,
            )
            return EXIT_PORT_IN_USE
        print(
            f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    return 0


def register(services: argparse._SubParsersAction[Any]) -> None:
    """Add this service's sub-commands to `enviromon`."""
    parser = services.add_parser("pubsub", help="the local Web PubSub")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="serve until Ctrl-C; prints the connection string first"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s; 0 = a free one)"
    )
    serve.add_argument(
        "--key-file",
        default=str(DEFAULT_KEY_FILE),
        help="AccessKey file, created on first run (default %(default)s; keep it out of git)",
    )
    serve.add_argument(
        "--hub", action="append", help="serve only this hub (repeatable; default: any hub)"
    )
    serve.set_defaults(handler=_serve_command)
