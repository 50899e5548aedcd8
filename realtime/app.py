"""The Starlette application: Realtime WebSockets, health, metrics, voices and the browser demo.

`create_app(runtime)` wires a ready `Runtime` (built by the caller, e.g. ``realtime serve``) into routes:

- ``GET /v1/realtime?model=...`` and ``/realtime``: the OpenAI Realtime WebSocket (REALTIME_PROTOCOL.md §1).
- With ``config.api_key`` set, a WebSocket client must present that key (§1.2); HTTP routes stay open.
- ``GET /health``: JSON status and what the server runs (backend, decoder, voices, embedded-demo notice).
- ``GET /metrics``: Prometheus text from the runtime's registry.
- ``GET /v1/voices``: voice names, the default, and whether this is the embedded demo.
- ``/``: the static ``web_demo/`` page, when the folder exists (source checkouts and editable installs).

Serve it with uvicorn and ``ws_max_size=WS_MAX_FRAME_BYTES`` so oversized client frames reach the protocol
layer (which answers with an ``error`` event) instead of the transport closing the socket.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
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
from realtime.events import EventBuilder, encode
from realtime.protocol import Dialect, negotiate
from realtime.session import RuntimeLike, Session
from realtime.vad import load_shared_engine

log = logging.getLogger(__name__)

# Transport limit for client frames: above the protocol's 15 MiB append limit, so a too-large event gets an
# error event (and the session continues) while absurd frames are still cut off by the server (close 1009).
WS_MAX_FRAME_BYTES = 32 * 1024 * 1024
SERVED_MODEL = "step-audio-2-mini"
WEB_DEMO_DIR = Path(__file__).resolve().parent.parent / "web_demo"
_IGNORED_QUERY = ("call_id", "intent")


class _Sessions:
    """Counts open sessions against the configured cap (event-loop only)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0


def served_model_name(runtime: RuntimeLike) -> str:
    """The model id reported in ``session.model``: the model folder's name, or Step-Audio-2-mini."""
    path = getattr(runtime.config, "model_path", None)
    return Path(str(path)).name if path else SERVED_MODEL


def key_accepted(presented: str | None, server_key: str | None) -> bool:
    """True when the server has no key, or ``presented`` equals it (compared in constant time)."""
    if server_key is None:
        return True
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), server_key.encode())


def create_app(runtime: Any, *, web_demo_dir: Path | None = WEB_DEMO_DIR) -> Starlette:
    """Build the ASGI app around a started runtime (the caller owns its lifecycle).

    Args:
        runtime: a `realtime.runtime.Runtime` (or anything with the same surface).
        web_demo_dir: static folder served at ``/``; None or a missing folder disables it.
    """
    sessions = _Sessions(int(getattr(runtime.config, "max_sessions", 1)))
    server_key: str | None = getattr(runtime.config, "api_key", None) or None
    dialect_name = str(getattr(runtime.config, "dialect", "auto"))
    forced_dialect = Dialect(dialect_name) if dialect_name in (Dialect.GA.value, Dialect.BETA.value) else None
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
            # accept first, then refuse: a browser cannot read the status of a refused upgrade (§1.2)
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
            close_code = await Session(runtime, handshake.dialect, model).serve(ws)
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

    async def health(request: Request) -> JSONResponse:
        describe = getattr(runtime, "describe", None)
        details = describe() if describe is not None else {}
        return JSONResponse({"status": "ok", "model": model, "sessions": sessions.open, **details})

    async def metrics(request: Request) -> Response:
        body, content_type = runtime.metrics.render()
        return Response(body, media_type=content_type)

    async def voices(request: Request) -> JSONResponse:
        registry = runtime.voices
        return JSONResponse(
            {
                "voices": list(registry.names()),
                "default": registry.default,
                "embedded_demo": bool(getattr(runtime, "is_embedded_demo", False)),
            }
        )

    routes: list[BaseRoute] = [
        WebSocketRoute("/v1/realtime", realtime_socket),
        WebSocketRoute("/realtime", realtime_socket),
        Route("/health", health),
        Route("/metrics", metrics),
        Route("/v1/voices", voices),
    ]
    if web_demo_dir is not None and web_demo_dir.is_dir():
        routes.append(Mount("/", StaticFiles(directory=web_demo_dir, html=True), name="web_demo"))
    return Starlette(routes=routes, lifespan=_lifespan)


@asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    # load the shared VAD model (onnxruntime) in a thread at start-up, not in the first session
    await load_shared_engine()
    yield
