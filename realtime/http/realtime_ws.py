"""The Realtime WebSocket endpoint: handshake, drain, session cap, then the session core.

Mounted at ``/v1/realtime`` and ``/realtime`` by realtime/http/app.py (docs/PROTOCOL.md §1). The origin and the
key were checked before (realtime/http/access.py), which left the key's `Grant`: an ephemeral key's session
configuration is the one the session starts with. This module is the WebSocket adapter only: it accepts (or
refuses) the socket, wraps it in a `WebSocketTransport`
(realtime/http/ws_transport.py) and hands that to `serve_connection`, which runs the `Session` over it and
closes it (realtime/session/connection.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from starlette.websockets import WebSocket

from realtime.errors import (
    CLOSE_GOING_AWAY,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    CODE_INVALID_API_KEY,
    CODE_SESSION_LIMIT,
    CODE_SHUTTING_DOWN,
    INVALID_REQUEST,
    SERVER_ERROR,
    ErrorReport,
)
from realtime.http.access import grant_of
from realtime.http.keys import Grant
from realtime.http.sideband import refuse_unknown_call, serve_sideband
from realtime.http.ws_transport import WebSocketTransport
from realtime.session.connection import Drain, serve_connection
from realtime.session.session import Session
from realtime.speech.runtime import Runtime
from realtime.webrtc.calls import CallRegistry
from realtime.wire.handshake import Dialect, forced, negotiate

log = logging.getLogger(__name__)

SERVED_MODEL = "step-audio-2-mini"


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


def served_model_name(runtime: Runtime) -> str:
    """The model id reported in ``session.model``: the model folder's name, or Step-Audio-2-mini."""
    path = runtime.config.model_path
    return Path(str(path)).name if path else SERVED_MODEL


def realtime_endpoint(
    runtime: Runtime, sessions: SessionCount, calls: CallRegistry | None = None
) -> Callable[[WebSocket], Awaitable[None]]:
    """The WebSocket handler serving Realtime sessions on ``runtime``, counted in ``sessions``, and the
    sidebands of the WebRTC ``calls`` (``?call_id=``, realtime/http/sideband.py)."""
    config = runtime.config
    forced_dialect = forced(config.dialect)
    model = served_model_name(runtime)

    async def realtime_socket(ws: WebSocket) -> None:
        # the access layer (realtime/http/access.py) has checked the origin and the key; refused sockets
        # never get here
        grant = grant_of(ws.scope)
        offered = ws.scope.get("subprotocols") or []
        handshake = negotiate(ws.headers, offered, forced=forced_dialect, query=ws.query_params)
        requested = ws.query_params.get("model")
        # a transcription session's model is its transcription model (session.update): a ?model= beside
        # ?intent=transcription (LiveKit sends one to hosts other than OpenAI's) is ignored like any other
        log.info(
            "session requested model=%s dialect=%s type=%s key=%s",
            requested,
            handshake.dialect.value,
            handshake.session_type,
            "ephemeral" if grant.ephemeral else "server",
        )
        call_id = ws.query_params.get("call_id")
        if call_id is not None:
            await _attach_sideband(
                ws, handshake.subprotocol, handshake.dialect, call_id, grant, calls, runtime
            )
            return
        await ws.accept(subprotocol=handshake.subprotocol)
        transport = WebSocketTransport(ws, handshake.dialect)
        if sessions.drain.started.is_set():
            report = ErrorReport(SERVER_ERROR, CODE_SHUTTING_DOWN, "The server is shutting down.")
            await _refuse(transport, report, CLOSE_GOING_AWAY, runtime)
            return
        if sessions.open >= sessions.limit:
            report = ErrorReport(
                SERVER_ERROR, CODE_SESSION_LIMIT, f"The server is at its limit of {sessions.limit} sessions."
            )
            await _refuse(transport, report, CLOSE_TRY_AGAIN_LATER, runtime)
            return
        sessions.opened()
        runtime.metrics.session_opened()
        try:
            session = Session(runtime, handshake.dialect, model, handshake.session_type, preset=grant.session)
            await serve_connection(session, transport, sessions.drain)
        finally:
            sessions.closed()
            runtime.metrics.session_closed()

    return realtime_socket


async def _refuse(
    transport: WebSocketTransport, report: ErrorReport, close_code: int, runtime: Runtime
) -> None:
    runtime.metrics.error(report.code)
    await transport.refuse(report, close_code)


async def _attach_sideband(
    ws: WebSocket,
    subprotocol: str | None,
    dialect: Dialect,
    call_id: str,
    grant: Grant,
    calls: CallRegistry | None,
    runtime: Runtime,
) -> None:
    """``/v1/realtime?call_id=``: attach to a running WebRTC call (realtime/http/sideband.py).

    The sideband is the application server's door into a call its user placed: it takes the server's key. An
    ephemeral key was lent to that user's browser, which already holds the call, so it is refused (the
    refusal OpenAI gives a key it does not take: ``invalid_api_key``, close 1008).
    """
    call = calls.find(call_id) if calls is not None else None
    if call is None:
        await refuse_unknown_call(ws, call_id)  # before the upgrade, as OpenAI answers an unknown call
        return
    await ws.accept(subprotocol=subprotocol)
    transport = WebSocketTransport(ws, dialect)
    if grant.ephemeral:
        report = ErrorReport(
            INVALID_REQUEST,
            CODE_INVALID_API_KEY,
            "An ephemeral key cannot attach to a call's sideband: connect with the server's API key.",
        )
        await _refuse(transport, report, CLOSE_POLICY_VIOLATION, runtime)
        return
    log.info("sideband attached to call %s", call.id)
    await serve_sideband(transport, call, runtime.config.send_timeout)
