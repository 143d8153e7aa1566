"""Build Functions trigger inputs the way the host and the Python worker do.

The worker hands an IoT Hub batch (``cardinality="many"``) to azure-functions'
``EventHubTriggerConverter.decode`` with the bodies as one collection Datum and the trigger
metadata as Datums; ``SystemPropertiesArray``/``PropertiesArray`` hold one JSON object per
event. We call that real converter, so the events our function gets are the ones it would
get on Azure (including the ``iothub_metadata`` it derives).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import azure.functions as func
from azure.functions.eventhub import EventHubTriggerConverter
from azure.functions.meta import Datum

from tests.sink.helpers import reading_body

_sequence = itertools.count(1)


@dataclass(frozen=True)
class HubMessage:
    """One message as IoT Hub's built-in endpoint holds it."""

    body: bytes
    device_id: str | None
    module_id: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    message_id: str | None = None


def _system_properties(msg: HubMessage, seq: int, now: str) -> dict[str, Any]:
    props: dict[str, Any] = {
        "x-opt-sequence-number": seq,
        "x-opt-offset": str(seq * 512),
        "x-opt-enqueued-time": now,
        "iothub-connection-auth-method": '{"scope":"module","type":"sas","issuer":"iothub"}',
        "iothub-connection-auth-generation-id": "638000000000000000",
        "iothub-enqueuedtime": now,
        "iothub-message-source": "Telemetry",
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "EnqueuedTimeUtc": now,
        "SequenceNumber": seq,
        "Offset": str(seq * 512),
        "PartitionKey": None,
    }
    if msg.device_id is not None:
        props["iothub-connection-device-id"] = msg.device_id
    if msg.module_id is not None:
        props["iothub-connection-module-id"] = msg.module_id
    if msg.message_id is not None:
        props["message-id"] = msg.message_id
    return props


def function_batch(
    messages: Sequence[HubMessage], *, data_type: str = "collection_bytes"
) -> list[func.EventHubEvent]:
    """Decode a batch through the real converter, as the worker does for ``many``.

    ``data_type="collection_bytes"`` is what ``data_type=BINARY`` on the trigger gives;
    ``"json"`` is the host's default for IoT Hub (bodies parsed and re-serialised).
    """
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    seqs = [next(_sequence) for _ in messages]
    system = [_system_properties(m, s, now) for m, s in zip(messages, seqs, strict=True)]
    metadata = {
        "SystemPropertiesArray": Datum(json.dumps(system), "json"),
        "PropertiesArray": Datum(json.dumps([dict(m.properties) for m in messages]), "json"),
        "EnqueuedTimeUtcArray": Datum(json.dumps([now] * len(messages)), "json"),
        "SequenceNumberArray": Datum(json.dumps(seqs), "json"),
        "PartitionContext": Datum(json.dumps({"EventHubName": "enviromon-hub"}), "json"),
    }
    if data_type == "collection_bytes":
        data = Datum(SimpleNamespace(bytes=[m.body for m in messages]), "collection_bytes")
    elif data_type == "json":
        data = Datum(json.dumps([json.loads(m.body) for m in messages]), "json")
    else:
        raise ValueError(data_type)
    events = EventHubTriggerConverter.decode(data, trigger_metadata=metadata)
    assert isinstance(events, list)
    return events


def http_request(
    method: str,
    route: str,
    *,
    route_params: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> func.HttpRequest:
    """An HttpRequest as the worker builds it for an ``api/<route>`` call."""
    return func.HttpRequest(
        method=method,
        url=f"http://localhost:7071/api/{route}",
        headers=dict(headers or {}),
        params=dict(params or {}),
        route_params=dict(route_params or {}),
        body=b"",
    )


def telemetry_body(
    device: str,
    seq: int,
    *,
    boot: str = "3f2a9c1e",
    ts: datetime | None = None,
    temperature: float = 21.4,
) -> bytes:
    """A schema-1 telemetry message as the edge module sends it, taken now unless ``ts``."""
    body = reading_body(
        seq, boot=boot, label=device, temperature=temperature, ts=ts or datetime.now(UTC)
    )
    return json.dumps(body).encode()
