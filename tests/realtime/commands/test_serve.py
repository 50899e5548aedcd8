"""`realtime serve` as a user runs it: embedded default, printed address, /health notice, clean shutdown."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
READY = re.compile(r"streamvoice ready: demo page http://127\.0\.0\.1:(\d+)/")
START_TIMEOUT_S = 240


def _get(port: int, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as reply:
        return reply.status, reply.read()


def test_serve_embedded_default(tmp_path: Path) -> None:
    env = {**os.environ, "STREAMVOICE_CACHE": str(tmp_path / "cache"), "STREAMVOICE_LOG_LEVEL": "info"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "realtime", "serve", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        port = None
        for line in proc.stdout:  # the server prints its address once it is ready
            lines.append(line)
            match = READY.search(line)
            if match:
                port = int(match.group(1))
                break
        assert port is not None, "".join(lines)
        log = "".join(lines)
        assert "server VAD: silero-vad loaded" in log  # before the first session, not in it
        assert "EMBEDDED DEMO" in log and "RANDOM WEIGHTS" in log and "--backend sglang" in log
        status, body = _get(port, "/health")
        health = json.loads(body)
        assert status == 200 and health["embedded_demo"] is True and "notice" in health
        assert health["backend"] == "synthetic" and "default" in health["voices"]
        status, body = _get(port, "/metrics")
        assert status == 200 and b"streamvoice_active_sessions" in body
        assert (tmp_path / "cache" / "token2wav-tiny" / "flow.pt").is_file()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    # uvicorn re-raises the captured Ctrl-C after a graceful shutdown, so the CLI exits 130 like any Ctrl-C
    assert proc.returncode in (0, 130)
    assert "Traceback" not in rest, rest
