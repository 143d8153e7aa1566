"""The sink's host side: adapting a Functions batch, packing and publishing a batch.

Figures:

- ``sink_host.adapt_us_per_event``: ``adapters.from_function_events`` on 100-event batches
  built by azure-functions' own converter (as the worker builds them).
- ``sink_host.adapt_naive_us_per_event``: baseline, reading each event's ``metadata`` (each
  event re-parses the whole batch's shared trigger metadata, O(n²)); and
  ``sink_host.adapt_speedup_vs_naive`` = naive / ours.
- ``sink_host.split_2mb_ms``: ``publisher.split_messages`` packing a 2 MB batch under 1 MB frames.
- ``sink_host.publish_ms_per_batch``: ``WebPubSubPublisher.publish`` of a 100-reading batch
  through the real SDK to the local Web PubSub (REST round trip, one message).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from enviromon_sim.webpubsub.server import WebPubSubThread
from enviromon_sink import adapters
from enviromon_sink.publisher import WebPubSubPublisher, split_messages

from tests.sink.functions_host import HubMessage, function_batch, telemetry_body

BATCH = 100
ROUNDS = 30


def _messages() -> list[HubMessage]:
    return [
        HubMessage(
            telemetry_body(f"pi-{i % 10}", i + 1),
            f"pi-{i % 10}",
            "enviro_sensor",
            {"temperatureAlert": "false", "source": "simulated"},
            f"3f2a9c1e:{i + 1}",
        )
        for i in range(BATCH)
    ]


def _naive(events: list[Any]) -> list[Any]:
    """What an adapter reading ``event.metadata`` per event costs (the baseline)."""
    out = []
    for index, event in enumerate(events):
        metadata = event.metadata or {}
        out.append((metadata["SystemPropertiesArray"][index], metadata["PropertiesArray"][index]))
    return out


def _time_per_event(fn: Callable[[list[Any]], object], messages: list[HubMessage]) -> float:
    samples = []
    for _ in range(ROUNDS):
        events = function_batch(messages)  # fresh: metadata is cached per event object
        start = time.perf_counter()
        fn(events)
        samples.append((time.perf_counter() - start) / len(events))
    return statistics.median(samples) * 1e6


class _Batch:
    def __init__(self, readings: list[dict[str, Any]], devices: dict[str, dict[str, Any]]):
        self.readings = readings
        self.devices = devices


def _batch(n: int, pad: int) -> _Batch:
    readings = [
        {
            "deviceId": f"pi-{i % 10}",
            "boot": "3f2a9c1e",
            "seq": i,
            "temperature": 21.4,
            "x": "y" * pad,
        }
        for i in range(n)
    ]
    return _Batch(readings, {f"pi-{d}": {"deviceId": f"pi-{d}", "count": n} for d in range(10)})


def main() -> None:
    messages = _messages()
    ours = _time_per_event(adapters.from_function_events, messages)
    naive = _time_per_event(_naive, messages)
    print(f"sink_host.adapt_us_per_event={ours:.1f}")
    print(f"sink_host.adapt_naive_us_per_event={naive:.1f}")
    print(f"sink_host.adapt_speedup_vs_naive={naive / ours:.1f}")

    big = _batch(500, 4000)
    samples = []
    for _ in range(10):
        start = time.perf_counter()
        split_messages(big.readings, big.devices)
        samples.append(time.perf_counter() - start)
    print(f"sink_host.split_2mb_ms={statistics.median(samples) * 1000:.1f}")

    with WebPubSubThread() as server:
        publisher = WebPubSubPublisher.from_connection_string(
            server.connection_string, hub="enviromon"
        )
        small = _batch(BATCH, 0)
        publisher.publish(small)  # warm the connection pool
        samples = []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            publisher.publish(small)
            samples.append(time.perf_counter() - start)
        assert publisher.failures == 0
    print(f"sink_host.publish_ms_per_batch={statistics.median(samples) * 1000:.2f}")


if __name__ == "__main__":
    main()
