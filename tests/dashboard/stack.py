"""The real stack behind the page: the sink (processor + local runner API) on Azurite, the
local Web PubSub, the publisher, and the dashboard's static server; plus a browser.

Shared by the browser tests (tests/dashboard) and the dashboard bench (bench/).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.messaging.webpubsubservice import WebPubSubServiceClient
from enviromon_sim.dashboard.server import DashboardServer
from enviromon_sim.webpubsub.server import WebPubSubThread
from enviromon_sink.events import InboundEvent
from enviromon_sink.local_runner import ApiServer
from enviromon_sink.processor import BatchResult, Sink
from enviromon_sink.publisher import WebPubSubPublisher

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboard"
DIST = DASHBOARD / "dist"
ARTIFACTS = ROOT / ".artifacts" / "dashboard"
HUB = "enviromon"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def build_dashboard() -> Path:
    """``dashboard/dist``, rebuilt when a source is newer than the bundle (esbuild: ~0.2 s)."""
    bundle = DIST / "app.js"
    sources = [*DASHBOARD.glob("src/*"), DASHBOARD / "index.html", DASHBOARD / "build.mjs"]
    sources += list(DASHBOARD.glob("contract/*.json"))
    if not bundle.exists() or max(p.stat().st_mtime for p in sources) > bundle.stat().st_mtime:
        subprocess.run(["node", str(DASHBOARD / "build.mjs")], check=True, cwd=ROOT)
    return DIST


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def reading(
    seq: int,
    ts: datetime,
    *,
    boot: str = "0123456789abcdef",
    label: str = "pi",
    source: str = "simulated",
    temperature: float | None = 21.5,
    humidity: float | None = 45.0,
    **extra: Any,
) -> dict[str, Any]:
    """One schema-1 reading body."""
    body: dict[str, Any] = {
        "schema": 1,
        "deviceId": label,
        "boot": boot,
        "seq": seq,
        "ts": iso(ts),
        "source": source,
        "temperature": temperature,
        "humidity": humidity,
        "pressure": 1012.8,
        "gasResistance": 152000,
        "iaq": 87.5,
        "calibration": 3,
        "flags": [],
    }
    body.update(extra)
    return body


@dataclass
class Stack:
    """The running parts; :meth:`send` feeds readings through the sink's process + publish."""

    sink: Sink
    pubsub: WebPubSubThread
    publisher: WebPubSubPublisher
    api: ApiServer
    web: DashboardServer
    hub_seq: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.web.url

    def events(
        self,
        device: str,
        bodies: Iterable[dict[str, Any] | list[dict[str, Any]]],
        module: str | None = None,
    ) -> list[InboundEvent]:
        """Hub events for ``device``: one per body (a reading, or a packed list of readings)."""
        out = []
        for body in bodies:
            first = body[0] if isinstance(body, list) else body
            last = body[-1] if isinstance(body, list) else body
            n = self.hub_seq.get(device, 0) + 1
            self.hub_seq[device] = n
            out.append(
                InboundEvent(
                    body=json.dumps(body).encode(),
                    device_id=device,
                    module_id=module,
                    properties={"temperatureAlert": "false"},
                    # The hub's enqueued time is the reading's own (a device clock in sync).
                    enqueued_time=datetime.fromisoformat(last["ts"].replace("Z", "+00:00")),
                    sequence_number=n,
                    message_id=f"{first['boot']}:{first['seq']}",
                )
            )
        return out

    def send(
        self,
        device: str,
        bodies: Sequence[dict[str, Any]],
        *,
        module: str | None = None,
        publish: bool = True,
        batch: int = 100,
    ) -> list[BatchResult]:
        """Count and store ``bodies`` (in batches), then publish each batch unless told not to."""
        results = []
        events = self.events(device, bodies, module)
        for i in range(0, len(events), batch):
            result = self.sink.process(events[i : i + batch])
            if publish:
                self.publisher.publish(result)
            results.append(result)
        return results


@contextmanager
def running_stack(tables: str, prefix: str) -> Iterator[Stack]:
    """Sink on ``tables`` with ``prefix``, local Web PubSub, API and dashboard server."""
    build_dashboard()
    sink = Sink.from_connection_string(tables, table_prefix=prefix)
    origins: list[str] = []
    with WebPubSubThread() as pubsub:
        tokens = WebPubSubServiceClient.from_connection_string(pubsub.connection_string, hub=HUB)
        publisher = WebPubSubPublisher.from_connection_string(pubsub.connection_string, hub=HUB)
        api = ApiServer(
            store=sink,
            tokens=tokens,
            negotiate_minutes=60,
            allowed_origin=lambda origin: origin if origin in origins else None,
        )
        api.start()
        try:
            with DashboardServer(directory=DIST, api_base_url=api.base_url, hub=HUB, port=0) as web:
                origins.append(web.url.rstrip("/"))
                yield Stack(sink=sink, pubsub=pubsub, publisher=publisher, api=api, web=web)
        finally:
            api.stop()


def minutes_ago(n: float) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=n)


def wait_for(check: Any, what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
