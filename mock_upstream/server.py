"""The mock provider's HTTP/1.1 server: a raw asyncio Protocol on uvloop with httptools.

A web framework costs several times the per-request CPU of this loop, and the mock must never
be what a gateway benchmark measures. Per request the server parses, looks the reply up in a
cache keyed by everything the reply depends on (method, target, body, x-mock-* headers), and
writes pre-framed bytes. Replies go out in request order on each connection (pipelining);
x-mock-latency-ms and x-mock-chunk-delay-ms are timers (loop.call_later), never sleeps.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import httptools
import orjson

from mock_upstream import replies
from tokentrail.errors import TokentrailError

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_CACHED_BODY_BYTES = 256 * 1024
MAX_CACHE_ENTRIES = 20_000
MAX_QUEUED_REPLIES = 1024
"""Pipelined replies waiting on one connection before the server stops reading from it."""

_WANTED_HEADERS = {name.encode(): name for name in replies.CONTROL_HEADERS | replies.SHAPE_HEADERS}
_TIMING_HEADERS = {name.encode() for name in replies.TIMING_HEADERS}


class MockUpstreamError(TokentrailError):
    """The server cannot start (address in use, bad host); one line for the user."""


@dataclass(frozen=True, slots=True)
class Framed:
    """A Reply as wire bytes: `head` ends before the blank line, so `connection: close` can
    still be added; `keep_alive` is the whole answer for a kept-alive plain reply."""

    head: bytes
    body: bytes
    chunks: tuple[bytes, ...] | None
    keep_alive: bytes


def frame(reply: replies.Reply) -> Framed:
    lines = [f"HTTP/1.1 {reply.status} {replies.reason_phrase(reply.status)}"]
    lines += [f"{name}: {value}" for name, value in reply.headers]
    if reply.events is None:
        lines.append(f"content-length: {len(reply.body)}")
        head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        return Framed(head, reply.body, None, head + b"\r\n" + reply.body)
    lines.append("transfer-encoding: chunked")
    head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
    chunks = [b"%x\r\n%s\r\n" % (len(event), event) for event in reply.events]
    chunks.append(b"0\r\n\r\n")
    return Framed(head, b"", tuple(chunks), head + b"\r\n")


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Fault(Exception):
    """A limit broken inside a parser callback; answered, then the connection closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class ReplyCache:
    """Framed replies by request; cleared when full (replies are pure, so nothing is lost)."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: dict[tuple, Framed] = {}

    def framed(self, method: bytes, target: bytes, headers: dict[bytes, bytes], body: bytes) -> Framed:
        # Timing headers are part of the key too: an invalid one turns the reply into a 400.
        key = (method, target, body, tuple(sorted(headers.items())) if headers else ())
        found = self.entries.get(key)
        if found is not None:
            return found
        found = frame(_safe_reply(method, target, headers, body))
        if len(body) <= MAX_CACHED_BODY_BYTES:
            if len(self.entries) >= MAX_CACHE_ENTRIES:
                self.entries.clear()
            self.entries[key] = found
        return found


def _safe_reply(method: bytes, target: bytes, headers: dict[bytes, bytes], body: bytes) -> replies.Reply:
    named = {_WANTED_HEADERS[k]: v.decode("latin-1") for k, v in headers.items()}
    try:
        return replies.reply(method.decode("latin-1"), target.decode("latin-1"), named, body)
    except Exception as exc:  # a bug here must not take the connection (or the server) down
        return _plain_error(500, f"mock-upstream internal error: {type(exc).__name__}: {exc}")


def _plain_error(status: int, message: str) -> replies.Reply:
    """Errors found before the route is known (malformed HTTP, limits): OpenAI's error shape."""
    body = {
        "error": {
            "message": message,
            "type": "invalid_request_error" if status < 500 else "server_error",
            "param": None,
            "code": None,
        }
    }
    return replies.Reply(status, (("content-type", replies.JSON),), orjson.dumps(body))


class MockProtocol(asyncio.Protocol):
    """One client connection. Invariant: replies wait in `queue` only while one is in flight
    (`busy`: held by x-mock-latency-ms or streaming with x-mock-chunk-delay-ms)."""

    __slots__ = (
        "loop",
        "cache",
        "transport",
        "parser",
        "target",
        "headers",
        "body",
        "size",
        "queue",
        "busy",
        "closing",
        "timer",
        "write_paused",
        "read_paused",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, cache: ReplyCache) -> None:
        self.loop, self.cache = loop, cache
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.target, self.headers, self.body, self.size = b"", {}, [], 0
        self.queue: deque = deque()
        self.busy = self.closing = self.write_paused = self.read_paused = False
        self.timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closing = True
        self.queue.clear()
        if self.timer is not None:
            self.timer.cancel()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            fault = exc.__context__
            if not isinstance(fault, _Fault):
                raise
            self._enqueue(frame(_plain_error(fault.status, fault.message)), False, 0.0, 0.0)
        except httptools.HttpParserUpgrade:
            self._enqueue(frame(_plain_error(400, "protocol upgrades are not supported")), False, 0.0, 0.0)
        except httptools.HttpParserError as exc:
            self._enqueue(frame(_plain_error(400, f"malformed HTTP request: {exc}")), False, 0.0, 0.0)

    def pause_writing(self) -> None:
        self.write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._update_reading()

    # --- httptools callbacks

    def on_message_begin(self) -> None:
        self.target, self.headers, self.body, self.size = b"", {}, [], 0

    def on_url(self, url: bytes) -> None:
        self.target += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        name = name.lower()
        if name in _WANTED_HEADERS:
            self.headers[name] = value
        elif name == b"expect" and value.lower() == b"100-continue" and not self.busy and not self.queue:
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_BODY_BYTES:
            raise _Fault(413, f"request body larger than {MAX_BODY_BYTES} bytes")
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.closing:
            return
        parser = self.parser
        keep_alive = parser.should_keep_alive() and parser.get_http_version() == "1.1"
        body = b"".join(self.body) if len(self.body) != 1 else self.body[0]
        framed = self.cache.framed(parser.get_method(), self.target, self.headers, body)
        latency = chunk_delay = 0.0
        if self.headers and any(k in _TIMING_HEADERS for k in self.headers):
            named = {_WANTED_HEADERS[k]: v.decode("latin-1") for k, v in self.headers.items()}
            latency, chunk_delay = replies.delays(named)
        self._enqueue(framed, keep_alive, latency, chunk_delay)

    def _count(self, size: int) -> None:
        self.size += size
        if self.size > MAX_HEADER_BYTES:
            raise _Fault(431, f"request line and headers larger than {MAX_HEADER_BYTES} bytes")

    # --- replying in order

    def _enqueue(self, framed: Framed, keep_alive: bool, latency: float, chunk_delay: float) -> None:
        if not keep_alive:
            self.closing = True  # nothing after this request is answered
        if self.busy:
            self.queue.append((framed, keep_alive, latency, chunk_delay))
            self._update_reading()
        else:
            self._start(framed, keep_alive, latency, chunk_delay)

    def _start(self, framed: Framed, keep_alive: bool, latency: float, chunk_delay: float) -> None:
        if latency > 0:
            self.busy = True
            self.timer = self.loop.call_later(latency, self._after_latency, framed, keep_alive, chunk_delay)
        else:
            self._write(framed, keep_alive, chunk_delay)

    def _after_latency(self, framed: Framed, keep_alive: bool, chunk_delay: float) -> None:
        self.busy = False
        self._write(framed, keep_alive, chunk_delay)
        self._drain()

    def _write(self, framed: Framed, keep_alive: bool, chunk_delay: float) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        if framed.chunks is None:
            transport.write(
                framed.keep_alive if keep_alive else framed.head + b"connection: close\r\n\r\n" + framed.body
            )
            self._done(keep_alive)
        elif chunk_delay <= 0:
            head = framed.keep_alive if keep_alive else framed.head + b"connection: close\r\n\r\n"
            transport.writelines((head, *framed.chunks))
            self._done(keep_alive)
        else:
            transport.write(framed.keep_alive if keep_alive else framed.head + b"connection: close\r\n\r\n")
            self.busy = True
            self._next_chunk(framed.chunks, 0, keep_alive, chunk_delay)

    def _next_chunk(self, chunks: tuple[bytes, ...], index: int, keep_alive: bool, delay: float) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(chunks[index])
        if index + 1 < len(chunks):
            self.timer = self.loop.call_later(delay, self._next_chunk, chunks, index + 1, keep_alive, delay)
        else:
            self.busy = False
            self._done(keep_alive)
            self._drain()

    def _done(self, keep_alive: bool) -> None:
        self.timer = None
        if not keep_alive:
            self.closing = True
            self.queue.clear()
            self.transport.close()

    def _drain(self) -> None:
        while self.queue and not self.busy and not self.transport.is_closing():
            self._start(*self.queue.popleft())
        self._update_reading()

    def _update_reading(self) -> None:
        pause = self.write_paused or len(self.queue) > MAX_QUEUED_REPLIES
        if pause != self.read_paused and not self.transport.is_closing():
            self.read_paused = pause
            (self.transport.pause_reading if pause else self.transport.resume_reading)()


# --- starting and stopping ----------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound before any worker starts: a busy port fails here, in one line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise MockUpstreamError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise MockUpstreamError(f"port {port} on {host} is already in use; pick another with --port") from None
        raise MockUpstreamError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def open_server(sock: socket.socket) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    cache = ReplyCache()
    return await loop.create_server(lambda: MockProtocol(loop, cache), sock=sock)


def serve(sock: socket.socket, workers: int = 1, on_ready: Callable[[], None] = lambda: None) -> None:
    """Serve until SIGTERM or SIGINT. With several workers, forked processes share the socket
    (the kernel spreads connections) and the parent only forwards signals and waits."""
    if workers <= 1:
        on_ready()
        _run_worker(sock)
        return
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            try:
                _run_worker(sock)
            finally:
                os._exit(0)
        children.append(pid)
    sock.close()

    def forward(signum, frame) -> None:
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    on_ready()
    for child in children:
        while True:
            try:
                os.waitpid(child, 0)
                break
            except ChildProcessError:
                break
            except InterruptedError:
                continue


def _run_worker(sock: socket.socket) -> None:
    import uvloop

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        server = await open_server(sock)
        await stop.wait()
        server.close()

    uvloop.run(main())


class RunningMock(NamedTuple):
    """A mock served by a thread of this process: unpacks as (host, port, stop)."""

    host: str
    port: int
    stop: Callable[[], None]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def start_mock_in_thread(host: str = "127.0.0.1", port: int = 0) -> RunningMock:
    """Serve from a daemon thread with its own uvloop loop; `stop()` closes it and joins.

    Shares the GIL with the caller, so use it for unit tests and tools, and the subprocess
    (mock_upstream.process) when throughput matters.
    """
    import uvloop

    sock = bind(host, port)
    loop = uvloop.new_event_loop()
    server = loop.run_until_complete(open_server(sock))
    thread = threading.Thread(target=loop.run_forever, name="mock-upstream", daemon=True)
    thread.start()

    def stop() -> None:
        async def shutdown() -> None:
            server.close()
            await server.wait_closed()

        if not loop.is_closed():
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=5)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            loop.close()

    bound_host, bound_port = sock.getsockname()[:2]
    return RunningMock(bound_host, bound_port, stop)
