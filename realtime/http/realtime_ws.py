"""The Realtime WebSocket endpoint: handshake, API key, session cap, then one `Session` until it closes.

Mounted at ``/v1/realtime`` and ``/realtime`` by realtime/http/app.py (docs/PROTOCOL.md §1).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from realtime.errors import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    CODE_INVALID_API_KEY,
    CODE_SESSION_LIMIT,
    INVALID_REQUEST,
    SERVER_ERROR,
    ErrorReport,
)
from realtime.session.connection import serve_connection
from realtime.session.session import Session
from realtime.speech.runtime import Runtime
from realtime.wire.handshake import Dialect, negotiate
from realtime.wire.server_events import EventBuilder, encode

log = logging.getLogger(__name__)

SERVED_MODEL = "step-audio-2-mini"
_IGNORED_QUERY = ("call_id", "intent")


@dataclass
class SessionCount:
    """Open sessions against the configured cap (event loop only)."""

    limit: int
    open: int = 0


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


def realtime_endpoint(runtime: Runtime, sessions: SessionCount) -> Callable[[WebSocket], Awaitable[None]]:
    """The WebSocket handler serving Realtime sessions on ``runtime``, counted in ``sessions``."""
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
        log.info("session requested model=%s dialect=%s", requested, handshake.dialect.value)
        await ws.accept(subprotocol=handshake.subprotocol)
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
            runtime.metrics.error(CODE_INVALID_API_KEY)
            await ws.send_text(encode(EventBuilder(handshake.dialect).error(report)))
            await ws.close(CLOSE_POLICY_VIOLATION, reason=CODE_INVALID_API_KEY)
            return
        if sessions.open >= sessions.limit:
            report = ErrorReport(
                SERVER_ERROR, CODE_SESSION_LIMIT, f"The server is at its limit of {sessions.limit} sessions."
            )
            runtime.metrics.error(CODE_SESSION_LIMIT)
            await ws.send_text(encode(EventBuilder(handshake.dialect).error(report)))
            await ws.close(CLOSE_TRY_AGAIN_LATER)
            return
        sessions.open += 1
        runtime.metrics.session_opened()
        close_code = CLOSE_INTERNAL_ERROR
        try:
            close_code = await serve_connection(Session(runtime, handshake.dialect, model), ws)
        except Exception:
            log.exception("session failed")
        finally:
            sessions.open -= 1
            runtime.metrics.session_closed()
        if ws.client_state is WebSocketState.CONNECTED:
            try:
                await ws.close(close_code)
            except (RuntimeError, WebSocketDisconnect):
                pass  # the client left while we were closing

    return realtime_socket
