"""The local host: the sink driven by the local hub's event log, and the sink's HTTP API.

It plays Azure Functions' part on this machine, and is as thin:

- a batch loop reads the event log after its consumer group's checkpoint, hands the batch
  to the core, publishes the result and only then checkpoints. On any error it does not
  checkpoint; it waits (growing, jittered delays) and reads the same batch again, so
  delivery is at-least-once and the core's exactly-once counting makes it count once;
- an HTTP server on 127.0.0.1 serves the same routes as function_app.py (``/api/negotiate``,
  ``/api/devices``, ``/api/devices/{id}/telemetry``, ``/api/telemetry``,
  ``/api/rollups``), with CORS, for the dashboard.

Run: ``python -m enviromon_sink.local_runner --eventlog .enviromon/hub/events.sqlite``
(settings from the environment, as on Azure: see docs/sink-deploy.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from enviromon_sink import adapters, api
from enviromon_sink.events import InboundEvent
from enviromon_sink.negotiate import TokenSource
from enviromon_sink.publisher import PublishableBatch, Publisher
from enviromon_sink.settings import MAX_NEGOTIATE_MINUTES

_log = logging.getLogger(__name__)

DEFAULT_CONSUMER_GROUP = "$Default"
# Where `enviromon hub serve` keeps its event log (its default --state-dir is .enviromon/hub).
DEFAULT_EVENTLOG = ".enviromon/hub/events.sqlite"


class EventSource(Protocol):
    """The part of ``enviromon_sim.iothub.eventlog.EventLog`` the loop uses."""

    def read_batch(self, *, consumer_group: str = ..., max_events: int = ...) -> Sequence[Any]:
        """The next events after the group's checkpoint, oldest first."""
        ...

    def checkpoint(self, sequence_number: int, *, consumer_group: str = ...) -> None:
        """Record that everything up to ``sequence_number`` is processed."""
        ...


class BatchProcessor(Protocol):
    """The part of ``processor.Sink`` the loop uses."""

    def process(self, events: Sequence[InboundEvent]) -> PublishableBatch:
        """Count and store a batch; raise to have it delivered again."""
        ...


class Backoff:
    """Growing delays with jitter: base·2ⁿ capped, then a random point in its upper half."""

    def __init__(
        self, *, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None
    ) -> None:
        if not 0 < base <= cap:
            raise ValueError("need 0 < base <= cap")
        self._base = base
        self._cap = cap
        # Jitter only spreads retries out; it needs no cryptographic randomness.
        self._rng = rng or random.Random()  # noqa: S311
        self._attempt = 0

    def next_delay(self) -> float:
        """The delay before the next retry; each call grows it."""
        ceiling = min(self._cap, self._base * (2.0**self._attempt))
        self._attempt = min(self._attempt + 1, 30)
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        """Back to the shortest delay (after a success)."""
        self._attempt = 0


class BatchLoop:
    """Read → process → publish → checkpoint, at-least-once."""

    def __init__(
        self,
        *,
        source: EventSource,
        sink: BatchProcessor,
        publisher: Publisher,
        consumer_group: str = DEFAULT_CONSUMER_GROUP,
        max_events: int = 100,
        poll_interval: float = 0.2,
        backoff: Backoff | None = None,
    ) -> None:
        if not 1 <= max_events <= 10_000:
            raise ValueError("max_events must be 1..10000")
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        if not consumer_group:
            raise ValueError("consumer_group must not be empty")
        self._source = source
        self._sink = sink
        self._publisher = publisher
        self._group = consumer_group
        self._max = max_events
        self._poll = poll_interval
        self._backoff = backoff or Backoff()
        self.batches = 0
        self.failures = 0

    def step(self) -> int:
        """Process one batch; returns how many events it held (0: nothing new).

        Raises whatever reading or processing raised, without checkpointing.
        """
        batch = self._source.read_batch(consumer_group=self._group, max_events=self._max)
        if not batch:
            return 0
        result = self._sink.process(adapters.from_event_log(batch))
        self._publisher.publish(result)
        self._source.checkpoint(batch[-1].sequence_number, consumer_group=self._group)
        self.batches += 1
        return len(batch)

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set; errors are retried after a jittered backoff."""
        while not stop.is_set():
            try:
                n = self.step()
            except Exception:
                self.failures += 1
                delay = self._backoff.next_delay()
                _log.exception("batch failed, not checkpointed; retrying in %.2f s", delay)
                stop.wait(delay)
                continue
            self._backoff.reset()
            if n == 0:
                stop.wait(self._poll)


class ApiServer:
    """The sink's HTTP API on 127.0.0.1 (``port=0``: a free port), in a thread."""

    def __init__(
        self,
        *,
        store: api.DeviceStore,
        tokens: TokenSource | None,
        negotiate_minutes: int,
        allowed_origin: Callable[[str | None], str | None],
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not 1 <= negotiate_minutes <= MAX_NEGOTIATE_MINUTES:
            raise ValueError(f"negotiate_minutes must be 1..{MAX_NEGOTIATE_MINUTES}")
        if not 0 <= port <= 65535:
            raise ValueError("port must be 0..65535")
        handler = _make_handler(store, tokens, negotiate_minutes, allowed_origin)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/api``."""
        host = self._server.server_address[0]
        if isinstance(host, bytes):
            host = host.decode()
        return f"http://{host}:{self.port}/api"

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sink-api", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


def route(
    method: str,
    target: str,
    *,
    store: api.DeviceStore,
    tokens: TokenSource | None,
    negotiate_minutes: int,
) -> api.ApiResponse:
    """Dispatch one request the way function_app.py's routes do."""
    parts = urlsplit(target)
    segments = [unquote(s) for s in parts.path.split("/")[1:]]
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if method != "GET":
        return api.error_response(405, "only GET")
    if segments == ["api", "negotiate"]:
        return api.negotiate(tokens, minutes=negotiate_minutes)
    if segments == ["api", "devices"]:
        return api.list_devices(store)
    if segments == ["api", "rollups"]:
        return api.rollups(store, query)
    if segments == ["api", "telemetry"]:
        return api.every_history(store, query)
    if len(segments) == 4 and segments[:2] == ["api", "devices"] and segments[3] == "telemetry":
        return api.device_history(store, segments[2], query)
    return api.error_response(404, "no such route")


def _make_handler(
    store: api.DeviceStore,
    tokens: TokenSource | None,
    negotiate_minutes: int,
    allowed_origin: Callable[[str | None], str | None],
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "enviromon-sink"
        sys_version = ""

        def do_GET(self) -> None:
            response = route(
                "GET",
                self.path,
                store=store,
                tokens=tokens,
                negotiate_minutes=negotiate_minutes,
            )
            self._send(api.with_cors(response, allowed_origin(self.headers.get("Origin"))))

        def do_OPTIONS(self) -> None:
            self._send(api.preflight(allowed_origin(self.headers.get("Origin"))))

        def do_POST(self) -> None:
            self._send(api.error_response(405, "only GET"))

        def _send(self, response: api.ApiResponse) -> None:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)

        def log_message(self, format: str, *args: Any) -> None:
            _log.debug("%s - " + format, self.address_string(), *args)

    return Handler


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m enviromon_sink.local_runner``."""
    parser = argparse.ArgumentParser(
        prog="python -m enviromon_sink.local_runner",
        description="Run the enviromon sink locally: the local hub's event log in, the"
        " sink's HTTP API out. Settings come from the environment (docs/sink-deploy.md).",
    )
    parser.add_argument(
        "--eventlog",
        default=os.environ.get("ENVIROMON_EVENTLOG", DEFAULT_EVENTLOG),
        help="the local hub's event log (SQLite file); default $ENVIROMON_EVENTLOG or"
        f" {DEFAULT_EVENTLOG}",
    )
    parser.add_argument(
        "--consumer-group",
        default=os.environ.get("IOTHUB_CONSUMER_GROUP", DEFAULT_CONSUMER_GROUP),
        help="consumer group whose checkpoint is used; default $IOTHUB_CONSUMER_GROUP or $Default",
    )
    parser.add_argument("--batch-size", type=int, default=100, help="events per batch (100)")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP address (127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=os.environ.get("ENVIROMON_API_PORT", "7071"),
        help="HTTP port; 0 picks a free one (default $ENVIROMON_API_PORT or 7071)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGTERM/SIGINT. Exit 2 on bad arguments or settings."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.batch_size <= 10_000:
        parser.error("--batch-size must be 1..10000")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be 0..65535")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from enviromon_sink.errors import SettingsError, TransientStoreError
    from enviromon_sink.negotiate import token_source_from_settings
    from enviromon_sink.processor import Sink
    from enviromon_sink.publisher import publisher_from_settings
    from enviromon_sink.settings import Settings

    if not args.eventlog:
        _log.error("no event log: pass --eventlog or set ENVIROMON_EVENTLOG")
        return 2
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        _log.error("bad settings: %s", exc)
        return 2
    # The sim is a dev dependency of the local host only; the sink package never needs it.
    from enviromon_sim.iothub.eventlog import EventLog

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Tables may come up after us (Azurite starting): wait for it rather than exit.
    backoff = Backoff()
    while True:
        try:
            sink = Sink.from_connection_string(
                settings.tables_connection_string, **settings.sink_options()
            )
            break
        except TransientStoreError as exc:
            delay = backoff.next_delay()
            _log.warning("Table storage unreachable (%s); retrying in %.1f s", exc, delay)
            if stop.wait(delay):
                return 1
    publisher = publisher_from_settings(settings)
    log = EventLog(Path(args.eventlog))
    try:
        server = ApiServer(
            store=sink,
            tokens=token_source_from_settings(settings),
            negotiate_minutes=settings.negotiate_minutes,
            allowed_origin=settings.allowed_origin,
            host=args.host,
            port=args.port,
        )
    except OSError as exc:
        _log.error("cannot serve on %s:%s: %s", args.host, args.port, exc)
        log.close()
        return 2
    loop = BatchLoop(
        source=log,
        sink=sink,
        publisher=publisher,
        consumer_group=args.consumer_group,
        max_events=args.batch_size,
    )
    server.start()
    # One machine-readable line for scripts and tests that start it on port 0.
    sys.stdout.write(f"enviromon sink API on {server.base_url}\n")
    sys.stdout.flush()
    try:
        loop.run(stop)
    finally:
        server.stop()
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
