"""Live publishing of committed batches to Azure Web PubSub.

The counts are committed before anything is published, and publishing can never undo or
hold them up: a failed publish is logged (with the device ids it carried) and counted in
:attr:`WebPubSubPublisher.failures`, and :meth:`publish` returns normally. A dashboard that
missed a message catches up from the REST API, which it reloads after every reconnect.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from enviromon_sink.settings import Settings

_log = logging.getLogger(__name__)

# Web PubSub limits a client frame to 1 MB. The service wraps what we send in an envelope
# ({"type":"message","from":"server","dataType":"json","data":...}) and may re-serialise
# it, so keep well under the limit.
FRAME_LIMIT_BYTES = 1024 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 900 * 1024
_MAX_IDS_LOGGED = 20


class PublishableBatch(Protocol):
    """What a publisher needs from a committed batch (``processor.BatchResult``)."""

    @property
    def readings(self) -> Sequence[Mapping[str, Any]]:
        """The batch's new readings, JSON-ready, each with its ``deviceId``."""
        ...

    @property
    def devices(self) -> Mapping[str, Mapping[str, Any]]:
        """The committed state (counts, latest values) of each device in the batch."""
        ...


class Publisher(Protocol):
    """Sends a committed batch to live clients. Never raises."""

    def publish(self, result: PublishableBatch) -> None:
        """Send ``result``'s readings and device states; log and count any failure."""
        ...


class NullPublisher:
    """The publisher when no Web PubSub is configured: publishes nothing."""

    failures = 0
    published = 0

    def publish(self, result: PublishableBatch) -> None:
        """Do nothing: there is nobody to tell."""


class _Sender(Protocol):
    """The part of ``WebPubSubServiceClient`` the publisher uses."""

    def send_to_all(self, message: Any, *, content_type: str = ..., **kwargs: Any) -> None: ...


class WebPubSubPublisher:
    """Publishes each batch to every client of a Web PubSub hub with ``send_to_all``.

    Messages have the shape ``{"type": "readings", "readings": [...], "devices": {...}}``;
    a batch too big for one frame is split into several such messages, each carrying the
    states of the devices whose readings it holds.
    """

    def __init__(
        self,
        *,
        client: _Sender,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        """Wrap a ``WebPubSubServiceClient`` (see :meth:`from_connection_string`)."""
        if not 1024 <= max_message_bytes <= FRAME_LIMIT_BYTES:
            raise ValueError(f"max_message_bytes must be 1024..{FRAME_LIMIT_BYTES}")
        self._client = client
        self._max = max_message_bytes
        self._lock = threading.Lock()
        self._failures = 0
        self._published = 0
        self._dropped_readings = 0

    @classmethod
    def from_connection_string(
        cls, connection_string: str, *, hub: str, timeout_seconds: float = 5.0
    ) -> WebPubSubPublisher:
        """Build the real SDK client with short timeouts and no retry.

        A retry would hold up the next batch's counting while Web PubSub is down, for a
        message the dashboard recovers anyway from REST when it reconnects.
        """
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        from azure.messaging.webpubsubservice import WebPubSubServiceClient

        client = WebPubSubServiceClient.from_connection_string(
            connection_string,
            hub=hub,
            connection_timeout=timeout_seconds,
            read_timeout=timeout_seconds,
            retry_total=0,
        )
        return cls(client=client)

    @property
    def failures(self) -> int:
        """Messages not published, each logged with its device ids.

        After a batch's first failed message, the rest of that batch is not tried (and counted).
        """
        with self._lock:
            return self._failures

    @property
    def published(self) -> int:
        """Messages accepted by Web PubSub."""
        with self._lock:
            return self._published

    @property
    def dropped_readings(self) -> int:
        """Single readings too big for any frame, never sent (also counted as failures)."""
        with self._lock:
            return self._dropped_readings

    def publish(self, result: PublishableBatch) -> None:
        """Send the batch; never raises into the counting path."""
        try:
            messages, oversized = split_messages(
                result.readings, result.devices, max_bytes=self._max
            )
        except Exception:  # a reading that is not JSON-ready must not stop the counts
            _log.exception("could not serialise a batch for Web PubSub; not published")
            with self._lock:
                self._failures += 1
            return
        if oversized:
            _log.error(
                "%d reading(s) too big for a Web PubSub frame, not published; devices: %s",
                len(oversized),
                _ids(oversized),
            )
            with self._lock:
                self._failures += len(oversized)
                self._dropped_readings += len(oversized)
        for index, message in enumerate(messages):
            try:
                self._client.send_to_all(message, content_type="application/json")
            except Exception as exc:  # any failure: logged and counted, never raised
                # The rest of this batch would most likely fail the same way, each after a
                # timeout that holds up the counting of the next batch: give up on it now.
                rest = messages[index:]
                with self._lock:
                    self._failures += len(rest)
                _log.warning(
                    "Web PubSub publish failed (%s: %s); %d message(s), %d reading(s) of"
                    " devices %s not delivered live",
                    type(exc).__name__,
                    exc,
                    len(rest),
                    sum(len(m["readings"]) for m in rest),
                    ", ".join(sorted({d for m in rest for d in m["devices"]})[:_MAX_IDS_LOGGED])
                    or "-",
                )
                return
            with self._lock:
                self._published += 1


def split_messages(
    readings: Sequence[Mapping[str, Any]],
    devices: Mapping[str, Mapping[str, Any]],
    *,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> tuple[list[dict[str, Any]], list[Mapping[str, Any]]]:
    """Pack readings (in order) and device states into messages of at most ``max_bytes``.

    Sizes are those of ``json.dumps`` with its defaults, which is how the SDK serialises
    a JSON message. Each message carries the states of the devices its readings belong to;
    states of devices with no new reading (only duplicates or rejects) ride along where
    they fit.

    Returns:
        The messages, and any reading that cannot fit in a message even alone.
    """
    empty_size = _size({"type": "readings", "readings": [], "devices": {}})
    messages: list[dict[str, Any]] = []
    oversized: list[Mapping[str, Any]] = []
    current: dict[str, Any] = _empty()
    used = empty_size

    def flush() -> None:
        nonlocal current, used
        if current["readings"] or current["devices"]:
            messages.append(current)
        current, used = _empty(), empty_size

    def device_cost(device_id: str) -> int:
        # '"id": {...}' plus the ', ' separator.
        return _size(device_id) + 2 + _size(devices[device_id]) + 2

    for reading in readings:
        device_id = _device_of(reading)
        alone = _size(reading) + 2 + (device_cost(device_id) if device_id in devices else 0)
        if empty_size + alone > max_bytes:
            oversized.append(reading)  # no message can hold it: it must not cut one short
            continue
        cost = _size(reading) + 2
        if device_id in devices and device_id not in current["devices"]:
            cost += device_cost(device_id)
        if used + cost > max_bytes:
            flush()
            cost = alone
        current["readings"].append(dict(reading))
        if device_id in devices:
            current["devices"][device_id] = dict(devices[device_id])
        used += cost
    sent = {d for m in messages for d in m["devices"]} | set(current["devices"])
    for device_id in devices:
        if device_id in sent:
            continue
        cost = device_cost(device_id)
        if used + cost > max_bytes:
            flush()
        if used + cost <= max_bytes:
            current["devices"][device_id] = dict(devices[device_id])
            used += cost
        else:
            _log.error("state of device %r too big for a Web PubSub frame", device_id)
    flush()
    return messages, oversized


def _empty() -> dict[str, Any]:
    return {"type": "readings", "readings": [], "devices": {}}


def _size(value: Any) -> int:
    return len(json.dumps(value).encode("utf-8"))


def _device_of(reading: Mapping[str, Any]) -> str:
    value = reading.get("deviceId")
    return value if isinstance(value, str) else ""


def _ids(readings: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(sorted({_device_of(r) for r in readings})[:_MAX_IDS_LOGGED]) or "-"


def publisher_from_settings(settings: Settings) -> WebPubSubPublisher | NullPublisher:
    """The real publisher when Web PubSub is configured, else one that publishes nothing."""
    if settings.webpubsub_connection_string is None:
        _log.warning("WEBPUBSUB_CONNECTION_STRING is not set: batches are not published live")
        return NullPublisher()
    return WebPubSubPublisher.from_connection_string(
        settings.webpubsub_connection_string,
        hub=settings.webpubsub_hub,
        timeout_seconds=settings.publish_timeout_seconds,
    )
