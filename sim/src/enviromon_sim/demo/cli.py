"""``enviromon demo``: run the whole pipeline on this machine until Ctrl-C.

Thin: it reads options and the environment, runs ``stack.DemoStack``, prints its progress, the
dashboard's URL and commands to try, and stops everything on Ctrl-C (or SIGTERM/SIGHUP).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
import threading
from dataclasses import fields
from pathlib import Path
from types import FrameType
from typing import Any

from enviromon_sim.demo.config import (
    DEVICE_COUNT_ENV,
    External,
    Ports,
    device_count,
    find_root,
    option_name,
)
from enviromon_sim.demo.errors import DemoError
from enviromon_sim.demo.stack import DemoStack, Progress

DEFAULT_STATE_DIR = ".enviromon/demo"


def register(services: argparse._SubParsersAction[Any]) -> None:
    """Add ``enviromon demo`` to the ``enviromon`` command."""
    demo = services.add_parser(
        "demo",
        help="run the whole local pipeline (what `make demo` runs)",
        description="Start Azurite, the local IoT Hub, the local Web PubSub, the sink, the"
        " dashboard and simulated Pis; Ctrl-C stops them all. A service whose connection"
        " string is in the environment is used instead of its local stand-in (docs/demo.md).",
    )
    demo.add_argument(
        "--devices",
        type=int,
        default=None,
        help=f"simulated Pis (default ${DEVICE_COUNT_ENV} or 3)",
    )
    demo.add_argument(
        "--interval", type=float, default=2.0, help="seconds between readings (default 2)"
    )
    demo.add_argument(
        "--state-dir",
        default=DEFAULT_STATE_DIR,
        help=f"keys, certificates, databases and logs (default {DEFAULT_STATE_DIR}; git-ignored)",
    )
    demo.add_argument(
        "--fresh", action="store_true", help="delete the state dir first (start from zero)"
    )
    defaults = Ports()
    for f in fields(Ports):
        demo.add_argument(
            f"--{option_name(f.name)}",
            type=int,
            default=getattr(defaults, f.name),
            dest=f.name,
            help=f"default {getattr(defaults, f.name)}",
        )
    demo.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo until a stop signal; 0 after a clean stop, 1 when it could not start."""
    try:
        return _run(args)
    except DemoError as exc:
        print(f"enviromon demo: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    root = find_root(Path.cwd())
    if root is None:
        raise DemoError("run it from the enviromon folder, after `make node` (Azurite)")
    devices = (
        args.devices if args.devices is not None else device_count(os.environ.get(DEVICE_COUNT_ENV))
    )
    if not 1 <= devices <= 200:
        raise DemoError("--devices: 1 to 200")
    if not 0.5 <= args.interval <= 86_400:
        raise DemoError("--interval: 0.5 to 86400 seconds")
    ports = Ports(**{f.name: getattr(args, f.name) for f in fields(Ports)})
    state_dir = Path(args.state_dir)
    if args.fresh and state_dir.exists():
        import shutil

        shutil.rmtree(state_dir)
    # The progress lines say what starts; the key file's own log line would only interleave.
    logging.getLogger("enviromon_sim.webpubsub.cli").setLevel(logging.WARNING)
    stop = threading.Event()
    phase = ["starting"]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # While starting, interrupt the start (it stops what it began); while running, ask
        # the loop below to stop; while stopping, let the stop finish.
        if phase[0] == "starting":
            phase[0] = "stopping"
            raise KeyboardInterrupt
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    stack = DemoStack(
        root=root,
        state_dir=state_dir,
        ports=ports,
        devices=devices,
        interval=args.interval,
        external=External.from_env(),
        on_progress=_print_progress,
    )
    print(f"enviromon demo: starting (state and logs in {state_dir}/)", flush=True)
    try:
        stack.start()
        phase[0] = "running"
        _print_ready(stack, state_dir)
        reported: set[str] = set()
        while not stop.wait(1.0):
            _report_exits(stack, reported)
    except KeyboardInterrupt:
        return 130
    finally:
        phase[0] = "stopping"
        print("\nstopping…", flush=True)
        killed = stack.stop()
        note = f" (killed after the grace period: {', '.join(killed)})" if killed else ""
        print(f"stopped{note}.", flush=True)
    return 0


def _report_exits(stack: DemoStack, reported: set[str]) -> None:
    """Say once, for each child that exited while the demo runs, where its log is."""
    for child in stack.children.values():
        if child.proc is not None and child.proc.poll() is not None and child.name not in reported:
            reported.add(child.name)
            print(
                f"warning: {child.name} exited with code {child.proc.returncode}; see"
                f" {child.log_path}",
                file=sys.stderr,
                flush=True,
            )


def _print_progress(p: Progress) -> None:
    took = f"  ({p.seconds:.1f} s)" if p.seconds else ""
    print(f"  {p.name:<28} {p.detail}{took}", flush=True)


def _print_ready(stack: DemoStack, state_dir: Path) -> None:
    enviromon = _command_path()
    hub_dir = shlex.quote(str(state_dir / "hub"))
    hub = f"--state-dir {hub_dir}"
    first = stack.device_ids[0] if stack.device_ids else "pi-kitchen"
    print(
        f"""
Dashboard: {stack.dashboard_url}
API:       {stack.api_base_url}/devices

Try, in another terminal (from this folder):
  the devices, and telemetry as it arrives (Ctrl-C to stop):
    {enviromon} device list {hub}
    {enviromon} monitor-events {hub}
  calibrate {first} against a reference thermometer reading 21.0 °C; the page then shows about
  21.0 and the new calibration version:
    {enviromon} calibrate {first} --temperature 21.0 {hub} --api {stack.api_base_url}
  blink its LED (a simulated Pi has mock GPIO pins: the answer is all you see):
    {enviromon} hub {hub} invoke {first} identify '{{"seconds": 5}}'
  stop the hub for a minute: the Pis keep reading into their buffers, and once it is back
  the page's counts show every reading, Missing 0:
    {enviromon} hub {hub} fault restart 60

Ctrl-C stops everything.""",
        flush=True,
    )


def _command_path() -> str:
    """How to call ``enviromon`` from the current folder: the venv's, else the one on PATH."""
    here = Path(sys.executable).with_name("enviromon")
    if here.exists():
        try:
            return str(here.relative_to(Path.cwd()))
        except ValueError:
            return str(here)
    return "enviromon"
