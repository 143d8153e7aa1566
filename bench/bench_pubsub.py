"""Fan-out of the local Web PubSub: messages sent through the real service SDK, to 10 clients.

The server runs as its own process (`enviromon pubsub serve --port 0`), as in development.
Ten ``json.webpubsub.azure.v1`` WebSocket clients (the dashboard's kind) connect with tokens
from the SDK's ``get_client_access_token``; one thread sends readings one by one with the
synchronous SDK (``send_to_all``, as the sink does). Figures:

- ``pubsub.fanout_msgs_per_s``: deliveries per second summed over the 10 clients, from the
  first send to the last delivery (a message reaching 10 clients counts 10). Goal ≥ 1000.
- ``pubsub.send_requests_per_s``: SDK ``send_to_all`` calls per second (the REST round trip).
- ``pubsub.delivered`` / ``pubsub.expected``: every message reached every client.
"""

from __future__ import annotations

import asyncio
import json
import select
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import websockets
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from websockets.typing import Subprotocol

CLIENTS = 10
MESSAGES = 2000
TIMEOUT_S = 45.0
GOAL = 1000
SERVE = [sys.executable, "-m", "enviromon_sim.cli", "pubsub", "serve"]
READING = {
    "deviceId": "pi-kitchen",
    "boot": "3f2a9c1e",
    "temperature": 21.4,
    "humidity": 45.2,
    "pressure": 1012.8,
    "gasResistance": 152000,
    "iaq": 87.5,
    "counts": {"Count": 1, "Duplicates": 0, "Missing": 0, "Rejected": 0},
}


def _start_server(key_file: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [*SERVE, "--port", "0", "--key-file", str(key_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    if not ready:
        proc.kill()
        raise TimeoutError("pubsub server did not start")
    return proc, proc.stdout.readline().strip()


async def _receive(url: str, counts: list[int], index: int, done: asyncio.Event) -> None:
    async with websockets.connect(
        url,
        subprotocols=[Subprotocol("json.webpubsub.azure.v1")],
        compression=None,
        open_timeout=10,
    ) as ws:
        json.loads(await asyncio.wait_for(ws.recv(), 10))  # connected event
        done.set()
        while counts[index] < MESSAGES:
            frame = json.loads(await ws.recv())
            if frame.get("type") == "message":
                counts[index] += 1


async def _run(client: WebPubSubServiceClient) -> tuple[float, float, int]:
    counts = [0] * CLIENTS
    connected = [asyncio.Event() for _ in range(CLIENTS)]
    receivers = [
        asyncio.create_task(
            _receive(client.get_client_access_token()["url"], counts, i, connected[i])
        )
        for i in range(CLIENTS)
    ]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in connected)), 15)
    send_elapsed: list[float] = []

    def send_all() -> None:
        t0 = time.perf_counter()
        for seq in range(MESSAGES):
            client.send_to_all({**READING, "seq": seq})
        send_elapsed.append(time.perf_counter() - t0)

    start = time.perf_counter()
    sender = threading.Thread(target=send_all)
    sender.start()
    try:
        await asyncio.wait_for(asyncio.gather(*receivers), TIMEOUT_S)
    except TimeoutError:
        for task in receivers:
            task.cancel()
    elapsed = time.perf_counter() - start
    sender.join(TIMEOUT_S)
    return elapsed, send_elapsed[0] if send_elapsed else float("nan"), sum(counts)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, conn = _start_server(Path(tmp) / "pubsub.key")
        try:
            client = WebPubSubServiceClient.from_connection_string(conn, hub="enviromon")
            elapsed, send_s, delivered = asyncio.run(_run(client))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print(f"pubsub.clients={CLIENTS}")
    print(f"pubsub.messages_sent={MESSAGES}")
    print(f"pubsub.expected={CLIENTS * MESSAGES}")
    print(f"pubsub.delivered={delivered}")
    print(f"pubsub.send_requests_per_s={MESSAGES / send_s:.0f}")
    print(f"pubsub.fanout_msgs_per_s={delivered / elapsed:.0f}")
    print(f"pubsub.fanout_msgs_per_s.goal={GOAL}")


if __name__ == "__main__":
    main()
