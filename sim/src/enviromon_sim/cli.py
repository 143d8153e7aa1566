"""The `enviromon` command: runs the local stand-ins.

Shaped like `az iot hub`: `enviromon hub serve`, `enviromon hub device add pi-1`, ...,
and `enviromon pubsub serve`; the operator's commands (`enviromon device`, `twin`,
`monitor-events`, `calibrate`) work against the local hub or a real one. Each part registers
its own sub-commands.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every service's sub-commands."""
    parser = argparse.ArgumentParser(
        prog="enviromon", description="Local stand-ins for the Azure services enviromon uses."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    services = parser.add_subparsers(dest="service", required=True, metavar="SERVICE")
    # Imported here so `enviromon --help` works even if one service has a broken import.
    from enviromon_sim.dashboard import cli as dashboard_cli
    from enviromon_sim.demo import cli as demo_cli
    from enviromon_sim.iothub import cli as hub_cli
    from enviromon_sim.ops import cli as ops_cli
    from enviromon_sim.webpubsub import cli as pubsub_cli

    hub_cli.register(services)
    pubsub_cli.register(services)
    demo_cli.register(services)
    dashboard_cli.register(services)
    ops_cli.register(services)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `enviromon` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
