"""The Realtime WebSocket endpoint: handshake, origin, API key, session cap, then the session core.

Mounted at ``/v1/realtime`` and ``/realtime`` by realtime/http/app.py (docs/PROTOCOL.md §1). This module is the
WebSocket adapter only: it accepts (or refuses) the socket, wraps it in a `WebSocketTransport`
(realtime/http/ws_transport.py) and hands that to `serve_connection`, which runs the `Session` over it and
closes it (realtime/session/connection.py).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from starlette.websockets import WebSocket

from realtime.errors import (
    CLOSE_GOING_AWAY,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    CODE_INVALID_API_KEY,
    CODE_ORIGIN_NOT_ALLOWED,
    CODE_SESSION_LIMIT,
    CODE_SHUTTING_DOWN,
    INVALID_REQUEST,
    SERVER_ERROR,
    ErrorReport,
    PeerGone,
    quote,
)
from realtime.http.sideband import refuse_unknown_call, serve_sideband
from realtime.http.ws_transport import CLOSE_WAIT_S, WebSocketTransport
from realtime.session.connection import Drain, serve_connection
from realtime.session.session import Session
from realtime.session.transport import Ending
from realtime.speech.runtime import Runtime
from realtime.webrtc.calls import CallRegistry
from realtime.wire.handshake import Dialect, negotiate
from realtime.wire.server_events import EventBuilder, encode

log = logging.getLogger(__name__)

SERVED_MODEL = "step-audio-2-mini"
_IGNORED_QUERY = ("intent",)
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


@dataclass
class SessionCount:
    """Open sessions against the configured cap, and the shutdown signal they watch (event loop only).

    Attributes:
        limit: sessions allowed at once.
        open: sessions open now.
        drain: set by `start_drain`; every session closes with 1001 once its responses are done.
    """

    limit: int
    open: int = 0
    drain: Drain = field(default_factory=lambda: Drain(asyncio.Event()))
    none_open: asyncio.Event = field(default_factory=asyncio.Event)

    def start_drain(self, seconds: float) -> None:
        """Refuse new sessions; let active responses run for at most ``seconds``, then close every session."""
        self.drain.deadline = asyncio.get_running_loop().time() + seconds
        self.drain.started.set()
        if not self.open:
            self.none_open.set()

    def opened(self) -> None:
        """Count a new session."""
        self.open += 1
        self.none_open.clear()

    def closed(self) -> None:
        """Count a session gone."""
        self.open -= 1
        if not self.open:
            self.none_open.set()


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def origin_allowed(
    origin: str | None, host_header: str | None, allowed: tuple[str, ...], *, keyed: bool = False
) -> bool:
    """Whether a browser page from ``origin`` may open a session (README "Security and limits").

    No ``Origin`` header (SDKs, servers, curl) is always allowed: the check only stops other sites' pages
    from driving this server through a visitor's browser. ``allowed`` lists exact origins, or ``*`` for
    any. With an empty list, a loopback page (``localhost``, ``127.0.0.1``, ``[::1]``) and a page served by
    this server under an IP address are allowed; a page served by this server under a DNS name is allowed
    only when the server has an API key (``keyed``), because without one a hostile site could rebind its DNS
    name to this server's address and drive it from a visitor's browser.
    """
    if origin is None:
        return True
    if "*" in allowed or origin.lower() in {entry.lower() for entry in allowed}:
        return True
    if allowed:
        return False
    parts = urlsplit(origin)
    host = parts.hostname or ""
    if _is_loopback(host):
        return True
    same_origin = host_header is not None and parts.netloc == host_header
    return same_origin and (keyed or _is_ip_literal(host))


def served_model_name(runtime: Runtime) -> str:
    """The model id reported in ``session.model``: the model folder's name, or Step-Audio-2-mini."""
    path = runtime.config.model_path
    return Path(str(path)).name if path else SERVED_MODEL


def key_accepted(presented: str | None, server_key: str | None) -> bool:
    """True when the server has no key, or ``presented`` equals it (compared in constant time)."""
    if server_key is None:
        return True
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), server_key.encode())


def realtime_endpoint(
    runtime: Runtime, sessions: SessionCount, calls: CallRegistry | None = None
) -> Callable[[WebSocket], Awaitable[None]]:
    """The WebSocket handler serving Realtime sessions on ``runtime``, counted in ``sessions``, and the
    sidebands of the WebRTC ``calls`` (``?call_id=``, realtime/http/sideband.py)."""
    config = runtime.config
    server_key = config.api_key or None
    forced_dialect = (
        Dialect(config.dialect) if config.dialect in (Dialect.GA.value, Dialect.BETA.value) else None
    )
    model = served_model_name(runtime)

    async def realtime_socket(ws: WebSocket) -> None:
        offered = ws.scope.get("subprotocols") or []
        handshake = negotiate(ws.headers, offered, forced=forced_dialect, query=ws.query_params)
        requested = ws.query_params.get("model")
        for name in _IGNORED_QUERY:
            if name in ws.query_params:
                log.info("ignoring unsupported query parameter %s", name)
        call_id = ws.query_params.get("call_id")
        call = calls.find(call_id) if call_id is not None and calls is not None else None
        if call_id is not None and call is None and key_accepted(handshake.api_key, server_key):
            await refuse_unknown_call(ws, call_id)  # before the upgrade, as OpenAI answers an unknown call
            return
        log.info("session requested model=%s dialect=%s", requested, handshake.dialect.value)
        await ws.accept(subprotocol=handshake.subprotocol)
        transport = WebSocketTransport(ws, handshake.dialect)
        origin = ws.headers.get("origin")
        if not origin_allowed(origin, ws.headers.get("host"), config.allowed_origins, keyed=bool(server_key)):
            report = ErrorReport(
                INVALID_REQUEST,
                CODE_ORIGIN_NOT_ALLOWED,
                f"Pages from origin '{quote(origin)}' may not open sessions on this server; start it with "
                "--allowed-origins to allow them.",
            )
            await _refuse(transport, handshake.dialect, report, CLOSE_POLICY_VIOLATION, runtime)
            return
        if not key_accepted(handshake.api_key, server_key):
            # accept first, then refuse: a browser cannot read the status of a refused upgrade
            # (docs/PROTOCOL.md §1.2)
            presented = "A wrong" if handshake.api_key else "No"
            report = ErrorReport(
                INVALID_REQUEST,
                CODE_INVALID_API_KEY,
                f"{presented} API key was provided. Pass the server's key as 'Authorization: Bearer <key>', "
                "an 'api-key' header, the 'openai-insecure-api-key.<key>' subprotocol or '?api_key=<key>'.",
            )
            await _refuse(transport, handshake.dialect, report, CLOSE_POLICY_VIOLATION, runtime)
            return
        if call is not None:  # a sideband joins a session that already holds its slot
            await serve_sideband(transport, call, config.send_timeout)
            return
        if sessions.drain.started.is_set():
            report = ErrorReport(SERVER_ERROR, CODE_SHUTTING_DOWN, "The server is shutting down.")
            await _refuse(transport, handshake.dialect, report, CLOSE_GOING_AWAY, runtime)
            return
        if sessions.open >= sessions.limit:
            report = ErrorReport(
                SERVER_ERROR, CODE_SESSION_LIMIT, f"The server is at its limit of {sessions.limit} sessions."
            )
            await _refuse(transport, handshake.dialect, report, CLOSE_TRY_AGAIN_LATER, runtime)
            return
        sessions.opened()
        runtime.metrics.session_opened()
        try:
            session = Session(runtime, handshake.dialect, model)
            await serve_connection(session, transport, sessions.drain)
        finally:
            sessions.closed()
            runtime.metrics.session_closed()

    return realtime_socket


async def _refuse(
    transport: WebSocketTransport, dialect: Dialect, report: ErrorReport, close_code: int, runtime: Runtime
) -> None:
    """Tell a client why it gets no session, then close (accepted first: a browser cannot read the status
    of a refused upgrade, docs/PROTOCOL.md §1.2)."""
    runtime.metrics.error(report.code)
    try:
        async with asyncio.timeout(CLOSE_WAIT_S):
            await transport.send_event(encode(EventBuilder(dialect).error(report)))
    except (TimeoutError, PeerGone):
        return
    await transport.close(Ending(close_code, report.code or ""))
