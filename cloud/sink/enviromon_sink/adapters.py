"""Host events to :class:`InboundEvent`: Functions, the local hub's event log, azure-eventhub.

Identity always comes from the hub's system properties (``iothub-connection-device-id``),
which a device cannot set; whatever a body says about its device is a label at most.

How the Functions host fills an IoT Hub batch (``cardinality="many"``), read from
azure-functions 1.26 ``EventHubTriggerConverter.decode_multiple_events``: the trigger metadata
is shared by every event of the batch, with ``SystemPropertiesArray`` and ``PropertiesArray``
holding one entry per event in batch order; each event's ``iothub_metadata`` is its
``SystemPropertiesArray`` entry's ``iothub-*`` keys with the prefix removed (so
``connection-device-id``). With ``cardinality="one"`` the metadata holds ``SystemProperties``
and ``Properties`` instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from enviromon_sink.events import InboundEvent

if TYPE_CHECKING:  # host types: the core and other hosts never import them
    import azure.functions as func
    from azure.eventhub import EventData
    from enviromon_sim.iothub.eventlog import Event as LogEvent

_log = logging.getLogger(__name__)

DEVICE_ID = "iothub-connection-device-id"
MODULE_ID = "iothub-connection-module-id"
MESSAGE_ID = "message-id"

# Application properties are small strings in IoT Hub (the whole property bag is at most
# 81 KB); a cap keeps a hostile bag from growing every row that stores them.
_MAX_PROPERTIES = 64
_MAX_PROPERTY_CHARS = 1024


def from_function_events(events: Sequence[func.EventHubEvent]) -> list[InboundEvent]:
    """Adapt one Functions IoT Hub trigger batch (``cardinality="many"``, or one event)."""
    out: list[InboundEvent] = []
    # With cardinality "many" every event shares the batch's trigger metadata, and each
    # event's ``metadata`` would parse all of it again: read it once (O(n), not O(n²)).
    first = events[0].metadata if events else None
    shared = first if first is not None and "SystemPropertiesArray" in first else None
    for index, event in enumerate(events):
        metadata: Mapping[str, Any] = shared if shared is not None else (event.metadata or {})
        system = _nth(metadata.get("SystemPropertiesArray"), index) or _as_mapping(
            metadata.get("SystemProperties")
        )
        app_props = _nth(metadata.get("PropertiesArray"), index) or _as_mapping(
            metadata.get("Properties")
        )
        iothub = event.iothub_metadata or {}
        device_id = _text(iothub.get("connection-device-id")) or _text(system.get(DEVICE_ID))
        module_id = _text(iothub.get("connection-module-id")) or _text(system.get(MODULE_ID))
        out.append(
            InboundEvent(
                body=event.get_body(),
                device_id=device_id,
                module_id=module_id,
                properties=_clean_properties(app_props),
                enqueued_time=_utc(event.enqueued_time),
                sequence_number=event.sequence_number,
                message_id=_text(system.get(MESSAGE_ID)),
            )
        )
    return out


def from_event_log(events: Iterable[LogEvent]) -> list[InboundEvent]:
    """Adapt events read from the local hub's event log (``enviromon_sim.iothub.eventlog``)."""
    return [
        InboundEvent(
            body=bytes(event.body),
            device_id=_text(event.system_properties.get(DEVICE_ID)),
            module_id=_text(event.system_properties.get(MODULE_ID)),
            properties=_clean_properties(event.properties),
            enqueued_time=_utc(event.enqueued_time),
            sequence_number=event.sequence_number,
            message_id=_text(event.system_properties.get(MESSAGE_ID)),
        )
        for event in events
    ]


def from_event_data(events: Iterable[EventData]) -> list[InboundEvent]:
    """Adapt ``azure.eventhub.EventData`` received from IoT Hub's built-in endpoint.

    For IoT Hub messages the AMQP annotations and properties come back with bytes keys
    (``b"iothub-connection-device-id"``) and often bytes values.
    """
    out: list[InboundEvent] = []
    for event in events:
        system = {_text(k): v for k, v in (event.system_properties or {}).items()}
        raw_props = {_text(k): v for k, v in (event.properties or {}).items()}
        out.append(
            InboundEvent(
                body=_body_bytes(event),
                device_id=_text(system.get(DEVICE_ID)),
                module_id=_text(system.get(MODULE_ID)),
                properties=_clean_properties(raw_props),
                enqueued_time=_utc(event.enqueued_time),
                sequence_number=event.sequence_number,
                message_id=_text(system.get(MESSAGE_ID)) or _text(event.message_id),
            )
        )
    return out


def _body_bytes(event: EventData) -> bytes:
    """The body as bytes; an AMQP value or sequence body is re-serialised as JSON."""
    from azure.eventhub.amqp import AmqpMessageBodyType

    body: Any = event.body
    if event.body_type == AmqpMessageBodyType.DATA:
        return b"".join(bytes(part) for part in body)
    # IoT Hub only produces data bodies; a value or sequence body from another source is
    # kept (as JSON text) so the core can dead-letter it with a reason, never lost.
    if event.body_type == AmqpMessageBodyType.SEQUENCE:
        body = list(body)
    return json.dumps(body, default=repr).encode("utf-8")


def _nth(value: Any, index: int) -> Mapping[str, Any]:
    if isinstance(value, list) and index < len(value):
        return _as_mapping(value[index])
    return {}


def _as_mapping(value: Any) -> Mapping[str, Any]:
    if isinstance(value, str):
        # Some host versions hand a single event's SystemProperties as a JSON string.
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    """A system property as text; bytes are UTF-8 (lossless or replaced), blanks are None."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value).decode("utf-8", errors="replace")
    text = str(value)
    return text if text else None


def _clean_properties(props: Mapping[Any, Any]) -> dict[str, str]:
    """Application properties as ``str -> str``, bounded in number and size."""
    out: dict[str, str] = {}
    for key, value in props.items():
        if len(out) >= _MAX_PROPERTIES:
            _log.warning("dropping application properties beyond the first %d", _MAX_PROPERTIES)
            break
        name = _text(key)
        if name is None or value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str | bytes | bytearray | memoryview | int | float):
            text = _text(value) or ""
        else:
            text = json.dumps(value, default=str)
        out[name[:_MAX_PROPERTY_CHARS]] = text[:_MAX_PROPERTY_CHARS]
    return out


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
