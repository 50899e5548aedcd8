"""The Starlette application: Realtime WebSockets, health, metrics, voices and the browser demo.

`create_app(runtime)` wires a ready `Runtime` (built by the caller, e.g. ``realtime serve``) into routes:

- ``GET /v1/realtime?model=...`` and ``/realtime``: the OpenAI Realtime WebSocket (docs/PROTOCOL.md §1).
- ``POST /v1/audio/speech`` (realtime/http/speech.py), ``POST /v1/chat/completions`` (realtime/http/chat.py),
  ``POST /v1/audio/transcriptions`` (realtime/http/transcriptions.py), ``GET/POST /v1/audio/voices``,
  ``DELETE /v1/audio/voices/{name}`` (realtime/http/voices_api.py), ``GET /v1/models`` (realtime/http/models.py):
  OpenAI's audio HTTP API on the same runtime; every error in OpenAI's shape (realtime/http/errors.py).
- With ``config.api_key`` set, a WebSocket client must present that key (docs/PROTOCOL.md §1.2), and so must
  every ``/v1/`` HTTP route; ``/health``, ``/metrics`` and the demo page stay open.
- ``GET /health``: JSON status and what the server runs (backend, decoder, voices, embedded-demo notice).
- ``GET /metrics``: Prometheus text from the runtime's registry.
- ``GET /v1/voices``: voice names, the default, and whether this is the embedded demo.
- ``POST /v1/audio/transcriptions``: OpenAI's transcription endpoint on the model's ASR (transcriptions.py).
- ``/``: the static ``web_demo/`` page, when the folder exists (source checkouts and editable installs).

Serve it with uvicorn and ``ws_max_size=WS_MAX_FRAME_BYTES`` so oversized client frames reach the protocol
layer (which answers with an ``error`` event) instead of the transport closing the socket.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ExceptionHandler

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
from realtime.http.transcriptions import transcriptions_endpoint
from realtime.http.voices_api import VoicesAPI
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
    voice_api = VoicesAPI(runtime)
    list_models, retrieve_model = model_routes(model, int(time.time()), runtime.config.api_key or None)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": model, "sessions": sessions.open, **runtime.describe()})

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
        Route("/chat/completions", chat_endpoint(runtime, model, sessions), methods=["POST"]),
        Route("/audio/voices", voice_api.list, methods=["GET"]),
        Route("/audio/voices", voice_api.upload, methods=["POST"]),
        Route("/audio/voices/{name}", voice_api.delete, methods=["DELETE"]),
        Route("/models", list_models, methods=["GET"]),
        Route("/models/{model:path}", retrieve_model, methods=["GET"]),
    ]
    routes: list[BaseRoute] = [
        WebSocketRoute("/v1/realtime", realtime_socket),
        WebSocketRoute("/realtime", realtime_socket),
        Route("/health", health),
        Route("/metrics", metrics),
        Mount("/v1", routes=api),
    ]
    if web_demo_dir is not None and web_demo_dir.is_dir():
        routes.append(Mount("/", StaticFiles(directory=web_demo_dir, html=True), name="web_demo"))
    handlers: dict[Any, ExceptionHandler] = {
        HTTPException: handle_starlette_http_exception,
        HTTPError: handle_http_error,
        Exception: handle_unexpected,
    }
    return Starlette(routes=routes, lifespan=_lifespan, exception_handlers=handlers)


@asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    # load the shared VAD model (onnxruntime) in a thread at start-up, not in the first session
    await load_shared_engine()
    yield
