"""A real uvicorn server on 127.0.0.1 in a background thread, around a real `Runtime`, for client tests.

The server runs on its own event loop (its own thread), exactly as in production; tests talk to it over
TCP with real clients (the openai SDK, raw websockets, httpx). The runtime is built by `Runtime.create` on
the synthetic backend with the embedded random-weight tiny Token2Wav (real decoder code, generated into a
per-test-session cache folder).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import uvicorn
from starlette.applications import Starlette

from realtime.backends.base import BackendError, GenerationInput
from realtime.config import ServerConfig
from realtime.http.app import create_app, uvicorn_options
from realtime.speech.reply import AudioChunk, GenerationDone, PipelineEvent, TextDelta
from realtime.speech.runtime import Runtime

START_TIMEOUT_S = 300.0  # first start may generate the tiny Token2Wav into the cache


async def build_runtime(config: ServerConfig) -> Runtime:
    """`Runtime.create`: the synthetic backend with the embedded random-weight tiny Token2Wav."""
    return await Runtime.create(config)


@dataclass
class ServerHandle:
    """A running server: its port, runtime and the apps served (one port per app)."""

    config: ServerConfig
    ports: list[int] = field(default_factory=list)
    runtime: Runtime | None = None
    error: BaseException | None = None
    _servers: list[uvicorn.Server] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    @property
    def port(self) -> int:
        """Port of the first app."""
        return self.ports[0]

    def ws_url(self, path: str = "/v1/realtime", index: int = 0) -> str:
        """WebSocket URL of ``path`` on app ``index``."""
        return f"ws://127.0.0.1:{self.ports[index]}{path}"

    def http_url(self, path: str, index: int = 0) -> str:
        """HTTP URL of ``path`` on app ``index``."""
        return f"http://127.0.0.1:{self.ports[index]}{path}"

    def stop(self) -> None:
        """Ask uvicorn to exit, wait for the thread (which closes the runtime)."""
        for server in self._servers:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)


AppFactory = Callable[[Any], Starlette]


class RuntimeView(Runtime):
    """The same runtime seen through changed config fields and, optionally, another ``reply``.

    Lets one session-scoped runtime serve several apps (session cap, API key, duration limit, a failing
    pipeline) without building a runtime per test. It shares the runtime's parts (backend, worker, voices,
    metrics); only ``config`` and ``reply`` differ.
    """

    def __init__(self, runtime: Runtime, reply: Callable[..., Any] | None = None, **changes: Any) -> None:
        self.__dict__.update(vars(runtime))
        self.config = replace(runtime.config, **changes)
        if reply is not None:
            self.reply = reply  # type: ignore[method-assign]


def limited_app(max_sessions: int) -> AppFactory:
    """An app factory whose app admits at most ``max_sessions`` sessions."""
    return configured_app(max_sessions=max_sessions)


def configured_app(**changes: Any) -> AppFactory:
    """An app factory whose app sees the runtime's config with ``changes`` applied."""
    return lambda runtime: create_app(RuntimeView(runtime, **changes))


def failing_app(code: str, message: str) -> AppFactory:
    """An app whose responses fail with ``BackendError(code, message)`` right after their first audio chunk.

    The real pipeline runs (and is closed properly, so its abort path runs too); only the failure is injected.
    """

    def factory(runtime: Any) -> Starlette:
        def reply(request: GenerationInput, *, voice: str, meter: Any = None) -> AsyncIterator[PipelineEvent]:
            return _fail_after_audio(runtime.reply(request, voice=voice, meter=meter), code, message)

        return create_app(RuntimeView(runtime, reply=reply))

    return factory


def scripted_text_app(pieces: Sequence[str], seen: list[GenerationInput]) -> AppFactory:
    """An app whose replies end with ``pieces`` as unspoken text (as a model writes a tool call after
    ``<tts_end>``), delivered as separate text deltas; every generation request is appended to ``seen``.

    The real pipeline produces the rest of the reply (spoken audio and transcript, or text).
    """

    def factory(runtime: Any) -> Starlette:
        def reply(request: GenerationInput, *, voice: str, meter: Any = None) -> AsyncIterator[PipelineEvent]:
            seen.append(request)
            return _append_text(runtime.reply(request, voice=voice, meter=meter), pieces)

        return create_app(RuntimeView(runtime, reply=reply))

    return factory


async def _append_text(
    inner: AsyncIterator[PipelineEvent], pieces: Sequence[str]
) -> AsyncIterator[PipelineEvent]:
    try:
        async for event in inner:
            if isinstance(event, GenerationDone):
                for piece in pieces:
                    yield TextDelta(piece)
            yield event
    finally:
        await inner.aclose()  # type: ignore[attr-defined]


async def _fail_after_audio(
    inner: AsyncIterator[PipelineEvent], code: str, message: str
) -> AsyncIterator[PipelineEvent]:
    try:
        async for event in inner:
            yield event
            if isinstance(event, AudioChunk):
                raise BackendError(code, message)
    finally:
        await inner.aclose()  # type: ignore[attr-defined]


def start_server(config: ServerConfig, apps: list[AppFactory] | None = None) -> ServerHandle:
    """Start uvicorn serving ``apps`` (default: one `create_app`) over one runtime; block until ready."""
    handle = ServerHandle(config)
    factories = apps or [create_app]
    ready = threading.Event()

    async def serve() -> None:
        try:
            runtime = await build_runtime(config)
        except BaseException as exc:
            handle.error = exc
            ready.set()
            raise
        handle.runtime = runtime
        try:
            tasks = []
            for factory in factories:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", 0))
                sock.listen()  # connections queue in the backlog until uvicorn accepts them
                handle.ports.append(sock.getsockname()[1])
                app = factory(runtime)
                options = uvicorn_options(config, getattr(app.state, "connections", None))
                server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **options))
                handle._servers.append(server)
                tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
            ready.set()
            await asyncio.gather(*tasks)
        finally:
            await runtime.aclose()

    def main() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # reported to the test through handle.error
            handle.error = handle.error or exc
            ready.set()

    handle._thread = threading.Thread(target=main, name="uvicorn-test", daemon=True)
    handle._thread.start()
    if not ready.wait(START_TIMEOUT_S):
        raise RuntimeError("test server did not start")
    if handle.error is not None:
        raise RuntimeError("test server failed to start") from handle.error
    return handle
