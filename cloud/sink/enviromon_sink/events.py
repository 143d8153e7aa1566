"""The one shape every host adapter turns its events into.

Functions' EventHubEvent, the local hub's event log and azure-eventhub's EventData each
become an InboundEvent; the core never sees a host type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class InboundEvent:
    """One event from IoT Hub's built-in endpoint.

    Attributes:
        body: the raw message body, exactly as received.
        device_id: from the hub's ``iothub-connection-device-id`` system property, which a
            device cannot forge. None when the host did not supply it (then the event is
            dead-lettered: a body's ``deviceId`` is never trusted as identity).
        module_id: from ``iothub-connection-module-id``, when a module sent it.
        properties: the message's application properties (e.g. ``temperatureAlert``).
        enqueued_time: when the hub accepted it.
        sequence_number: the partition sequence number, when known.
        message_id: the message's ``message-id`` system property, when set.
    """

    body: bytes
    device_id: str | None
    module_id: str | None = None
    properties: Mapping[str, str] = field(default_factory=dict)
    enqueued_time: datetime | None = None
    sequence_number: int | None = None
    message_id: str | None = None
