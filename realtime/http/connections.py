"""Connection limits for every door, below the ASGI app: open-connection caps, the header timeout, a health reserve.

Each TCP connection uvicorn accepts is handed to a `GuardedConnection`, an asyncio ``Protocol`` wrapped around
uvicorn's own HTTP protocol (`guarded_protocol_class` is what ``uvicorn.Config(http=...)`` gets). It:

- counts the connection in a `ConnectionTable` against ``--max-connections`` and ``--max-connections-per-ip``.
  At the total cap the table first closes the connection that has waited longest for its client (one that
  has not sent a complete request head, or whose body the app is waiting for: an idle or slow client, the
  cheapest to drop and the shape of a lock-out); with none to close, or past the per-address cap, the new connection is *gated*: it may ask only
  ``GET /health*`` (a reserve of `HEALTH_RESERVE` connections keeps the health checks answering), anything
  else gets 503 ``connection_limit_reached`` or 429 ``rate_limit_exceeded`` and is closed; past the reserve it
  is closed at once. Every refusal happens after accept(), so file descriptors stay free (see
  realtime/http/capacity.py for the sizing).
- bounds the time to receive a request's line and headers (``--header-timeout``), from the connection's start
  or from the end of its previous answer: then 408 ``request_timeout`` and the connection closes.

Why a Protocol wrapper and not ASGI: nothing reaches the ASGI app before a request's headers are complete, so
a client that never finishes them, or a connection over a cap, can only be seen (and refused cheaply, without
a task) at the transport. uvicorn offers ``limit_concurrency`` (a 503 for *every* request past a count,
health checks included, and no per-address count) and ``timeout_keep_alive`` (idle time between requests
only); h11 and httptools have no header timeout. The body timeout and the body memory budget, which concern
a request the app is reading, are an ASGI layer (realtime/http/request_limits.py).

The two layers meet through `current_connection`: the guard runs the wrapped protocol's callbacks inside a
`contextvars.Context` of its own, so every task uvicorn starts for the connection (the ASGI call, a WebSocket
session) inherits it, and the ASGI layer tells the guard when a request started and when its answer ended.
After a WebSocket upgrade (uvicorn swaps the transport's protocol) the guard re-installs itself in front of
the WebSocket protocol, so the connection stays counted until it closes.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import json
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from realtime.errors import INVALID_REQUEST, SERVER_ERROR
from realtime.http.capacity import HEALTH_RESERVE
from realtime.metrics import Metrics

log = logging.getLogger(__name__)

CODE_REQUEST_TIMEOUT = "request_timeout"
CODE_CONNECTION_LIMIT = "connection_limit_reached"
CODE_RATE_LIMIT = "rate_limit_exceeded"  # OpenAI's code for a 429
RATE_LIMIT_TYPE = "requests"  # OpenAI's error type for a request-count limit
GATE_TIMEOUT_S = 2.0  # a gated connection's time to send its request head (and a reserved one's, again)
MAX_GATED_HEAD = 16 * 1024  # bytes a gated connection may send before its request head must be complete
HEALTH_PATHS = ("/health", "/health/")
ABORT_WAIT_S = 1.0  # an aborted transport reports its loss on the next loop turn; never wait longer than this
_REASONS = {408: "Request Timeout", 429: "Too Many Requests", 503: "Service Unavailable"}

_CURRENT: contextvars.ContextVar[GuardedConnection | None] = contextvars.ContextVar(
    "streamvoice_connection", default=None
)


def current_connection() -> GuardedConnection | None:
    """The guarded connection the calling task serves, or None outside one (a test's in-process client)."""
    return _CURRENT.get()


class Phase(enum.Enum):
    """Where a connection stands."""

    GATED = "gated"  # over a cap: only its request line is read, to let a health check through
    WAITING = "waiting"  # for the client's next request (headers being received, or idle between requests)
    BODY = "body"  # the app waits for more of the request's body from the client
    BUSY = "busy"  # a request is being served, or the connection is a WebSocket
    CLOSED = "closed"


class Admission(enum.Enum):
    """What `ConnectionTable.admit` decided."""

    ADMITTED = "admitted"
    GATED_FULL = "full"  # the total cap is reached and no waiting connection could be closed
    GATED_ADDRESS = "per_address"  # this address holds its cap
    DROPPED = "reserve_full"  # gated, but the reserve is full too: closed at once


@dataclass(frozen=True)
class ConnectionLimits:
    """The connection limits of one server.

    Attributes:
        max_open: connections admitted at once (``--max-connections``, resolved: never 0).
        max_per_address: connections admitted from one client address; 0 = no cap.
        header_timeout: seconds to receive a request's line and headers.
        health_reserve: gated connections allowed at once (they may only ask ``GET /health*``).
    """

    max_open: int
    max_per_address: int
    header_timeout: float
    health_reserve: int = HEALTH_RESERVE


class ConnectionTable:
    """Every open connection of one server (event loop only).

    Args:
        limits: the caps and the header timeout.
        metrics: where the open count and the refusals are reported (optional).
    """

    def __init__(self, limits: ConnectionLimits, metrics: Metrics | None = None) -> None:
        self.limits = limits
        self.open = 0
        self.reserve = 0
        self._metrics = metrics
        self._per_address: Counter[str] = Counter()
        # admitted connections waiting for their client, least recently active first (eviction order)
        self._waiting: OrderedDict[GuardedConnection, None] = OrderedDict()

    def admit(self, connection: GuardedConnection) -> Admission:
        """Count a new connection, or decide how to refuse it (closing a waiting one to make room)."""
        limits = self.limits
        if limits.max_per_address and self._per_address[connection.address] >= limits.max_per_address:
            return self._gate(Admission.GATED_ADDRESS)
        if self.open >= limits.max_open and not self._evict_one():
            return self._gate(Admission.GATED_FULL)
        self.open += 1
        self._per_address[connection.address] += 1
        self._report()
        return Admission.ADMITTED

    def _gate(self, why: Admission) -> Admission:
        if self.reserve >= self.limits.health_reserve:
            self.refused(Admission.DROPPED.value)
            return Admission.DROPPED
        self.reserve += 1
        return why

    def _evict_one(self) -> bool:
        while self._waiting:
            oldest, _ = self._waiting.popitem(last=False)
            if oldest.evict():
                return True
        return False

    def waiting(self, connection: GuardedConnection) -> None:
        """``connection`` waits for its client: it may be closed to make room (least recently active first)."""
        self._waiting[connection] = None
        self._waiting.move_to_end(connection)

    def busy(self, connection: GuardedConnection) -> None:
        """``connection`` is serving a request (or a WebSocket): never closed to make room."""
        self._waiting.pop(connection, None)

    def release(self, connection: GuardedConnection, admitted: bool) -> None:
        """``connection`` closed; ``admitted`` says whether it was counted (else it held the reserve)."""
        self._waiting.pop(connection, None)
        if not admitted:
            self.reserve -= 1
            return
        self.open -= 1
        left = self._per_address[connection.address] - 1
        if left:
            self._per_address[connection.address] = left
        else:
            del self._per_address[connection.address]
        self._report()

    def refused(self, reason: str) -> None:
        """Count a connection refused or closed early for ``reason``."""
        if self._metrics is not None:
            self._metrics.connection_refused(reason)

    def _report(self) -> None:
        if self._metrics is not None:
            self._metrics.set_open_connections(self.open)


def error_response(status: int, code: str, message: str, error_type: str, retry_after: int = 0) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 response with an OpenAI error body, written by the guard."""
    body = json.dumps(
        {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    ).encode()
    head = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


def is_health_request(line: bytes) -> bool:
    """Whether an HTTP request line asks ``GET``/``HEAD`` of ``/health`` or a path under it."""
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
        return False
    path = parts[1].split(b"?", 1)[0].decode("latin-1")
    return path == HEALTH_PATHS[0] or path.startswith(HEALTH_PATHS[1])


class GuardedConnection(asyncio.Protocol):
    """One accepted connection in front of uvicorn's protocol for it (see the module docstring).

    Args:
        table: the server's connection table.
        make_inner: builds uvicorn's protocol for this connection (only once it is let in).
    """

    def __init__(self, table: ConnectionTable, make_inner: Callable[[], asyncio.BaseProtocol]) -> None:
        self._table = table
        self._make_inner = make_inner
        self._inner: Any = None  # uvicorn's protocol (its type varies: HTTP, then WebSocket)
        self._transport: asyncio.Transport | None = None
        self._context = contextvars.copy_context()
        self._context.run(_CURRENT.set, self)
        self._entered = False
        self.address = ""
        self.phase = Phase.GATED
        self._admitted = False
        self._reserved = False
        self._why = Admission.ADMITTED
        self._timer: asyncio.TimerHandle | None = None
        self._gate_buffer = bytearray()
        self._first_request = True
        self._bytes_waiting = 0  # bytes received since the connection started waiting for a request
        self._answer_started = False  # while in Phase.BODY: the app already began its answer
        self._lost = asyncio.Event()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else "local"
        self._why = self._table.admit(self)
        if self._why is Admission.DROPPED:
            self.phase = Phase.CLOSED
            transport.abort()
            return
        if self._why is not Admission.ADMITTED:
            self._reserved = True
            self._arm(GATE_TIMEOUT_S)
            return
        self._admitted = True
        self._start_inner()

    def data_received(self, data: bytes) -> None:
        if self.phase is Phase.GATED:
            self._gate(data)
            return
        if self.phase is Phase.CLOSED:
            return
        if self.phase in (Phase.WAITING, Phase.BODY):
            self._bytes_waiting += len(data)
            if self._admitted:
                self._table.waiting(self)  # recently active: the last to be closed for room
        self._call(self._inner.data_received, data)
        self._adopt_upgrade()

    def eof_received(self) -> bool | None:
        if self._inner is None:
            return None
        result: bool | None = self._call(self._inner.eof_received)
        return result

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._call(self._inner.pause_writing)

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._call(self._inner.resume_writing)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._why is not Admission.DROPPED:
            self._table.release(self, self._admitted)
        self.phase = Phase.CLOSED
        if self._inner is not None:
            self._call(self._inner.connection_lost, exc)
        self._lost.set()

    # told by the ASGI layer (realtime/http/request_limits.py)
    def request_started(self) -> None:
        """A request's headers arrived and the app runs it (or the connection became a WebSocket)."""
        self._cancel_timer()
        self.phase = Phase.BUSY
        self._first_request = False
        self._table.busy(self)

    def waiting_for_body(self, answer_started: bool) -> None:
        """The app waits for more of the body from the client: until `body_arrived`, this connection may be
        closed to make room like one waiting for its headers (408 unless ``answer_started``)."""
        if self.phase is not Phase.BUSY:
            return
        self.phase = Phase.BODY
        self._answer_started = answer_started
        if self._admitted:
            self._table.waiting(self)

    def body_arrived(self) -> None:
        """The app got the piece of body it waited for (or stopped waiting)."""
        if self.phase is Phase.BODY:
            self.phase = Phase.BUSY
            self._table.busy(self)

    def request_finished(self) -> None:
        """The answer to the current request was sent in full: the connection waits for the next one."""
        if self.phase is Phase.BODY:
            self.phase = Phase.BUSY
        if self.phase is not Phase.BUSY:
            return
        if self._reserved:  # a health check let in past a cap: one answer, then the reserve is free again
            self._close()
            return
        self.phase = Phase.WAITING
        self._bytes_waiting = 0
        self._table.waiting(self)
        self._arm(self._table.limits.header_timeout)

    async def abort(self) -> None:
        """Drop the connection now and return once it is gone (uvicorn then knows the client left, so an
        answer cut short is not reported as an app error): a streamed answer ends without its last chunk, which
        the client sees."""
        if self._transport is not None and self.phase is not Phase.CLOSED:
            self._transport.abort()
        try:
            async with asyncio.timeout(ABORT_WAIT_S):
                await self._lost.wait()
        except TimeoutError:
            pass

    def evict(self) -> bool:
        """Close this connection to make room, if it waits for its client (its request's head, or more of
        its body); True when it was closed."""
        if self.phase is Phase.WAITING:
            self._table.refused("evicted")
            self._end_waiting("The connection was closed to make room: its request did not arrive in time.")
            return True
        if self.phase is Phase.BODY:
            self._table.refused("evicted")
            if self._answer_started:
                self._close(abort=True)
            else:
                message = "The connection was closed to make room: the request body was not arriving."
                self._write_and_close(error_response(408, CODE_REQUEST_TIMEOUT, message, INVALID_REQUEST))
            return True
        return False

    # internals
    def _call(self, callback: Callable[..., Any], *args: Any) -> Any:
        if self._entered:  # re-entered (a write inside data_received pausing the transport): already inside
            return callback(*args)
        self._entered = True
        try:
            return self._context.run(callback, *args)
        finally:
            self._entered = False

    def _start_inner(self) -> None:
        self.phase = Phase.WAITING
        if self._admitted:
            self._table.waiting(self)
        self._arm(self._table.limits.header_timeout if self._admitted else GATE_TIMEOUT_S)
        self._inner = self._make_inner()
        self._call(self._inner.connection_made, self._transport)

    def _adopt_upgrade(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        current = transport.get_protocol()
        if current is not self:  # uvicorn switched the transport to its WebSocket protocol: stay in front
            self._inner = current
            transport.set_protocol(self)

    def _gate(self, data: bytes) -> None:
        # wait for the whole head, so a refusal is not answered while the client still sends it (closing a
        # socket with unread data resets it, and the client could lose the answer)
        self._gate_buffer += data
        if b"\r\n\r\n" not in self._gate_buffer:
            if len(self._gate_buffer) > MAX_GATED_HEAD:
                self._refuse()
            return
        end = self._gate_buffer.find(b"\r\n")
        if not is_health_request(bytes(self._gate_buffer[:end])):
            self._refuse()
            return
        self._cancel_timer()
        buffered, self._gate_buffer = bytes(self._gate_buffer), bytearray()
        self._start_inner()
        self.data_received(buffered)

    def _refuse(self) -> None:
        self._table.refused(self._why.value)
        if self._why is Admission.GATED_ADDRESS:
            limit = self._table.limits.max_per_address
            response = error_response(
                429,
                CODE_RATE_LIMIT,
                f"Too many open connections from your address (the limit is {limit}); close some and retry.",
                RATE_LIMIT_TYPE,
                retry_after=1,
            )
        else:
            response = error_response(
                503,
                CODE_CONNECTION_LIMIT,
                f"The server is at its limit of {self._table.limits.max_open} open connections; retry later.",
                SERVER_ERROR,
                retry_after=1,
            )
        self._write_and_close(response)

    def _arm(self, seconds: float) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._timer_fired)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timer_fired(self) -> None:
        self._timer = None
        # Decide one loop turn later: headers completed in this turn have started their ASGI task by then
        # (it was scheduled before this check), and that task has told us `request_started`.
        asyncio.get_running_loop().call_soon(self._check_timeout)

    def _check_timeout(self) -> None:
        if self.phase is Phase.GATED:
            self._table.refused("gate_timeout")
            self._close()
        elif self.phase is Phase.WAITING:
            self._table.refused("header_timeout")
            limit = self._table.limits.header_timeout if self._admitted else GATE_TIMEOUT_S
            self._end_waiting(f"The request's headers did not arrive within {limit:g} s.")

    def _end_waiting(self, message: str) -> None:
        if self._first_request or self._bytes_waiting:
            self._write_and_close(error_response(408, CODE_REQUEST_TIMEOUT, message, INVALID_REQUEST))
        else:
            self._close()  # idle between requests: closing is how HTTP ends a kept-alive connection

    def _write_and_close(self, response: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(response)
        self._close()

    def _close(self, *, abort: bool = False) -> None:
        self._cancel_timer()
        self._table.busy(self)
        if self._transport is not None:
            if abort:
                self._transport.abort()
            else:
                self._transport.close()


def guarded_protocol_class(
    table: ConnectionTable, inner: type[asyncio.Protocol] | None = None
) -> type[asyncio.Protocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``: uvicorn's own (``inner``, by default the one
    it picks itself) behind a `GuardedConnection` counted in ``table``."""
    if inner is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        inner = AutoHTTPProtocol
    base = inner

    class UvicornGuarded(GuardedConnection):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(table, lambda: base(**kwargs))

    return UvicornGuarded
