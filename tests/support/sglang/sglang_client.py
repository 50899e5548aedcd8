"""Small raw-HTTP helpers for talking to the real SGLang server in tests (independent of our backends)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import soundfile as sf

from step_audio2_sglang.audio import SAMPLE_RATE

SSE_PREFIX = "data: "
SSE_DONE = "[DONE]"
REQUEST_TIMEOUT_S = 120.0
TONE_HZ = 440.0
TONE_AMPLITUDE = 0.3


def tone_wav_uri(n_samples: int) -> str:
    """A 16 kHz mono PCM16 WAV of a 440 Hz tone with ``n_samples`` samples, as a ``data:`` URI."""
    t = np.arange(n_samples, dtype=np.float64) / SAMPLE_RATE
    samples = (np.sin(2 * np.pi * TONE_HZ * t) * TONE_AMPLITUDE).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def generate(url: str, body: dict[str, Any]) -> httpx.Response:
    """Non-streaming ``POST /generate``."""
    return httpx.post(f"{url}/generate", json={**body, "stream": False}, timeout=REQUEST_TIMEOUT_S)


def stream_chunks(url: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield the JSON chunks of a streamed ``POST /generate`` until ``[DONE]`` (which must arrive)."""
    with httpx.stream(
        "POST", f"{url}/generate", json={**body, "stream": True}, timeout=REQUEST_TIMEOUT_S
    ) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line:
                continue
            assert line.startswith(SSE_PREFIX), f"not an SSE data line: {line!r}"
            payload = line[len(SSE_PREFIX) :]
            if payload == SSE_DONE:
                return
            yield json.loads(payload)
    raise AssertionError("stream ended without data: [DONE]")


def abort(url: str, rid: str) -> int:
    """``POST /abort_request {rid}``; returns the HTTP status."""
    return httpx.post(f"{url}/abort_request", json={"rid": rid}, timeout=REQUEST_TIMEOUT_S).status_code
