"""A tiny HTTP/1.1 server that answers at once, except for one stall of known length.

The stall starts `after` seconds after the first request and lasts `length` seconds:
every request that arrives during it is answered when it ends. A load generator that
measures without coordinated omission must report it in its p99 and max.
"""
from __future__ import annotations

import asyncio
import threading
import time

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"


class StallServer:
    def __init__(self, after: float, length: float):
        self.after, self.length = after, length
        self.first: float | None = None
        self.requests = 0
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.Server | None = None
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def reset(self) -> None:
        self.first, self.requests = None, 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                now = time.monotonic()
                if self.first is None:
                    self.first = now
                self.requests += 1
                start = self.first + self.after
                if start <= now < start + self.length:
                    await asyncio.sleep(start + self.length - now)
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024))
        self.server = server
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def start(self) -> StallServer:
        self.ready = threading.Event()
        self.thread.start()
        self.ready.wait(5)
        return self

    def stop(self) -> None:
        def close():
            self.server.close()
            self.loop.stop()
        self.loop.call_soon_threadsafe(close)
        self.thread.join(5)
