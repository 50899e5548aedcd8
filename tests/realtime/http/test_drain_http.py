"""SIGTERM during HTTP answers: each one finishes or ends in a way its client can detect, within the drain.

A chunked audio stream ends without its terminating chunk (the client sees an incomplete body), a
Server-Sent Events stream ends with an ``error`` event ``server_shutting_down``, an answer not begun yet is a
503; the process exits within ``--drain-seconds`` + 2 s, with no traceback in its log.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.served_process import ServedProcess

pytestmark = pytest.mark.slow

DRAIN_SECONDS = 2.0
EXIT_MARGIN_S = 2.0
LONG_TEXT = "This sentence is long and it is read aloud slowly, word after word. " * 30  # ~2,000 characters


async def _audio_stream(http: httpx.AsyncClient, started: asyncio.Event) -> str:
    body = {"model": "tts-1", "voice": "alloy", "input": LONG_TEXT, "response_format": "pcm"}
    async with http.stream("POST", "/v1/audio/speech", json=body) as response:
        assert response.status_code == 200
        try:
            async for _ in response.aiter_bytes():
                started.set()
        except httpx.RemoteProtocolError as exc:  # the chunked body ended without its last chunk
            return f"cut: {exc}"
    return "complete"


async def _sse_stream(http: httpx.AsyncClient, started: asyncio.Event) -> dict[str, Any]:
    body = {"model": "tts-1", "voice": "alloy", "input": LONG_TEXT, "stream_format": "sse"}
    last: dict[str, Any] = {}
    async with http.stream("POST", "/v1/audio/speech", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                last = json.loads(line[len("data: ") :])
                started.set()
    return last


async def _run(server: ServedProcess) -> tuple[str, dict[str, Any], float]:
    async with httpx.AsyncClient(base_url=server.url(""), timeout=30) as http:
        audio_started, sse_started = asyncio.Event(), asyncio.Event()
        audio = asyncio.create_task(_audio_stream(http, audio_started))
        sse = asyncio.create_task(_sse_stream(http, sse_started))
        await asyncio.wait_for(asyncio.gather(audio_started.wait(), sse_started.wait()), 30)
        server.terminate()
        signalled = time.monotonic()
        audio_end, sse_last = await asyncio.gather(audio, sse)
        code = await asyncio.to_thread(server.wait, DRAIN_SECONDS + EXIT_MARGIN_S + 5)
        exited = time.monotonic() - signalled
    assert code == 0
    return audio_end, sse_last, exited


def test_sigterm_ends_http_streams_detectably_within_the_drain(t2w_cache: Path) -> None:
    args = ["--drain-seconds", str(DRAIN_SECONDS), "--synthetic-rate", "40"]
    with ServedProcess(t2w_cache, args) as server:
        audio_end, sse_last, exited = asyncio.run(_run(server))
    assert audio_end.startswith("cut"), audio_end
    assert sse_last["type"] == "error" and sse_last["error"]["code"] == "server_shutting_down", sse_last
    assert exited < DRAIN_SECONDS + EXIT_MARGIN_S, exited
    assert "Traceback" not in server.log, server.log[-5000:]
    assert "ASGI callable" not in server.log, server.log[-5000:]
