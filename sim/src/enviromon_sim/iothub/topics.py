"""IoT Hub's MQTT topics: parse what a client publishes, build what the hub sends. Pure.

A device publishes only under its own name; everything it may subscribe to is listed here.
Device and module ids are never URL-encoded in topics (the SDK's mqtt_topic_iothub.py);
property names and values are.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from enviromon_sim.iothub.errors import InvalidIdError, ProtocolError

TWIN_RES_FILTER = "$iothub/twin/res/#"
TWIN_DESIRED_FILTER = "$iothub/twin/PATCH/properties/desired/#"
METHODS_FILTER = "$iothub/methods/POST/#"
MAX_RID_LENGTH = 128  # the SDK sends a uuid4 (36); a longer one could not be echoed back

# System properties the SDK puts first on a telemetry topic, and the event-log names they map to.
SYSTEM_PROPERTIES = {
    "$.mid": "message-id",
    "$.cid": "correlation-id",
    "$.uid": "user-id",
    "$.ct": "content-type",
    "$.ce": "content-encoding",
    "$.exp": "absolute-expiry-time",
}


# IoT Hub's documented id alphabet: ASCII letters and digits plus - . % _ * ? ! ( ) , : = @ $ '
# (no '/', '+', '#', space or control character: an id can never be mistaken for a topic level
# or a wildcard, and is safe to write into a log line).
_ID = re.compile(r"[A-Za-z0-9\-.%_*?!(),:=@$']{1,128}")


def check_id(value: object, what: str = "device id") -> str:
    """Return ``value`` if IoT Hub would accept it as an id, else raise InvalidIdError."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidIdError(
            f"invalid {what} {value!r}: 1-128 of A-Z a-z 0-9 - . % _ * ? ! ( ) , : = @ $ '"
        )
    return value


@dataclass(frozen=True, slots=True)
class Identity:
    """A device or module id pair, checked on construction (InvalidIdError)."""

    device_id: str
    module_id: str | None = None

    def __post_init__(self) -> None:
        check_id(self.device_id)
        if self.module_id is not None:
            check_id(self.module_id, "module id")

    @property
    def client_id(self) -> str:
        """The MQTT client id: ``device`` or ``device/module``."""
        return f"{self.device_id}/{self.module_id}" if self.module_id else self.device_id

    @property
    def topic_base(self) -> str:
        """``devices/{d}`` or ``devices/{d}/modules/{m}``."""
        base = f"devices/{self.device_id}"
        return f"{base}/modules/{self.module_id}" if self.module_id else base

    def __str__(self) -> str:
        return self.client_id

    @classmethod
    def parse(cls, text: str) -> Identity:
        """``pi-1`` or ``pi-1/enviro_sensor`` (InvalidIdError otherwise)."""
        device, sep, module = text.partition("/")
        return cls(device, module if sep else None)


@dataclass(frozen=True, slots=True)
class Telemetry:
    """A telemetry publish: output name (modules), system and application properties."""

    output_name: str | None
    system_properties: dict[str, str]
    properties: dict[str, str]


@dataclass(frozen=True, slots=True)
class TwinGet:
    """``$iothub/twin/GET/?$rid=X``."""

    rid: str


@dataclass(frozen=True, slots=True)
class TwinReportedPatch:
    """``$iothub/twin/PATCH/properties/reported/?$rid=X``."""

    rid: str


@dataclass(frozen=True, slots=True)
class MethodResponse:
    """``$iothub/methods/res/{status}/?$rid=X``."""

    rid: str
    status: int


Inbound = Telemetry | TwinGet | TwinReportedPatch | MethodResponse


def parse_property_string(text: str) -> list[tuple[str, str]]:
    """``a=1&b=x%20y`` → [("a", "1"), ("b", "x y")]. A key without '=' gets ''."""
    pairs: list[tuple[str, str]] = []
    if not text:
        return pairs
    for entry in text.split("&"):
        if not entry:
            continue
        key, _, value = entry.partition("=")
        pairs.append((urllib.parse.unquote(key), urllib.parse.unquote(value)))
    return pairs


def _query(topic: str) -> tuple[str, dict[str, str]]:
    path, sep, query = topic.partition("?")
    if not sep:
        raise ProtocolError(f"topic lacks ?$rid=: {topic!r}")
    return path, dict(parse_property_string(query))


def _rid(query: dict[str, str]) -> str:
    rid = query.get("$rid", "")
    if not rid:
        raise ProtocolError("request id ($rid) missing")
    if len(rid) > MAX_RID_LENGTH:
        raise ProtocolError(f"request id ($rid) longer than {MAX_RID_LENGTH} characters")
    return rid


def parse_inbound(topic: str, identity: Identity) -> Inbound:
    """Classify a topic a client published to, as seen from its own identity.

    Raises:
        ProtocolError: the topic is not one IoT Hub accepts from this identity, including
            telemetry published under another device's or module's name.
    """
    if topic.startswith("$iothub/"):
        path, query = _query(topic)
        if path == "$iothub/twin/GET/":
            return TwinGet(_rid(query))
        if path == "$iothub/twin/PATCH/properties/reported/":
            return TwinReportedPatch(_rid(query))
        parts = path.split("/")
        if len(parts) == 5 and parts[:3] == ["$iothub", "methods", "res"] and parts[4] == "":
            try:
                status = int(urllib.parse.unquote(parts[3]))
            except ValueError as exc:
                raise ProtocolError("method status is not an integer") from exc
            return MethodResponse(_rid(query), status)
        raise ProtocolError(f"unsupported $iothub topic: {topic!r}")
    prefix = identity.topic_base + "/messages/events/"
    if not topic.startswith(prefix):
        raise ProtocolError(f"{identity} may not publish to {topic!r}")
    rest = topic[len(prefix) :]
    output_name: str | None = None
    system: dict[str, str] = {}
    app: dict[str, str] = {}
    for key, value in parse_property_string(rest):
        if key == "$.on":
            output_name = value
        elif key in SYSTEM_PROPERTIES:
            system[SYSTEM_PROPERTIES[key]] = value
        elif key.startswith("$."):
            continue  # other system properties ($.to, $.ifid...) are not the sender's to set
        else:
            app[key] = value
    return Telemetry(output_name, system, app)


def allowed_filters(identity: Identity) -> frozenset[str]:
    """The topic filters IoT Hub lets this identity subscribe to."""
    allowed = {TWIN_RES_FILTER, TWIN_DESIRED_FILTER, METHODS_FILTER}
    if identity.module_id:
        allowed.add(identity.topic_base + "/inputs/#")
    else:
        allowed.add(identity.topic_base + "/messages/devicebound/#")
    return frozenset(allowed)


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic filter matching with ``+`` and ``#``."""
    fparts = topic_filter.split("/")
    tparts = topic.split("/")
    for i, fpart in enumerate(fparts):
        if fpart == "#":
            return True
        if i >= len(tparts):
            return False
        if fpart not in ("+", tparts[i]):
            return False
    return len(fparts) == len(tparts)


def twin_response_topic(status: int, rid: str, version: int | None = None) -> str:
    """``$iothub/twin/res/{status}/?$rid=X[&$version=N]``."""
    topic = f"$iothub/twin/res/{status}/?$rid={urllib.parse.quote(rid, safe='')}"
    return topic if version is None else f"{topic}&$version={version}"


def desired_patch_topic(version: int) -> str:
    """``$iothub/twin/PATCH/properties/desired/?$version=N``."""
    return f"$iothub/twin/PATCH/properties/desired/?$version={version}"


def method_request_topic(name: str, rid: str) -> str:
    """``$iothub/methods/POST/{name}/?$rid=X``."""
    return (
        f"$iothub/methods/POST/{urllib.parse.quote(name, safe='')}/"
        f"?$rid={urllib.parse.quote(rid, safe='')}"
    )
