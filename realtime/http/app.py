"""The Starlette application: Realtime WebSockets, health, metrics, voices and the browser demo.

`create_app(runtime)` wires a ready `Runtime` (built by the caller, e.g. ``realtime serve``) into routes:

- ``GET /v1/realtime?model=...`` and ``/realtime``: the OpenAI Realtime WebSocket (docs/PROTOCOL.md §1);
  with ``?call_id=`` the sideband of a WebRTC call (realtime/http/sideband.py).
- ``POST /v1/realtime/calls`` and ``/v1/realtime/calls/{call_id}/hangup`` (realtime/http/calls_api.py):
  WebRTC calls running the same session core (realtime/webrtc/, docs/PROTOCOL.md §11).
- ``POST /v1/audio/speech`` (realtime/http/speech.py), ``POST /v1/chat/completions`` (realtime/http/chat.py),
  ``POST /v1/audio/transcriptions`` and ``/v1/audio/translations`` (realtime/http/transcriptions.py),
  ``GET/POST /v1/audio/voices``, ``DELETE /v1/audio/voices/{name}`` (realtime/http/voices_api.py), ``GET /v1/models`` (realtime/http/models.py):
  OpenAI's audio HTTP API on the same runtime; every error in OpenAI's shape (realtime/http/errors.py).
- With ``config.api_key`` set, a WebSocket client must present that key (docs/PROTOCOL.md §1.2), and so must
  ``/metrics`` and every ``/v1/`` HTTP route (``Authorization: Bearer`` or ``api-key``); ``/health`` and the
  demo stay open.
- ``GET /health``: JSON status, readiness (``ready`` / ``draining``), what the server runs, sessions, decoder
  streams, and the process's RSS and task count.
- ``GET /health/live``: 200 while the process serves HTTP (restart it when this fails).
- ``GET /health/ready``: 200 when this replica should get new sessions: decoder running, LLM backend
  answering, not draining, below ``max_sessions``; else 503 with the reasons (docs/DEPLOY.md).
- ``GET /metrics``: Prometheus text from the runtime's registry.
- ``GET /v1/voices``: voice names, the default, and whether this is the embedded demo.
- ``/``: the static ``web_demo/`` page, when the folder exists (source checkouts and editable installs), and
  ``/favicon.ico``.

Serve it with uvicorn and `uvicorn_options` (frame size, queue, keepalive pings) so oversized client frames
reach the protocol layer (which answers with an ``error`` event) instead of the transport closing the socket.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ExceptionHandler

from realtime.config import ServerConfig
from realtime.http.calls_api import call_routes
from realtime.http.chat import chat_endpoint
from realtime.http.errors import (
    HTTPError,
    check_api_key,
    error_response,
    handle_http_error,
    handle_starlette_http_exception,
    handle_unexpected,
)
from realtime.http.models import model_routes
from realtime.http.realtime_ws import SessionCount, realtime_endpoint, served_model_name
from realtime.http.speech import speech_endpoint
from realtime.http.transcriptions import transcriptions_endpoint, translations_endpoint
from realtime.http.voices_api import VoicesAPI
from realtime.session.vad import held_engine
from realtime.speech.runtime import Runtime
from realtime.webrtc.calls import CallRegistry

log = logging.getLogger(__name__)

# Transport limit for client frames: above the protocol's 15 MiB append limit, so a too-large event gets an
# error event (and the session continues) while absurd frames are still cut off by the server (close 1009).
WS_MAX_FRAME_BYTES = 32 * 1024 * 1024
# Client messages uvicorn may queue per socket before it stops reading (its legacy websockets protocol; the
# default sans-I/O one already pauses reading after each message until the app takes it).
WS_MAX_QUEUE = 4
WEB_DEMO_DIR = Path(__file__).resolve().parents[2] / "web_demo"
FAVICON = "favicon.svg"
HTTP_NOT_FOUND = 404
RSS_PAGE_FIELD = 1  # /proc/self/statm: the second field is resident pages


def uvicorn_options(config: ServerConfig) -> dict[str, Any]:
    """The uvicorn settings the Realtime endpoint relies on: frame size, queue and keepalive pings.

    A dead or stuck peer is dropped within ``ws_ping_interval + ws_ping_timeout`` seconds.
    """
    interval = config.ws_ping_interval or None
    return {
        "ws_max_size": WS_MAX_FRAME_BYTES,
        "ws_max_queue": WS_MAX_QUEUE,
        "ws_ping_interval": interval,
        "ws_ping_timeout": config.ws_ping_timeout if interval else None,
    }


def process_figures() -> dict[str, int]:
    """Resident memory (bytes), its peak, and the event loop's task count, for ``/health`` and the soak."""
    rss = 0
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            rss = int(statm.read().split()[RSS_PAGE_FIELD]) * resource.getpagesize()
    except OSError:
        pass
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak_kb if sys.platform == "darwin" else peak_kb * 1024
    return {"rss_bytes": rss, "peak_rss_bytes": peak, "tasks": len(asyncio.all_tasks())}


Handler = Callable[[Request], Awaitable[Response]]


def _keyed(server_key: str | None, handler: Handler) -> Handler:
    """``handler`` behind the server's API key (when one is set), refused in OpenAI's error shape."""

    async def guarded(request: Request) -> Response:
        try:
            check_api_key(request, server_key)
        except HTTPError as exc:
            return error_response(exc)
        return await handler(request)

    return guarded


def create_app(runtime: Runtime, *, web_demo_dir: Path | None = WEB_DEMO_DIR) -> Starlette:
    """Build the ASGI app around a started runtime (the caller owns its lifecycle).

    Args:
        runtime: the server's shared runtime.
        web_demo_dir: static folder served at ``/``; None or a missing folder disables it.
    """
    sessions = SessionCount(runtime.config.max_sessions)
    model = served_model_name(runtime)
    calls = CallRegistry(runtime, sessions, runtime.config.webrtc, model)
    realtime_socket = realtime_endpoint(runtime, sessions, calls)
    voice_api = VoicesAPI(runtime)
    list_models, retrieve_model = model_routes(model, int(time.time()), runtime.config.api_key or None)

    async def health(request: Request) -> Response:
        info = {
            "status": "ok",
            "model": model,
            "sessions": sessions.open,
            "calls": {"pending": calls.pending, "active": calls.active},
            **runtime.describe(),
        }
        return JSONResponse({**info, **process_figures()})

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"status": "live"})

    async def ready(request: Request) -> JSONResponse:
        reasons = await runtime.readiness()
        if sessions.open >= sessions.limit:
            reasons.append(f"sessions: at the limit of {sessions.limit}")
        body = {"status": "not_ready" if reasons else "ready", "reasons": reasons, "sessions": sessions.open}
        return JSONResponse(body, status_code=503 if reasons else 200)

    async def metrics(request: Request) -> Response:
        body, content_type = runtime.metrics.render()
        return Response(body, media_type=content_type)

    async def voices(request: Request) -> Response:
        try:
            check_api_key(request, runtime.config.api_key or None)
        except HTTPError as exc:
            return error_response(exc)
        registry = runtime.voices
        return JSONResponse(
            {
                "voices": list(registry.names()),
                "default": registry.default,
                "embedded_demo": runtime.is_embedded_demo,
            }
        )

    api: list[BaseRoute] = [  # under /v1: an unknown path is a 404, a wrong method a 405, in OpenAI's shape
        Route("/voices", voices),
        Route("/audio/speech", speech_endpoint(runtime, sessions), methods=["POST"]),
        Route("/audio/transcriptions", transcriptions_endpoint(runtime), methods=["POST"]),
        Route("/audio/translations", translations_endpoint(runtime), methods=["POST"]),
        Route("/chat/completions", chat_endpoint(runtime, model, sessions), methods=["POST"]),
        Route("/audio/voices", voice_api.list, methods=["GET"]),
        Route("/audio/voices", voice_api.upload, methods=["POST"]),
        Route("/audio/voices/{name}", voice_api.delete, methods=["DELETE"]),
        Route("/models", list_models, methods=["GET"]),
        Route("/models/{model:path}", retrieve_model, methods=["GET"]),
        *call_routes(calls, runtime.config.api_key or None),
    ]
    icon = web_demo_dir / FAVICON if web_demo_dir is not None else None

    async def favicon(request: Request) -> Response:
        if icon is None or not icon.is_file():
            return Response(status_code=HTTP_NOT_FOUND)
        return FileResponse(icon, media_type="image/svg+xml")

    routes: list[BaseRoute] = [
        WebSocketRoute("/v1/realtime", realtime_socket),
        WebSocketRoute("/realtime", realtime_socket),
        Route("/health", health),
        Route("/health/live", live),
        Route("/health/ready", ready),
        Route("/metrics", _keyed(runtime.config.api_key or None, metrics)),
        Route("/favicon.ico", favicon),
        Mount("/v1", routes=api),
    ]
    if web_demo_dir is not None and web_demo_dir.is_dir():
        routes.append(Mount("/", StaticFiles(directory=web_demo_dir, html=True), name="web_demo"))
    handlers: dict[Any, ExceptionHandler] = {
        HTTPException: handle_starlette_http_exception,
        HTTPError: handle_http_error,
        Exception: handle_unexpected,
    }
    app = Starlette(routes=routes, lifespan=_lifespan, exception_handlers=handlers)
    app.state.sessions = sessions  # the shutdown path drains them (realtime/commands/serve.py)
    app.state.calls = calls  # closed by the lifespan
    return app


@asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    # the shared VAD model (onnxruntime) is loaded in a thread at start-up, not in the first session, and its
    # thread stops with the server (`realtime serve` runs uvicorn with this lifespan on); WebRTC calls live on
    # their own tasks, not on a request, so they are ended here
    async with held_engine():
        try:
            yield
        finally:
            await app.state.calls.close()
