"""Client side of bench_hub.py: a process of async azure-iot-device clients.

In its own module so multiprocessing (spawn) can import it by name.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any


def client_proc(
    conn_strs: list[str], ca: str, proxy_port: int, start_at: float, count: int, out: Any
) -> None:
    """Connect async SDK clients, send ``count`` messages from each, report (sent, t0, t1)."""
    from azure.iot.device import Message, ProxyOptions
    from azure.iot.device.aio import IoTHubDeviceClient

    async def run() -> tuple[int, float, float]:
        clients = [
            IoTHubDeviceClient.create_from_connection_string(
                cs,
                server_verification_cert=ca,
                proxy_options=ProxyOptions("HTTP", "127.0.0.1", proxy_port),
                connection_retry_interval=1,
            )
            for cs in conn_strs
        ]
        try:
            await asyncio.wait_for(asyncio.gather(*(c.connect() for c in clients)), 60)
            await asyncio.sleep(max(0.0, start_at - time.time()))
            t0 = time.time()

            async def send_all(i: int, client: Any) -> None:
                for seq in range(1, count + 1):
                    body = json.dumps({"c": i, "seq": seq, "t": time.time(), "temperature": 21.5})
                    msg = Message(body, message_id=f"{i}:{seq}", content_type="application/json")
                    msg.custom_properties["source"] = "simulated"
                    await asyncio.wait_for(client.send_message(msg), 30)

            await asyncio.wait_for(
                asyncio.gather(*(send_all(i, c) for i, c in enumerate(clients))), 120
            )
            return len(clients) * count, t0, time.time()
        finally:
            await asyncio.gather(*(c.shutdown() for c in clients), return_exceptions=True)

    out.put(asyncio.run(run()))
