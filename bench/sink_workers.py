"""Worker-process code for bench_sink: our sink, and the ORIGINAL enviromon algorithm.

The original is re-implemented here, inside the benchmark and never in the product, as faithfully
as the SDK change allows (the original used the retired azure-cosmosdb-table ``TableService``;
this uses azure-data-tables with the same requests):

* one read-modify-write per message: ``get_entity`` (PartitionKey = one constant,
  "Environment", for every device; RowKey = the BODY's deviceId), ``Count += 1``, then
  ``merge_entity(if_match=etag)`` (``update_entity(MERGE, IfNotModified)`` here) or
  ``insert_entity`` for a new device;
* any failure (412, 409, anything: a bare ``except: pass``) retries at once, no delay, up to 10
  tries; then the count is dropped with an info log line, silently for the sender;
* a calibration lookup per device, cached per worker; no history; no de-duplication, so a
  redelivered message is counted again.

The only adaptation: the original iterated the body as a JSON array of messages; a body that is
one object is treated as a one-element array.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from azure.core import MatchConditions
from azure.data.tables import TableServiceClient, UpdateMode
from enviromon_sink.events import InboundEvent
from enviromon_sink.processor import Sink

from tests.sink.transport import FaultyTransport

_log = logging.getLogger(__name__)

ORIGINAL_PARTITION = "Environment"
ORIGINAL_TRIES = 10

_sink: Sink | None = None
_transport: FaultyTransport | None = None
_original: _Original | None = None


def init_ours(conn: str, prefix: str, table_calls: str = "pipeline") -> None:
    """Worker initializer: one Sink per process, with a request-counting transport."""
    global _sink, _transport
    _transport = FaultyTransport()
    _sink = Sink.from_connection_string(
        conn,
        table_prefix=prefix,
        transport=_transport,
        create_tables=False,
        table_calls=table_calls,
    )


def work_ours(batch: list[InboundEvent]) -> dict[str, int]:
    """Process one batch with our sink."""
    assert _sink is not None and _transport is not None
    before = _transport.requests
    result = _sink.process(batch)
    return {
        "requests": _transport.requests - before,
        "new": len(result.readings),
        "duplicates": result.duplicates,
        "dead": result.dead_lettered,
        "conflicts": result.conflicts,
    }


class _Original:
    """The original function's per-message algorithm (see the module docstring)."""

    def __init__(self, conn: str, prefix: str, transport: FaultyTransport) -> None:
        service = TableServiceClient.from_connection_string(conn, transport=transport)
        self.state = service.get_table_client(f"{prefix}DeviceState")
        self.calibration_table = service.get_table_client(f"{prefix}Calibration")
        self.calibration: dict[str, Any] = {}

    def update_device_state(self, telemetry: dict[str, Any]) -> tuple[str, int]:
        """Count one message; returns ("committed" | "dropped", conflicts lost on the way)."""
        device = str(telemetry.get("deviceId", telemetry.get("DeviceId")))
        tries = 0
        failures = 0
        while tries < ORIGINAL_TRIES:
            tries += 1
            try:
                found = self.state.get_entity(ORIGINAL_PARTITION, device)
                entity: dict[str, Any] = dict(found)
                etag: str | None = found.metadata["etag"]
                count = int(entity.get("Count", 0))
            except Exception:  # the original: bare except → treat as a new device
                entity, etag, count = {}, None, 0
            count += 1
            self._update_entity(telemetry, entity, device, count)
            self._calibrate(device)
            try:
                if etag is not None:
                    self.state.update_entity(
                        entity,
                        mode=UpdateMode.MERGE,
                        etag=etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
                else:
                    self.state.create_entity(entity)
                return "committed", failures
            except Exception:  # the original: bare except: pass, and straight back round
                failures += 1
        _log.info("Failed to commit update for device %s", device)
        return "dropped", failures

    def _update_entity(
        self, telemetry: dict[str, Any], entity: dict[str, Any], device: str, count: int
    ) -> None:
        entity["PartitionKey"] = ORIGINAL_PARTITION
        entity["RowKey"] = device
        entity["DeviceId"] = device
        entity["Geo"] = telemetry.get("geo", telemetry.get("Geo", "Sydney"))
        entity["Humidity"] = telemetry.get("humidity", telemetry.get("Humidity"))
        entity["hPa"] = telemetry.get(
            "pressure", telemetry.get("Pressure", telemetry.get("hPa", telemetry.get("HPa")))
        )
        entity["Celsius"] = telemetry.get(
            "temperature", telemetry.get("Temperature", telemetry.get("Celsius"))
        )
        entity["Light"] = telemetry.get("Light", telemetry.get("light"))
        entity["Id"] = telemetry.get("messageId", telemetry.get("Id"))
        entity["Count"] = count
        entity["Schema"] = 1

    def _calibrate(self, device: str) -> None:
        if device not in self.calibration:
            try:
                self.calibration[device] = self.calibration_table.get_entity(
                    ORIGINAL_PARTITION, device
                )
            except Exception:
                self.calibration[device] = None


def init_original(conn: str, prefix: str) -> None:
    """Worker initializer for the original algorithm."""
    global _original, _transport
    _transport = FaultyTransport()
    _original = _Original(conn, prefix, _transport)


def work_original(batch: list[InboundEvent]) -> dict[str, Any]:
    """Process one batch the original way: message by message."""
    assert _original is not None and _transport is not None
    before = _transport.requests
    outcomes: list[tuple[str, str, int]] = []  # (message id, outcome, failures)
    for event in batch:
        try:
            messages = json.loads(event.body.decode("utf-8"))
        except Exception:
            continue
        if isinstance(messages, dict):
            messages = [messages]
        for telemetry in messages:
            try:
                outcome, failures = _original.update_device_state(telemetry)
            except Exception:
                outcome, failures = "dropped", 0
            outcomes.append((f"{telemetry.get('deviceId')}/{event.message_id}", outcome, failures))
    return {"requests": _transport.requests - before, "outcomes": outcomes}
