"""A small, fast HTTP/1.1 client on asyncio protocols: keep-alive pools, no pipelining.

Why not aiohttp or requests: a load generator must spend as little CPU per request as
possible so that the server, not the client, is what gets measured. This client parses
only what a load test needs (status, headers, a Content-Length or chunked body), reuses
connections, and fails every request within its deadline. One `Pool` per target host,
one connection per in-flight request; a request that finds every connection busy waits
for one (the wait counts in its latency, as it should).
"""
from __future__ import annotations

import asyncio
import json
import socket
from collections import deque
from typing import Any

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024


class HttpError(Exception):
    """A request that got no usable HTTP response. `kind` names the failure for the counters."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status = status
        self.headers = headers  # names lower-cased
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def __repr__(self) -> str:
        return f"<Response {self.status} {len(self.body)} bytes>"


class _Connection(asyncio.Protocol):
    """One TCP connection; parses one response at a time."""

    def __init__(self, pool: Pool):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.buf = bytearray()
        self.closed = False
        self.used = 0  # responses received on this connection
        self.got_bytes = False
        self._reset_response()

    @property
    def connected(self) -> asyncio.Transport:
        """The transport: asyncio calls connection_made before any other callback, and the pool hands
        out only connections whose connect completed."""
        if self.transport is None:
            raise HttpError("connect", "the connection is not established")
        return self.transport

    def _reset_response(self) -> None:
        self.status = 0
        self.headers: dict[str, str] | None = None
        self.length = -1  # -1: unknown (read to EOF), -2: chunked
        self.chunks: list[bytes] = []
        self.keep_alive = True
        self.no_body = False

    # -- asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.buf += data
        if self.waiter is None:  # bytes nobody asked for: the connection is unusable
            self.closed = True
            self.connected.close()
            return
        try:
            self._parse()
        except HttpError as exc:
            self._fail(exc)
            self.connected.close()

    def eof_received(self):
        if self.waiter is not None and self.headers is not None and self.length == -1:
            self._finish(bytes(self.buf))
            self.buf.clear()
        return False  # close the transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if not self.got_bytes:
                self._fail(HttpError("closed", "the server closed the connection before answering"))
            else:
                self._fail(HttpError("reset", f"connection lost mid-response ({exc or 'EOF'})"))

    # -- parsing
    def _parse(self) -> None:
        buf = self.buf
        if self.headers is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise HttpError("protocol", "response head too large")
                return
            head = bytes(buf[:end]).decode("latin-1")
            del buf[: end + 4]
            lines = head.split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise HttpError("protocol", f"not an HTTP/1.x status line: {lines[0][:80]!r}")
            self.status = status = int(parts[1])
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            self.headers = headers
            conn = headers.get("connection", "").lower()
            self.keep_alive = conn != "close" and (parts[0] != "HTTP/1.0" or conn == "keep-alive")
            if status < 200 and status != 101:  # 1xx interim response: skip it
                self.headers = None
                return self._parse()
            if status in (204, 304) or self.waiter_method == "HEAD":
                self.no_body = True
                self.length = 0
            elif "chunked" in headers.get("transfer-encoding", "").lower():
                self.length = -2
            elif "content-length" in headers:
                try:
                    self.length = int(headers["content-length"])
                except ValueError:
                    raise HttpError("protocol", "bad Content-Length") from None
                if self.length > MAX_BODY_BYTES:
                    raise HttpError("protocol", "response body too large")
            else:
                self.length = -1
                self.keep_alive = False
        if self.length >= 0:
            if len(buf) >= self.length:
                body = bytes(buf[: self.length])
                del buf[: self.length]
                self._finish(body)
        elif self.length == -2:
            self._parse_chunks()

    def _parse_chunks(self) -> None:
        buf = self.buf
        while True:
            end = buf.find(b"\r\n")
            if end < 0:
                return
            size_text = bytes(buf[:end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpError("protocol", "bad chunk size") from None
            if size == 0:
                if buf[end + 2: end + 4] == b"\r\n":
                    del buf[: end + 4]
                    return self._finish(b"".join(self.chunks))
                trailer_end = buf.find(b"\r\n\r\n", end)
                if trailer_end < 0:
                    return
                del buf[: trailer_end + 4]
                return self._finish(b"".join(self.chunks))
            if len(buf) < end + 2 + size + 2:
                return
            self.chunks.append(bytes(buf[end + 2: end + 2 + size]))
            del buf[: end + 2 + size + 2]

    def _finish(self, body: bytes) -> None:
        waiter, self.waiter = self.waiter, None
        response = Response(self.status, self.headers or {}, body)
        keep = self.keep_alive
        self._reset_response()
        self.used += 1
        if not keep:
            self.closed = True
            self.connected.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self, exc: HttpError) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    waiter_method = "GET"

    def send(self, data: bytes, method: str) -> asyncio.Future:
        self.waiter = self.pool.loop.create_future()
        self.waiter_method = method
        self.got_bytes = False
        self.connected.write(data)
        return self.waiter


class Pool:
    """Keep-alive connections to one host:port, at most `max_connections` of them."""

    def __init__(self, host: str, port: int, max_connections: int = 100, connect_timeout: float = 3.0):
        self.host, self.port = host, port
        self.host_header = host if port == 80 else f"{host}:{port}"
        if ":" in host and not host.startswith("["):
            self.host_header = f"[{host}]:{port}"
        self.max_connections = max(1, max_connections)
        self.connect_timeout = connect_timeout
        self.idle: deque[_Connection] = deque()
        self.open = 0
        self.waiters: deque[asyncio.Future] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connects = 0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def _connect(self) -> _Connection:
        self.connects += 1
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: _Connection(self), self.host, self.port),
                self.connect_timeout)
        except TimeoutError:
            raise HttpError("connect", f"connect to {self.host}:{self.port} timed out") from None
        except ConnectionRefusedError:
            raise HttpError("refused", f"connection to {self.host}:{self.port} refused") from None
        except OSError as exc:
            raise HttpError("connect", f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        return conn

    async def acquire(self) -> _Connection:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
            self.open -= 1
        if self.open < self.max_connections:
            self.open += 1
            try:
                return await self._connect()
            except BaseException:
                self.open -= 1
                self._wake()
                raise
        waiter = self.loop.create_future()
        self.waiters.append(waiter)
        try:
            conn = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                given = waiter.result()
                if given is None:  # a free slot handed to us: pass it on
                    self.open -= 1
                    self._wake()
                else:
                    self.release(given)
            raise
        if conn is None:  # a slot was freed, not a connection: open one
            try:
                return await self._connect()
            except BaseException:
                self.open -= 1
                self._wake()
                raise
        return conn

    def _wake(self) -> None:
        """A slot freed up (a connection closed): let one waiter open a new connection."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                self.open += 1
                waiter.set_result(None)
                return

    def release(self, conn: _Connection) -> None:
        if conn.closed or conn.waiter is not None:
            if not conn.closed:
                conn.closed = True
                conn.connected.close()
            self.open -= 1
            self._wake()
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.idle.append(conn)

    def discard(self, conn: _Connection) -> None:
        if not conn.closed:
            conn.closed = True
            if conn.transport is not None:
                conn.transport.abort()
        self.open -= 1
        self._wake()

    def close(self) -> None:
        while self.idle:
            conn = self.idle.pop()
            if conn.transport is not None:
                conn.transport.close()
        self.open = 0
        for waiter in self.waiters:
            if not waiter.done():
                waiter.cancel()
        self.waiters.clear()


def build_request(method: str, path: str, host_header: str, body: bytes | None = None,
                  headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host_header}"]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
        if not headers or "Content-Type" not in headers:
            lines.append("Content-Type: application/json")
    if headers:
        lines.extend(f"{name}: {value}" for name, value in headers.items())
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head


class Client:
    """`await client.request("GET", "/path")` -> Response, or raises HttpError (never hangs past `timeout`)."""

    def __init__(self, host: str, port: int, max_connections: int = 100, timeout: float = 10.0,
                 default_headers: dict[str, str] | None = None):
        self.pool = Pool(host, port, max_connections, connect_timeout=min(timeout, 3.0))
        self.timeout = timeout
        self.default_headers = default_headers or {}

    async def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                      timeout: float | None = None, raw: bytes | None = None) -> Response:
        """Send one request. `body` is JSON-encoded; `raw` is a prebuilt request (bytes) to send as is."""
        if raw is None:
            payload = None if body is None else (body if isinstance(body, bytes) else
                                                 json.dumps(body, separators=(",", ":")).encode())
            merged = {**self.default_headers, **headers} if headers else self.default_headers
            raw = build_request(method, path, self.pool.host_header, payload, merged)
        loop = self.pool.loop
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        for attempt in (0, 1):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise HttpError("timeout", f"no connection within {self.timeout:g}s")
            pool = self.pool
            try:
                if pool.open >= pool.max_connections and not pool.idle:  # will wait: bound the wait
                    conn = await asyncio.wait_for(pool.acquire(), remaining)
                else:
                    conn = await pool.acquire()
            except TimeoutError:
                raise HttpError("timeout", "timed out waiting for a free connection") from None
            reused = conn.used > 0
            future = conn.send(raw, method)
            timer = loop.call_at(deadline, _expire, future)
            try:
                response = await future
            except HttpError as exc:
                self.pool.discard(conn)
                # A kept-alive connection the server had just closed: safe to send again once.
                if exc.kind == "closed" and reused and attempt == 0:
                    continue
                raise
            except asyncio.CancelledError:
                self.pool.discard(conn)
                raise
            finally:
                timer.cancel()
            self.pool.release(conn)
            return response
        raise HttpError("closed", "the server closed the connection twice")  # pragma: no cover

    def close(self) -> None:
        self.pool.close()


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(HttpError("timeout", "no response within the timeout"))
