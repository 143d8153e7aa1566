"""Telemetry as it arrives at the built-in endpoint, for ``enviromon monitor-events``.

Each event is printed as ``az iot hub monitor-events --properties all`` prints it::

    {"event": {"origin": "pi-1", "module": "enviro_sensor", "payload": {...},
               "annotations": {"iothub-enqueuedtime": ..., "x-opt-sequence-number": ...},
               "properties": {"system": {...}, "application": {...}}}}

Local: read the hub's event log (``events.sqlite``). Real: the IoT Hub's Event
Hub-compatible endpoint, with ``azure-eventhub``.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from enviromon_sim.iothub.eventlog import EventLog
from enviromon_sim.ops.errors import ConfigurationError, OpsError

DEVICE_ID = "iothub-connection-device-id"
MODULE_ID = "iothub-connection-module-id"
POLL_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class Arrived:
    """One event from the built-in endpoint, decoded to text keys and values."""

    sequence_number: int
    enqueued_time: datetime | None
    system: Mapping[str, str]
    application: Mapping[str, str]
    body: bytes

    @property
    def device_id(self) -> str:
        """The hub's device id (never the body's)."""
        return self.system.get(DEVICE_ID, "")

    @property
    def module_id(self) -> str | None:
        """The hub's module id, for a module's message."""
        return self.system.get(MODULE_ID) or None


def payload_of(body: bytes) -> Any:
    """The body as JSON if it is JSON, else as text, else as ``{"base64": ...}``."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(body).decode("ascii")}
    try:
        return json.loads(text)
    except ValueError:
        return text


def event_view(event: Arrived) -> dict[str, Any]:
    """The ``az iot hub monitor-events``-shaped view of ``event``."""
    annotations: dict[str, Any] = {"x-opt-sequence-number": event.sequence_number}
    if event.enqueued_time is not None:
        annotations["iothub-enqueuedtime"] = event.enqueued_time.isoformat()
    return {
        "event": {
            "origin": event.device_id,
            "module": event.module_id or "",
            "payload": payload_of(event.body),
            "annotations": annotations,
            "properties": {"system": dict(event.system), "application": dict(event.application)},
        }
    }


def matches(event: Arrived, device_id: str | None, module_id: str | None) -> bool:
    """Whether ``event`` is from the device (and module) asked for; None = any."""
    if device_id is not None and event.device_id != device_id:
        return False
    return module_id is None or event.module_id == module_id


def local_events(path: Path, *, from_start: bool, stop: Callable[[], bool]) -> Iterator[Arrived]:
    """Events of the local hub's event log as they arrive, until ``stop()`` is true."""
    if not path.exists():
        raise OpsError(f"no event log at {path}: run `enviromon hub serve` in that state dir")
    with EventLog(path) as log:
        after = 0 if from_start else log.last_sequence_number()
        while not stop():
            batch = log.read_after(after, max_events=500)
            if not batch:
                time.sleep(POLL_SECONDS)
                continue
            for ev in batch:
                after = ev.sequence_number
                yield Arrived(
                    sequence_number=ev.sequence_number,
                    enqueued_time=ev.enqueued_time,
                    system=dict(ev.system_properties),
                    application=dict(ev.properties),
                    body=ev.body,
                )


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def decode_amqp_properties(props: Mapping[Any, Any] | None) -> dict[str, str]:
    """AMQP property maps (bytes keys and values) as text, the names the local hub uses."""
    out: dict[str, str] = {}
    for key, value in (props or {}).items():
        name = _text(key)
        if value is None:
            continue
        out[name] = _text(value)
    return out


def azure_events(
    connection_string: str,
    *,
    consumer_group: str,
    from_start: bool,
    stop: Callable[[], bool],
) -> Iterator[Arrived]:
    """Events from a real IoT Hub's Event Hub-compatible endpoint (``azure-eventhub``).

    ``connection_string`` is the built-in endpoint's (``Endpoint=sb://…;EntityPath=…``).
    """
    if "EntityPath=" not in connection_string:
        raise ConfigurationError(
            "the events connection string needs EntityPath= (IoT Hub → Built-in endpoints →"
            " Event Hub-compatible endpoint)"
        )
    import queue

    from azure.eventhub import EventData, EventHubConsumerClient

    client = EventHubConsumerClient.from_connection_string(
        connection_string, consumer_group=consumer_group
    )
    arrived: queue.Queue[Arrived | BaseException] = queue.Queue()

    def on_event(_partition: Any, event: EventData | None) -> None:
        if event is None:
            return
        raw: Any = event.body  # bytes, or an iterable of data sections
        body = raw if isinstance(raw, bytes) else b"".join(bytes(part) for part in raw)
        system = decode_amqp_properties(event.system_properties)
        arrived.put(
            Arrived(
                sequence_number=int(event.sequence_number or 0),
                enqueued_time=event.enqueued_time,
                system=system,
                application=decode_amqp_properties(event.properties),
                body=body,
            )
        )

    def on_error(_partition: Any, error: BaseException) -> None:
        arrived.put(error)

    def run() -> None:
        try:
            client.receive(
                on_event=on_event,
                on_error=on_error,
                starting_position="-1" if from_start else "@latest",
            )
        except BaseException as exc:  # handed to the reading thread
            arrived.put(exc)

    worker = threading.Thread(target=run, name="monitor-events", daemon=True)
    worker.start()
    try:
        while not stop():
            try:
                item = arrived.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise OpsError(f"event hub endpoint: {item}") from item
            yield item
    finally:
        client.close()
        worker.join(timeout=10)
