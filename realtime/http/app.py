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
- ``POST /v1/realtime/client_secrets``: ephemeral keys for Realtime sessions, and ``POST /demo/client_secrets``,
  the demo page's own (realtime/http/client_secrets.py).
- Who may call what is one layer in front of every route (realtime/http/access.py, docs/PROTOCOL.md §1.7): with
  ``config.api_key`` set, every route needs the key but the open ones it lists (``/health*``, the favicon,
  the demo's files); pages from foreign origins are refused; allowed origins get CORS.
- ``GET /health``: JSON status, readiness (``ready`` / ``not_ready`` with the reasons / ``draining``: the
  same answer as ``/health/ready``), what the server runs, sessions, decoder streams, connections, and the
  process's RSS and task count.
- ``GET /health/live``: 200 while the process serves HTTP (restart it when this fails).
- ``GET /health/ready``: 200 when this replica should get new sessions: decoder running, LLM backend
  answering, not draining, below ``max_sessions``; else 503 with the reasons (docs/DEPLOY.md).
- ``GET /metrics``: Prometheus text from the runtime's registry.
- ``GET /v1/voices``: voice names, the default, and whether this is the embedded demo.
- ``/``: the static ``web_demo/`` page, when the folder exists (source checkouts and editable installs), and
  ``/favicon.ico``.

Every request passes the connection limits first: the transport guard (realtime/http/connections.py: open
connection caps, header timeout, the health reserve), then the ASGI layer `RequestLimits`
(realtime/http/request_limits.py: body timeout, body memory budget, the SIGTERM end of HTTP answers), the
outermost one so it sees every request (those the access layer refuses too).

Serve it with uvicorn and `uvicorn_options` (frame size, queue, keepalive pings, the guarded HTTP protocol) so
oversized client frames reach the protocol layer (which answers with an ``error`` event) instead of the
transport closing the socket, and every connection is counted.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import sys
import time
from collections.abc import AsyncIterator
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
from realtime.http.access import DEMO_CLIENT_SECRETS_PATH, AccessLayer
from realtime.http.calls_api import call_routes
from realtime.http.capacity import ACCEPT_BATCH, OpenFiles, connection_capacity, open_files
from realtime.http.chat import chat_endpoint
from realtime.http.client_secrets import ClientSecretsAPI
from realtime.http.connections import ConnectionLimits, ConnectionTable, guarded_protocol_class
from realtime.http.errors import (
    HTTPError,
    handle_http_error,
    handle_starlette_http_exception,
    handle_unexpected,
)
from realtime.http.keys import Keys
from realtime.http.models import model_routes
from realtime.http.realtime_ws import SessionCount, realtime_endpoint, served_model_name
from realtime.http.request_limits import BodyBudget, RequestLimits, RunningRequests
from realtime.http.speech import speech_endpoint
from realtime.http.transcriptions import transcriptions_endpoint, translations_endpoint
from realtime.http.voices_api import VoicesAPI
from realtime.session.vad import held_engine
from realtime.speech.runtime import Runtime
from realtime.webrtc.calls import CallRegistry
from realtime.wire.handshake import forced

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
KEEP_ALIVE_S = 5  # uvicorn closes a kept-alive HTTP connection idle this long (its default, fixed here)
BYTES_PER_MB = 1024 * 1024


def uvicorn_options(config: ServerConfig, connections: ConnectionTable | None = None) -> dict[str, Any]:
    """The uvicorn settings the server relies on: frame size, queue, keepalive pings, the kept-alive idle
    time and, given the app's ``connections`` (``app.state.connections``), the guarded HTTP protocol.

    A dead or stuck peer is dropped within ``ws_ping_interval + ws_ping_timeout`` seconds.
    """
    interval = config.ws_ping_interval or None
    options: dict[str, Any] = {
        "ws_max_size": WS_MAX_FRAME_BYTES,
        "ws_max_queue": WS_MAX_QUEUE,
        "ws_ping_interval": interval,
        "ws_ping_timeout": config.ws_ping_timeout if interval else None,
        "timeout_keep_alive": KEEP_ALIVE_S,
    }
    if connections is not None:
        options["http"] = guarded_protocol_class(connections)
        options["backlog"] = ACCEPT_BATCH  # asyncio's accepts per loop turn (capacity.py says why)
    return options


def connection_limits(config: ServerConfig, files: OpenFiles) -> ConnectionLimits:
    """The connection caps for ``config`` under the open-file limits ``files``."""
    return ConnectionLimits(
        max_open=connection_capacity(config.max_connections, files, config.max_sessions),
        max_per_address=config.max_connections_per_ip,
        header_timeout=config.header_timeout,
    )


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


def create_app(
    runtime: Runtime,
    *,
    web_demo_dir: Path | None = WEB_DEMO_DIR,
    keys: Keys | None = None,
    files: OpenFiles | None = None,
) -> Starlette:
    """Build the ASGI app around a started runtime (the caller owns its lifecycle).

    ``app.state`` holds what the server around it needs: ``sessions`` (drained on SIGTERM), ``requests`` (the
    HTTP requests running, ended at the drain deadline), ``connections`` (for `uvicorn_options`) and
    ``body_budget``.

    Args:
        runtime: the server's shared runtime.
        web_demo_dir: static folder served at ``/``; None or a missing folder disables it.
        keys: the key store (tests pass one with their own clock); by default one from the config.
        files: the open-file limits the connection cap is sized from (measured now when None).
    """
    config = runtime.config
    sessions = SessionCount(config.max_sessions)
    connections = ConnectionTable(connection_limits(config, files or open_files()), runtime.metrics)
    budget = BodyBudget(config.body_memory_mb * BYTES_PER_MB, runtime.metrics)
    running = RunningRequests()
    model = served_model_name(runtime)
    calls = CallRegistry(runtime, sessions, runtime.config.webrtc, model)
    realtime_socket = realtime_endpoint(runtime, sessions, calls)
    voice_api = VoicesAPI(runtime)
    list_models, retrieve_model = model_routes(model, int(time.time()))
    if keys is None:
        keys = Keys(config.api_key, capacity=config.max_client_secrets)
    client_secrets = ClientSecretsAPI(runtime, keys, model)

    async def not_ready_because() -> list[str]:
        """Why this replica should get no new sessions: the one answer of /health and /health/ready."""
        reasons = await runtime.readiness()
        if sessions.open >= sessions.limit:
            reasons.append(f"sessions: at the limit of {sessions.limit}")
        return reasons

    async def health(request: Request) -> Response:
        reasons = await not_ready_because()
        readiness = "draining" if runtime.draining else ("not_ready" if reasons else "ready")
        info = {
            "status": "ok",
            "model": model,
            "sessions": sessions.open,
            "calls": {"pending": calls.pending, "active": calls.active},
            **runtime.describe(),
        }
        limits = connections.limits
        figures = {
            "ready": readiness,
            "not_ready_reasons": reasons,
            "connections": {
                "open": connections.open,
                "limit": limits.max_open,
                "per_address_limit": limits.max_per_address,
                "health_reserve_in_use": connections.reserve,
            },
            "http_requests": len(running) - 1,  # running now, this one excluded
            "body_memory": {"used_bytes": budget.used, "limit_bytes": budget.limit},
        }
        return JSONResponse({**info, **figures, **process_figures()})

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"status": "live"})

    async def ready(request: Request) -> JSONResponse:
        reasons = await not_ready_because()
        body = {"status": "not_ready" if reasons else "ready", "reasons": reasons, "sessions": sessions.open}
        return JSONResponse(body, status_code=503 if reasons else 200)

    async def metrics(request: Request) -> Response:
        body, content_type = runtime.metrics.render()
        return Response(body, media_type=content_type)

    async def voices(request: Request) -> Response:
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
        *call_routes(calls),
        Route("/realtime/client_secrets", client_secrets.create, methods=["POST"]),
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
        Route("/metrics", metrics),
        Route("/favicon.ico", favicon),
        Route(DEMO_CLIENT_SECRETS_PATH, client_secrets.demo, methods=["POST"]),
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
    app.add_middleware(
        AccessLayer,
        router=app.router,
        keys=keys,
        allowed_origins=config.allowed_origins,
        public_demo=config.public_demo,
        dialect=forced(config.dialect),
        metrics=runtime.metrics,
    )
    app.add_middleware(  # added last: the outermost layer, it sees every request
        RequestLimits,
        body_timeout=config.body_timeout,
        budget=budget,
        running=running,
        metrics=runtime.metrics,
    )
    app.state.sessions = sessions  # the shutdown path drains them (realtime/commands/serve.py)
    app.state.calls = calls  # closed by the lifespan
    app.state.requests = running
    app.state.connections = connections
    app.state.body_budget = budget
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
