"""The load generator: N simulated devices on the real device SDK, at a rate, for a duration.

Against the local hub (devices registered through its admin API; the SDK reaches it on 8883 or
through its HTTP CONNECT tunnel) or a real IoT Hub (devices registered with the service SDK, or
connection strings from a file). Each device has its own boot id and numbers its messages
1, 2, 3…; every message is one of the shapes in :mod:`enviromon_sim.ops.shapes`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from enviromon_sim.ops.errors import OpsError
from enviromon_sim.ops.shapes import SHAPES, Room

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 60.0
CONNECT_CONCURRENCY = 16
MAX_DEVICES = 1000
MAX_RATE = 100.0  # per device; IoT Hub S1 allows 100 sends/s per unit for the whole hub


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What to send: ``devices`` × ``round(rate × duration)`` messages of ``shape``."""

    connection_strings: Sequence[str]
    rate: float
    duration: float
    shape: str = "schema1"
    ca_pem: str | None = None
    proxy_port: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= len(self.connection_strings) <= MAX_DEVICES:
            raise OpsError(f"devices: 1 to {MAX_DEVICES}")
        if not 0 < self.rate <= MAX_RATE:
            raise OpsError(f"--rate: above 0, at most {MAX_RATE:g} messages/s per device")
        if not 0 < self.duration <= 86_400:
            raise OpsError("--duration: above 0, at most 86400 s")
        if self.shape not in SHAPES:
            raise OpsError(f"--shape: one of {', '.join(SHAPES)}")
        if self.per_device < 1:
            raise OpsError("--rate × --duration must give at least one message per device")

    @property
    def per_device(self) -> int:
        """Messages each device sends."""
        return round(self.rate * self.duration)

    @property
    def total(self) -> int:
        """Messages all devices send."""
        return self.per_device * len(self.connection_strings)


@dataclass(slots=True)
class Result:
    """What happened."""

    sent: int = 0
    failed: int = 0
    connect_failed: int = 0
    elapsed: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Messages per second actually sent."""
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0


def _client_kwargs(plan: Plan) -> dict[str, Any]:
    from azure.iot.device import ProxyOptions

    kwargs: dict[str, Any] = {"connection_retry_interval": 2, "keep_alive": 60}
    if plan.ca_pem is not None:
        kwargs["server_verification_cert"] = plan.ca_pem
    if plan.proxy_port is not None:
        kwargs["proxy_options"] = ProxyOptions(  # type: ignore[no-untyped-call]
            "HTTP", "127.0.0.1", plan.proxy_port
        )
    return kwargs


async def run(plan: Plan, *, on_sent: Callable[[int], None] = lambda _n: None) -> Result:
    """Connect every device, send the plan, shut every client down."""
    from azure.iot.device import Message
    from azure.iot.device.aio import IoTHubDeviceClient

    result = Result()
    rng = random.Random(plan.seed)  # noqa: S311 - simulated readings, not secrets
    shape = SHAPES[plan.shape]
    kwargs = _client_kwargs(plan)
    clients = [
        IoTHubDeviceClient.create_from_connection_string(cs, **kwargs)
        for cs in plan.connection_strings
    ]
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect(client: Any) -> bool:
        async with gate:
            try:
                await asyncio.wait_for(client.connect(), CONNECT_TIMEOUT_S)
                return True
            except Exception as exc:  # the SDK raises many kinds; each is reported
                result.connect_failed += 1
                result.errors.append(f"connect: {type(exc).__name__}: {exc}")
                return False

    async def device(client: Any, device_id: str, start: float) -> None:
        boot = secrets.token_hex(8)
        room = Room.pick(rng)
        own = random.Random(rng.random())  # noqa: S311
        for seq in range(1, plan.per_device + 1):
            delay = start + (seq - 1) / plan.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            out = shape(device_id, boot, seq, room, own)
            msg = Message(  # type: ignore[no-untyped-call]
                out.body,
                message_id=out.message_id,
                content_encoding="utf-8",
                content_type="application/json",
            )
            for key, value in out.properties.items():
                msg.custom_properties[key] = value
            try:
                await asyncio.wait_for(client.send_message(msg), SEND_TIMEOUT_S)
                result.sent += 1
                on_sent(1)
            except Exception as exc:  # a failed send is counted and reported, not retried
                result.failed += 1
                if len(result.errors) < 20:
                    result.errors.append(f"{device_id} #{seq}: {type(exc).__name__}: {exc}")
                on_sent(1)

    try:
        connected = await asyncio.gather(*(connect(c) for c in clients))
        start = time.monotonic()
        live = [
            (c, _device_id(cs))
            for c, cs, ok in zip(clients, plan.connection_strings, connected, strict=True)
            if ok
        ]
        await asyncio.gather(*(device(c, d, start) for c, d in live))
        result.elapsed = time.monotonic() - start
        result.failed += plan.per_device * result.connect_failed
    finally:
        await asyncio.gather(*(c.shutdown() for c in clients), return_exceptions=True)
    return result


def _device_id(connection_string: str) -> str:
    for part in connection_string.split(";"):
        key, _, value = part.partition("=")
        if key.strip() == "DeviceId":
            return value.strip()
    raise OpsError("a connection string has no DeviceId")
