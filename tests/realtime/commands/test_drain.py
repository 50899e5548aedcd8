"""SIGTERM drains: new sessions and responses are refused, /health says ``draining``, the active response
finishes, then every session closes with 1001 and the process exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import websockets

pytestmark = pytest.mark.slow
READY = re.compile(r"streamvoice ready: demo page http://127\.0\.0\.1:(\d+)/")
DRAIN_SECONDS = 20  # far longer than the response: the drain ends because the response finished
EXIT_TIMEOUT_S = 60


def _health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as reply:
        data: dict[str, Any] = json.loads(reply.read())
    return data


async def _next(ws: Any, kind: str) -> list[dict[str, Any]]:
    events = []
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 30))
        events.append(event)
        if event["type"] == kind:
            return events


def _start(cache: Path) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "STREAMVOICE_CACHE": str(cache), "STREAMVOICE_LOG_LEVEL": "warning"}
    args = ["serve", "--port", "0", "--synthetic-rate", "100", "--drain-seconds", str(DRAIN_SECONDS)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "realtime", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # the server prints its address once it is ready
        match = READY.search(line)
        if match:
            return proc, int(match.group(1))
    proc.kill()
    raise AssertionError("the server did not start")


async def test_sigterm_lets_the_active_response_finish_then_closes_with_1001(tmp_path: Path) -> None:
    proc, port = await asyncio.to_thread(_start, tmp_path / "cache")
    try:
        assert (await asyncio.to_thread(_health, port))["ready"] == "ready"
        url = f"ws://127.0.0.1:{port}/v1/realtime?model=x"
        async with websockets.connect(url, max_size=None) as ws:
            await _next(ws, "session.created")
            item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "tell me"}]}
            await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
            await ws.send(json.dumps({"type": "response.create"}))
            await _next(ws, "response.output_audio.delta")
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            assert (await asyncio.to_thread(_health, port))["ready"] == "draining"
            async with websockets.connect(url) as late:
                refused = json.loads(await asyncio.wait_for(late.recv(), 10))
                assert refused["error"]["code"] == "server_shutting_down"
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(late.recv(), 10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
            await ws.send(json.dumps({"type": "response.create", "event_id": "evt_late"}))
            events = await _next(ws, "response.done")
            assert events[-1]["response"]["status"] == "completed"  # the active response was not cut
            late_error = next(e for e in events if e["type"] == "error")
            assert late_error["error"]["code"] == "server_shutting_down"  # checked before the active response
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 30)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        rest, _ = await asyncio.to_thread(proc.communicate, timeout=EXIT_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "Traceback" not in rest, rest
