"""The Starlette application: Realtime WebSockets, health, metrics, voices and the browser demo.

`create_app(runtime)` wires a ready `Runtime` (built by the caller, e.g. ``realtime serve``) into routes:

- ``GET /v1/realtime?model=...`` and ``/realtime``: the OpenAI Realtime WebSocket (docs/PROTOCOL.md §1).
- With ``config.api_key`` set, a WebSocket client must present that key (docs/PROTOCOL.md §1.2); HTTP routes stay open.
- ``GET /health``: JSON status and what the server runs (backend, decoder, voices, embedded-demo notice).
- ``GET /health/live``: 200 while the process serves HTTP (restart it when this fails).
- ``GET /health/ready``: 200 when this replica should get new sessions: decoder running, LLM backend
  answering, not draining, below ``max_sessions``; else 503 with the reasons (docs/DEPLOY.md).
- ``GET /metrics``: Prometheus text from the runtime's registry.
- ``GET /v1/voices``: voice names, the default, and whether this is the embedded demo.
- ``/``: the static ``web_demo/`` page, when the folder exists (source checkouts and editable installs).

Serve it with uvicorn and ``ws_max_size=WS_MAX_FRAME_BYTES`` so oversized client frames reach the protocol
layer (which answers with an ``error`` event) instead of the transport closing the socket.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from realtime.http.realtime_ws import SessionCount, realtime_endpoint, served_model_name
from realtime.session.vad import load_shared_engine
from realtime.speech.runtime import Runtime

log = logging.getLogger(__name__)

# Transport limit for client frames: above the protocol's 15 MiB append limit, so a too-large event gets an
# error event (and the session continues) while absurd frames are still cut off by the server (close 1009).
WS_MAX_FRAME_BYTES = 32 * 1024 * 1024
WEB_DEMO_DIR = Path(__file__).resolve().parents[2] / "web_demo"


def create_app(runtime: Runtime, *, web_demo_dir: Path | None = WEB_DEMO_DIR) -> Starlette:
    """Build the ASGI app around a started runtime (the caller owns its lifecycle).

    Args:
        runtime: the server's shared runtime.
        web_demo_dir: static folder served at ``/``; None or a missing folder disables it.
    """
    sessions = SessionCount(runtime.config.max_sessions)
    model = served_model_name(runtime)
    realtime_socket = realtime_endpoint(runtime, sessions)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": model, "sessions": sessions.open, **runtime.describe()})

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

    async def voices(request: Request) -> JSONResponse:
        registry = runtime.voices
        return JSONResponse(
            {
                "voices": list(registry.names()),
                "default": registry.default,
                "embedded_demo": runtime.is_embedded_demo,
            }
        )

    routes: list[BaseRoute] = [
        WebSocketRoute("/v1/realtime", realtime_socket),
        WebSocketRoute("/realtime", realtime_socket),
        Route("/health", health),
        Route("/health/live", live),
        Route("/health/ready", ready),
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
