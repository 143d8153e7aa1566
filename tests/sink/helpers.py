"""Builders shared by the sink core tests: schema-1 bodies and hub events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from enviromon_sink.events import InboundEvent

T0 = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


def reading_body(
    seq: int,
    *,
    boot: str = "0a1b2c3d",
    label: str = "pi-kitchen",
    temperature: float | None = 21.5,
    ts: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One schema-1 reading as the edge module sends it."""
    when = ts or (T0 + timedelta(seconds=seq))
    body: dict[str, Any] = {
        "schema": 1,
        "deviceId": label,
        "boot": boot,
        "seq": seq,
        "ts": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "source": "simulated",
        "temperature": temperature,
        "humidity": 45.2,
        "pressure": 1012.8,
        "gasResistance": None,
        "iaq": None,
        "calibration": 0,
        "flags": [],
    }
    body.update(extra)
    return body


def event(
    body: Any,
    *,
    device: str | None = "pi-kitchen",
    seq_no: int | None = None,
    enqueued: datetime | None = None,
    properties: dict[str, str] | None = None,
    module: str | None = None,
) -> InboundEvent:
    """A hub event around ``body`` (JSON-encoded unless it is already bytes)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    if enqueued is None:
        # The hub enqueues a reading just after it was taken (the sink bounds ts by this).
        stamped = body.get("ts") if isinstance(body, dict) else None
        enqueued = datetime.fromisoformat(stamped.replace("Z", "+00:00")) if stamped else T0
    return InboundEvent(
        body=raw,
        device_id=device,
        module_id=module,
        properties=properties or {},
        enqueued_time=enqueued,
        sequence_number=seq_no,
    )
