"""An HTTP CONNECT tunnel to the hub's MQTT/TLS port, for clients on a non-8883 hub.

azure-iot-device always dials port 8883 (common/mqtt_transport.py: ``port=8883``); there is no
port option. Its documented ``proxy_options`` (an HTTP CONNECT proxy via PySocks) is the one
unmodified way to reach a hub on another port: the tunnel answers every ``CONNECT host:8883``
by piping bytes to the hub's real port; TLS runs end to end through it.

The tunnel outlives hub restarts on purpose: if the proxy port itself went away the SDK would
see a ``ProtocolProxyError``, which it treats as fatal and stops reconnecting, whereas a hub
that is down should look like one to the client. So when the hub does not answer, the tunnel
accepts the CONNECT and then closes the socket: the SDK sees a failed connection and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 10.0  # the whole CONNECT request must arrive within this


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        dst.transport.abort()


class Tunnel:
    """Listen on ``host:port``; tunnel each CONNECT to ``host:target()``."""

    def __init__(self, *, host: str, port: int, target: Callable[[], int | None]) -> None:
        """``port`` 0 picks a free one; ``target`` gives the hub's current MQTT port."""
        self.host = host
        self.port = port
        self._target = target
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Open the listener."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Close the listener and every open tunnel."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._tunnel(reader, writer)
        except (
            OSError,
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ) as exc:
            logger.debug("tunnel ended: %r", exc)
        finally:
            writer.transport.abort()
            self._tasks.discard(task)

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEADER_TIMEOUT_S)
        if not head.startswith(b"CONNECT "):
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        port = self._target()
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        if port is not None:
            try:
                upstream = await asyncio.wait_for(asyncio.open_connection(self.host, port), 5)
            except (OSError, TimeoutError):
                upstream = None
        # One write: PySocks reads the status line through a buffered file and drops the rest.
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        if upstream is None:
            return  # the hub is down: the client sees its connection fail, and retries
        up_reader, up_writer = upstream
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.transport.abort()
