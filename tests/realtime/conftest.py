"""Realtime server fixtures: real uvicorn servers on 127.0.0.1 around real runtimes (see server_harness)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from realtime.backends.base import GenerationInput
from realtime.config import ServerConfig
from realtime.config_groups import WebRTCOptions
from realtime.http.app import create_app
from realtime.speech.voices import default_voice_path
from tests.support.server_harness import (
    ServerHandle,
    configured_app,
    failing_app,
    limited_app,
    scripted_text_app,
    start_server,
)
from tests.support.wire_check import RawClient

# Fast enough to keep the suite short, slow enough that a reply streams over many chunks.
FAST_TOKENS_PER_SECOND = 2000.0
# Like a GPU-served 7B model: a reply takes seconds, so streaming order is observable.
SLOW_TOKENS_PER_SECOND = 100.0
SECOND_VOICE = "second"  # a second registered voice (the shipped wav under another name)
# Apps of the main `server` fixture, by index (one runtime behind all of them).
APP_LIMITED = 1  # admits one session
APP_FAILING = 2  # every response fails after its first audio chunk
APP_KEYED = 3  # requires SERVER_KEY
SERVER_KEY = "sk-test-0123456789"
APP_EXPIRING = 4  # sessions last EXPIRING_SESSION_SECONDS
EXPIRING_SESSION_SECONDS = 1.5
APP_TOOL_CALL = (
    5  # replies end with TOOL_CALL_PIECES after the speech; requests are recorded in TOOL_REQUESTS
)
TOOL_CALL_ARGUMENTS = '{"city": "Paris", "unit": "celsius"}'
TOOL_CALL_PIECES = (
    " Done.\n<tool",
    "_call>func",
    "tion\nget_wea",
    'ther\n{"city": ',
    '"Paris", "unit": "celsius"}\n</tool_',
    "call>",
)
TOOL_REQUESTS: list[GenerationInput] = []
APP_FORCED_BETA = 6  # every connection speaks beta (server flag --dialect beta)
APP_CALL_LIMITS = (
    7  # WebRTC calls: CALL_CONNECT_TIMEOUT_S to connect, MAX_PENDING_CALLS pending, many sessions
)
CALL_CONNECT_TIMEOUT_S = 1.5
MAX_PENDING_CALLS = 8
FAILURE_CODE = "stream_cut"
FAILURE_MESSAGE = "The LLM stream ended before the reply was complete."


def synthetic_config(cache: Path, tokens_per_second: float) -> ServerConfig:
    """The test servers' config: the synthetic backend at ``tokens_per_second``, a second voice."""
    return ServerConfig(
        backend="synthetic",
        synthetic_tokens_per_second=tokens_per_second,
        cache_dir=cache,
        max_audio_delta_ms=100,
        voices=((SECOND_VOICE, default_voice_path()),),
    )


@pytest.fixture(scope="session")
def t2w_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Cache folder for the embedded tiny Token2Wav (generated once per test session)."""
    return tmp_path_factory.mktemp("streamvoice-cache")


@pytest.fixture(scope="session")
def server(t2w_cache: Path) -> Iterator[ServerHandle]:
    """The main test server (fast synthetic backend). App 0 is the normal app; the others: see APP_*."""
    apps = [
        create_app,
        limited_app(1),
        failing_app(FAILURE_CODE, FAILURE_MESSAGE),
        configured_app(api_key=SERVER_KEY),
        configured_app(max_session_seconds=EXPIRING_SESSION_SECONDS),
        scripted_text_app(TOOL_CALL_PIECES, TOOL_REQUESTS),
        configured_app(dialect="beta"),
        configured_app(
            max_sessions=200,
            webrtc=WebRTCOptions(
                call_connect_timeout=CALL_CONNECT_TIMEOUT_S, max_pending_calls=MAX_PENDING_CALLS
            ),
        ),
    ]
    handle = start_server(synthetic_config(t2w_cache, FAST_TOKENS_PER_SECOND), apps)
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def slow_server(t2w_cache: Path) -> Iterator[ServerHandle]:
    """A server whose synthetic backend emits 100 tokens/s: app 0 normal, app `APP_LIMITED` one session."""
    handle = start_server(synthetic_config(t2w_cache, SLOW_TOKENS_PER_SECOND), [create_app, limited_app(1)])
    yield handle
    handle.stop()


@pytest.fixture
async def ga(server: ServerHandle) -> AsyncIterator[RawClient]:
    """A raw GA client connected to the main server."""
    client = await RawClient.connect(server.ws_url())
    yield client
    await client.close()


@pytest.fixture
async def beta(server: ServerHandle) -> AsyncIterator[RawClient]:
    """A raw beta client connected to the main server."""
    client = await RawClient.connect(server.ws_url(), beta=True)
    yield client
    await client.close()
