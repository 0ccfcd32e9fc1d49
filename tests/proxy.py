"""A small HTTP/1.1 proxy in front of the moto server that counts requests and can stage an outage.

The benchmark counts an idle worker's requests through it; the fault suite puts it between every
client and moto and cuts them off for a while (moto keeps its state).

Loopback only and bounded: it listens on 127.0.0.1, forwards to one upstream on 127.0.0.1, accepts
at most MAX_CONNECTIONS at once, refuses headers above MAX_HEADER_BYTES and bodies above
MAX_BODY_BYTES, and stops when ``stop()`` is called. Requests are parsed only far enough to frame
them (Content-Length or chunked) and classify them; bytes are forwarded unchanged in both directions.

Each request is recorded as ``(monotonic time, service, action, queue)``: SQS requests are the ones
whose ``X-Amz-Target`` header starts with ``AmazonSQS`` (JSON protocol; the action is the part after
the dot and the queue is the last path segment of the body's ``QueueUrl``); every other request is
counted as S3 with its HTTP method as the action.

``outage(mode)`` starts an outage and ``restore()`` ends it: open connections are reset, and new
ones are refused (``"refuse"``: nothing listens on the port) or accepted and reset at once
(``"drop"``).
"""

import asyncio
import json
import threading
import time
from dataclasses import dataclass

MAX_CONNECTIONS = 64
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Request:
    at: float
    service: str
    action: str
    queue: str


class FaultProxy:
    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.port = 0
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._stopped: asyncio.Event | None = None
        self._started = threading.Event()
        self._slots: asyncio.Semaphore | None = None
        self._error: BaseException | None = None
        self._turned_away: list[float] = []  # connection attempts met by an outage (drop mode only)
        self._down: str | None = None  # the outage mode while one lasts
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FaultProxy":
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._started.wait(10) or self._error:
            raise RuntimeError(f"proxy did not start: {self._error}")
        return self

    def outage(self, mode: str = "refuse") -> None:
        """Cuts every client off from the upstream until restore()."""
        if mode not in ("refuse", "drop"):
            raise ValueError(f"unknown outage mode {mode!r}")
        asyncio.run_coroutine_threadsafe(self._cut(mode), self._loop).result(10)

    def restore(self) -> None:
        asyncio.run_coroutine_threadsafe(self._mend(), self._loop).result(10)

    def refused(self, start: float, end: float) -> int:
        """How many connections the outage turned away in a window."""
        with self._lock:
            return sum(1 for at in self._turned_away if start <= at < end)

    def stop(self) -> None:
        if self._loop and self._stopped:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread:
            self._thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def window(self, start: float, end: float) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if start <= r.at < end]

    # --- the event loop thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start() or lost on shutdown
            self._error = exc
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._started.set()
        await self._stopped.wait()
        self._server.close()
        self._reset_open()

    async def _cut(self, mode: str) -> None:
        self._down = mode
        if mode == "refuse":
            self._server.close()  # the port stops listening: connects are refused
        self._reset_open()

    async def _mend(self) -> None:
        if self._down == "refuse":
            # The same port again (SO_REUSEADDR), so clients need no new endpoint.
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self._down = None

    def _reset_open(self) -> None:
        for writer in list(self._open):
            writer.transport.abort()  # RST, as a vanished peer would
        self._open.clear()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._down:
            with self._lock:
                self._turned_away.append(time.monotonic())
            client_w.transport.abort()
            return
        if self._slots.locked():
            client_w.close()
            return
        self._open.add(client_w)
        async with self._slots:
            try:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                client_w.close()
                return
            back = asyncio.create_task(self._pipe(up_r, client_w))
            try:
                while not self._stopped.is_set():
                    raw = await self._read_request(client_r)
                    if raw is None:
                        break
                    up_w.write(raw)
                    await up_w.drain()
            except (OSError, ValueError, asyncio.IncompleteReadError):
                pass
            finally:
                self._open.discard(client_w)
                up_w.close()
                back.cancel()
                client_w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """Reads one whole request (head and body), records it and returns its bytes."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return None
        except asyncio.LimitOverrunError:
            raise ValueError("request head too large") from None
        if len(head) > MAX_HEADER_BYTES:
            raise ValueError("request head too large")
        lines = head.decode("latin-1").split("\r\n")
        method = lines[0].split(" ", 1)[0]
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = b""
        framed = b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                framed += size_line
                if size == 0:
                    # The last chunk: trailer lines (if any), then an empty line.
                    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                        framed += line
                    framed += line
                    break
                if size > MAX_BODY_BYTES or len(body) + size > MAX_BODY_BYTES:
                    raise ValueError("body too large")
                chunk = await reader.readexactly(size + 2)
                framed += chunk
                body += chunk[:-2]
        elif length := int(headers.get("content-length", "0") or 0):
            if length > MAX_BODY_BYTES:
                raise ValueError("body too large")
            body = await reader.readexactly(length)
            framed = body
        self._record(method, headers, body)
        return head + framed

    def _record(self, method: str, headers: dict[str, str], body: bytes) -> None:
        target = headers.get("x-amz-target", "")
        if target.startswith("AmazonSQS"):
            action = target.split(".", 1)[-1]
            queue = ""
            try:
                queue = str(json.loads(body or b"{}").get("QueueUrl", "")).rstrip("/").rsplit("/", 1)[-1]
            except ValueError:
                pass
            request = Request(time.monotonic(), "sqs", action, queue)
        else:
            request = Request(time.monotonic(), "s3", method, "")
        with self._lock:
            self.requests.append(request)
