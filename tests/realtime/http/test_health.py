"""Liveness and readiness: ``/health/live`` answers while the process serves, ``/health/ready`` only while this
replica should get new sessions (decoder running, backend answering, not draining, below the session cap)."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import websockets

from realtime.backends.sglang.http import SGLangHTTPBackend, SGLangHTTPConfig
from realtime.http.app import create_app
from tests.realtime.conftest import APP_LIMITED
from tests.support.server_harness import RuntimeView, ServerHandle
from tests.support.tiny_tokenizer import write_tiny_tokenizer


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def _get(app_or_url: object, path: str) -> httpx.Response:
    if isinstance(app_or_url, str):
        async with httpx.AsyncClient() as http:
            return await http.get(app_or_url)
    transport = httpx.ASGITransport(app=app_or_url)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://replica") as http:
        return await http.get(path)


async def test_live_and_ready_on_a_healthy_replica(server: ServerHandle) -> None:
    live = await _get(server.http_url("/health/live"), "")
    ready = await _get(server.http_url("/health/ready"), "")
    assert live.status_code == 200 and live.json() == {"status": "live"}
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready" and ready.json()["reasons"] == []


async def test_a_full_replica_is_live_but_not_ready(server: ServerHandle) -> None:
    async with websockets.connect(server.ws_url(index=APP_LIMITED)) as ws:
        await ws.recv()  # session.created: the one admitted session is open
        ready = await _get(server.http_url("/health/ready", index=APP_LIMITED), "")
        live = await _get(server.http_url("/health/live", index=APP_LIMITED), "")
    assert live.status_code == 200
    assert ready.status_code == 503
    assert ready.json()["reasons"] == ["sessions: at the limit of 1"]


async def test_draining_replica_is_not_ready(server: ServerHandle) -> None:
    assert server.runtime is not None
    view = RuntimeView(server.runtime)
    view.draining = True
    ready = await _get(create_app(view, web_demo_dir=None), "/health/ready")
    live = await _get(create_app(view, web_demo_dir=None), "/health/live")
    health = await _get(create_app(view, web_demo_dir=None), "/health")
    assert live.status_code == 200
    assert ready.status_code == 503 and ready.json()["reasons"] == ["draining: shutting down"]
    assert health.json()["ready"] == "draining"


async def test_unreachable_backend_makes_the_replica_not_ready(server: ServerHandle, tmp_path: Path) -> None:
    assert server.runtime is not None
    url = f"http://127.0.0.1:{_closed_port()}"
    backend = SGLangHTTPBackend(SGLangHTTPConfig(url=url, model_dir=write_tiny_tokenizer(tmp_path)))
    view = RuntimeView(server.runtime)
    view.backend = backend
    try:
        app = create_app(view, web_demo_dir=None)
        ready = await _get(app, "/health/ready")
        health = await _get(app, "/health")
    finally:
        await backend.aclose()
    assert ready.status_code == 503
    (reason,) = ready.json()["reasons"]
    assert reason.startswith("backend: cannot connect to SGLang at " + url), reason
    # /health gives the same answer (it said "ready" while /health/ready was 503)
    assert health.status_code == 200
    assert health.json()["ready"] == "not_ready" and health.json()["not_ready_reasons"] == [reason]
