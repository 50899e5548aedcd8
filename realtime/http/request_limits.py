"""The ASGI layer of the connection limits: body timeout, body memory budget, and the SIGTERM end of HTTP answers.

`RequestLimits` wraps the whole app (every route, present and future), below the transport guard of
realtime/http/connections.py, which it tells when a request starts and when its answer ends. For each HTTP
request it:

- times the body: while the app waits for more of it, the client gets ``--body-timeout`` seconds plus one
  second per `MIN_BODY_RATE` bytes that did arrive (Apache's mod_reqtimeout rule: a slow but steady upload
  goes on, a stalled or trickling one does not). Then 408 ``request_timeout`` with ``Connection: close`` (or,
  once the answer began, the connection is dropped) and the app sees the client as gone. Time the app spends
  elsewhere (waiting for a slot, decoding) never counts: only waits for the client do.
- reads bodies over `LARGE_BODY_BYTES` under `BodyBudget` (``--body-memory-mb``): the declared length is
  reserved before the app runs (a chunked body reserves as it arrives), first come first served, for at most
  `BODY_WAIT_S`; then 503 ``upload_capacity_reached``; a body larger than the whole budget is 413
  ``request_too_large`` at once. The reservation is given back when the answer starts (by then the body has
  been read and decoded) or the request ends.
- on SIGTERM, ends what still runs at the drain deadline (``--drain-seconds``) in a way the client can detect:
  an answer not begun becomes 503 ``server_shutting_down``; a Server-Sent Events answer gets an ``error``
  event (``{"type": "error", "error": {...}}``, which the openai SDKs raise for chat, speech and
  transcription streams alike) and ends; any other answer (chunked audio) is cut by dropping the connection,
  so it ends without its terminating chunk. No task is left for uvicorn to cancel, so no traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from realtime.errors import CODE_SHUTTING_DOWN, INVALID_REQUEST, SERVER_ERROR
from realtime.http.connections import CODE_REQUEST_TIMEOUT, GuardedConnection, current_connection
from realtime.metrics import Metrics

log = logging.getLogger(__name__)

LARGE_BODY_BYTES = 64 * 1024  # bodies above this are read under the budget (uvicorn buffers this much itself)
BODY_WAIT_S = 10.0  # longest a body waits for room in the budget
MIN_BODY_RATE = 16 * 1024  # bytes per second that earn a slow body one more second (README: 16 KiB)
TAIL_WAIT_S = 2.0  # longest the closing SSE event or error answer may wait for a client that does not read
CODE_UPLOAD_CAPACITY = "upload_capacity_reached"
CODE_TOO_LARGE = "request_too_large"
MB = 1024 * 1024
SSE_MEDIA_TYPE = b"text/event-stream"


class BodyBudget:
    """Bytes of request bodies being read at once, against a limit; first come, first served (event loop only).

    Args:
        limit: bytes allowed at once.
        metrics: where waiting requests are counted (optional).
    """

    def __init__(self, limit: int, metrics: Metrics | None = None) -> None:
        self.limit = limit
        self.used = 0
        self._metrics = metrics
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def reserve(self, size: int, wait_seconds: float) -> bool:
        """Take ``size`` bytes (<= ``limit``), waiting at most ``wait_seconds``; False when no room came."""
        if not self._waiters and self.used + size <= self.limit:
            self.used += size
            return True
        handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, handed)
        self._waiters.append(entry)
        self._count_waiting(1)
        try:
            async with asyncio.timeout(wait_seconds):
                await handed
            return True
        except TimeoutError:
            return self._settle(entry)
        except asyncio.CancelledError:
            if self._settle(entry):
                self.release(size)  # handed over as we were cancelled: give it on
            raise
        finally:
            self._count_waiting(-1)

    def release(self, size: int) -> None:
        """Give ``size`` bytes back; waiters that now fit get theirs, in order."""
        self.used -= size
        while self._waiters:
            size_wanted, waiter = self._waiters[0]
            if waiter.done():
                self._waiters.popleft()
                continue
            if self.used + size_wanted > self.limit:
                return  # the oldest waits for more room; later ones wait behind it (no starvation)
            self._waiters.popleft()
            self.used += size_wanted
            waiter.set_result(None)

    def _settle(self, entry: tuple[int, asyncio.Future[None]]) -> bool:
        handed = entry[1]
        if handed.done() and not handed.cancelled():
            return True
        handed.cancel()
        if entry in self._waiters:
            self._waiters.remove(entry)
        self.release(0)  # the head may have been this one: let the next ones in
        return False

    def _count_waiting(self, delta: int) -> None:
        if self._metrics is not None:
            self._metrics.admission_waiting("body_memory", delta)


class RunningRequests:
    """The HTTP requests the app is running, so a SIGTERM drain can end them and wait for them (event loop
    only)."""

    def __init__(self) -> None:
        self._running: dict[asyncio.Task[None], _Exchange] = {}
        self.none_running = asyncio.Event()
        self.none_running.set()

    def __len__(self) -> int:
        return len(self._running)

    def add(self, task: asyncio.Task[None], exchange: _Exchange) -> None:
        self._running[task] = exchange
        self.none_running.clear()

    def discard(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        if not self._running:
            self.none_running.set()

    async def end_at(self, deadline: float) -> None:
        """At ``deadline`` (event loop time), end every request still running (see the module docstring)."""
        await asyncio.sleep(max(0.0, deadline - asyncio.get_running_loop().time()))
        for task, exchange in list(self._running.items()):
            exchange.drained = True
            task.cancel()
        if self._running:
            log.info("drain deadline: ending %d HTTP answer(s)", len(self._running))


class RequestLimits:
    """ASGI middleware enforcing the request-level limits on every HTTP route (see the module docstring).

    Args:
        app: the application.
        body_timeout: ``--body-timeout`` seconds.
        budget: the body memory budget.
        running: where running requests are registered for the drain.
        metrics: refusals are counted here (optional).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        body_timeout: float,
        budget: BodyBudget,
        running: RunningRequests,
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.body_timeout = body_timeout
        self.budget = budget
        self.running = running
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        connection = current_connection()
        if connection is not None:
            connection.request_started()
        if scope["type"] == "websocket":  # frames have their own limits; the session drains itself
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(self, receive, send, connection)
        try:
            await self._run(scope, exchange)
        finally:
            exchange.give_back()

    async def _admit_and_serve(self, scope: Scope, exchange: _Exchange) -> None:
        if await exchange.admit(scope):
            await self.app(scope, exchange.receive, exchange.send)

    async def _run(self, scope: Scope, exchange: _Exchange) -> None:
        # a task of its own, registered for the drain from the start (a wait for body memory included)
        task: asyncio.Task[None] = asyncio.ensure_future(self._admit_and_serve(scope, exchange))
        self.running.add(task, exchange)
        try:
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not exchange.drained or (current is not None and current.cancelling()):
                    raise  # cancelled from outside (uvicorn's own shutdown): the child went with us
            if exchange.drained:
                await exchange.end_for_drain()
        finally:
            self.running.discard(task)

    def count(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.connection_refused(reason)


class _Exchange:
    """One HTTP request's receive/send seen by `RequestLimits`."""

    def __init__(
        self, limits: RequestLimits, receive: Receive, send: Send, connection: GuardedConnection | None
    ) -> None:
        self._limits = limits
        self._receive = receive
        self._send = send
        self._connection = connection
        self._loop = asyncio.get_running_loop()
        self.drained = False
        self._started = False
        self._complete = False
        self._taken_over = False  # we answered (408, 503): the app's own messages are dropped
        self._streaming_events = False
        self._body_done = False
        self._received = 0
        self._waited = 0.0
        self._reserved = 0
        self._chunked = False

    async def admit(self, scope: Scope) -> bool:
        """Reserve a large body's memory before the app runs; False when the request was answered instead."""
        declared = _content_length(scope)
        self._chunked = declared is None
        if declared is None or declared <= LARGE_BODY_BYTES:
            return True
        budget = self._limits.budget
        if declared > budget.limit:
            self._limits.count("body_too_large")
            await self._answer(
                413,
                CODE_TOO_LARGE,
                f"The request body ({declared} bytes) is larger than this server's memory budget for bodies "
                f"({budget.limit // MB} MiB).",
                INVALID_REQUEST,
            )
            return False
        if not await budget.reserve(declared, BODY_WAIT_S):
            self._limits.count("body_memory")
            await self._answer(
                503,
                CODE_UPLOAD_CAPACITY,
                "The server is reading as many large request bodies as its memory budget allows; retry later.",
                SERVER_ERROR,
            )
            return False
        self._reserved = declared
        return True

    def give_back(self) -> None:
        if self._reserved:
            self._limits.budget.release(self._reserved)
            self._reserved = 0

    async def receive(self) -> Message:
        if self._body_done or self._taken_over:
            return await self._receive()  # after the body: a disconnect watch, never timed
        allowed = self._limits.body_timeout + self._received / MIN_BODY_RATE - self._waited
        start = self._loop.time()
        if self._connection is not None:  # meanwhile it may be closed to make room, like a slow request head
            self._connection.waiting_for_body(self._started)
        try:
            try:
                async with asyncio.timeout(max(allowed, 0.0)):
                    message = await self._receive()
            finally:
                self._waited += self._loop.time() - start
                if self._connection is not None:
                    self._connection.body_arrived()
        except TimeoutError:
            await self._body_timed_out()
            return {"type": "http.disconnect"}
        if message["type"] == "http.request":
            size = len(message.get("body", b""))
            self._received += size
            if not message.get("more_body", False):
                self._body_done = True
            if self._chunked and self._received > LARGE_BODY_BYTES and not await self._grow():
                return {"type": "http.disconnect"}
        return message

    async def _grow(self) -> bool:
        """A chunked body passed `LARGE_BODY_BYTES`: reserve what arrived beyond what is reserved."""
        budget = self._limits.budget
        wanted = self._received - self._reserved
        if self._received > budget.limit:
            self._limits.count("body_too_large")
            await self._take_over(
                413,
                CODE_TOO_LARGE,
                f"The request body is larger than this server's memory budget for bodies ({budget.limit // MB} "
                "MiB).",
                INVALID_REQUEST,
            )
            return False
        if await budget.reserve(wanted, BODY_WAIT_S):
            self._reserved += wanted
            return True
        self._limits.count("body_memory")
        await self._take_over(
            503,
            CODE_UPLOAD_CAPACITY,
            "The server is reading as many large request bodies as its memory budget allows; retry later.",
            SERVER_ERROR,
        )
        return False

    async def _body_timed_out(self) -> None:
        self._limits.count("body_timeout")
        await self._take_over(
            408,
            CODE_REQUEST_TIMEOUT,
            f"The request body did not arrive in time ({self._limits.body_timeout:g} s plus 1 s per "
            f"{MIN_BODY_RATE // 1024} KiB received).",
            INVALID_REQUEST,
        )

    async def _take_over(self, status: int, code: str, message: str, error_type: str) -> None:
        """Answer in the app's place (or drop the connection once its answer began); the app sees a
        disconnect and what it sends afterwards is dropped."""
        self._body_done = True
        if self._started:
            await self._abort()
        else:
            await self._answer(status, code, message, error_type)
        self._taken_over = True

    async def send(self, message: Message) -> None:
        if self._taken_over:
            return
        if message["type"] == "http.response.start":
            self._started = True
            self.give_back()  # the body has been read and decoded by now
            headers = dict(message.get("headers", []))
            self._streaming_events = headers.get(b"content-type", b"").startswith(SSE_MEDIA_TYPE)
        await self._send(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self._finished()

    def _finished(self) -> None:
        self._complete = True
        if self._connection is not None:
            self._connection.request_finished()

    async def end_for_drain(self) -> None:
        """The drain deadline cut the app short: end the answer so the client can tell."""
        if self._complete or self._taken_over:
            return
        message = "The server is shutting down; this answer was cut short."
        if not self._started:
            await self._answer(503, CODE_SHUTTING_DOWN, message, SERVER_ERROR)
            return
        if not self._streaming_events:
            await self._abort()
            return
        event = {"type": "error", "error": _error(CODE_SHUTTING_DOWN, message, SERVER_ERROR)}
        tail = b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
        if not await self._bounded_send({"type": "http.response.body", "body": tail, "more_body": False}):
            await self._abort()
            return
        self._finished()

    async def _answer(self, status: int, code: str, message: str, error_type: str) -> None:
        body = json.dumps({"error": _error(code, message, error_type)}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        if status == 503:
            headers.append((b"retry-after", b"1"))
        self._started = True
        sent = await self._bounded_send({"type": "http.response.start", "status": status, "headers": headers})
        if sent and await self._bounded_send({"type": "http.response.body", "body": body}):
            self._finished()
        else:
            await self._abort()

    async def _bounded_send(self, message: Message) -> bool:
        try:
            async with asyncio.timeout(TAIL_WAIT_S):
                await self._send(message)
        except (TimeoutError, OSError, RuntimeError):
            return False
        return True

    async def _abort(self) -> None:
        if self._connection is not None:
            await self._connection.abort()


def _error(code: str, message: str, error_type: str) -> dict[str, Any]:
    return {"message": message, "type": error_type, "param": None, "code": code}


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None
