"""The server's shared runtime: LLM backend, Token2Wav on its inference worker, voices and metrics.

One `Runtime` serves every session of a process. Build it with ``await Runtime.create(config)`` and close it
with ``await runtime.aclose()``. Sessions call `Runtime.respond` for each response.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from realtime.backends.base import GenerationInput, LLMBackend
from realtime.config import ServerConfig
from realtime.metrics import Metrics
from realtime.pipeline import PipelineEvent
from realtime.voices import VoiceRegistry

PCM_SAMPLE_RATE = 24_000


class Runtime:
    """Backend + speech engine + voices + metrics shared by all sessions.

    Attributes:
        config: the configuration it was built from.
        backend: the LLM token source.
        voices: voice registry (names -> prompt wavs, primed at start-up).
        metrics: Prometheus metrics on a private registry.
        is_embedded_demo: True when the backend is synthetic and/or the decoder has random weights: the
            output is the pipeline working, not a voice model speaking.
        sample_rate: output PCM rate (24 kHz).
    """

    config: ServerConfig
    backend: LLMBackend
    voices: VoiceRegistry[Any]
    metrics: Metrics
    is_embedded_demo: bool
    sample_rate: int = PCM_SAMPLE_RATE

    @classmethod
    async def create(cls, config: ServerConfig) -> Runtime:
        """Build the backend, load Token2Wav on its worker, prime every voice; raise on any failure."""
        raise RuntimeError("interface commit: implementation lands in the next commit")

    def respond(self, request: GenerationInput, *, voice: str) -> AsyncIterator[PipelineEvent]:
        """Stream one response (see realtime.pipeline); closing the iterator aborts it promptly."""
        raise RuntimeError("interface commit: implementation lands in the next commit")

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for ``/health``: backend, decoder, voices, and the embedded-demo notice."""
        raise RuntimeError("interface commit: implementation lands in the next commit")

    async def aclose(self) -> None:
        """Abort in-flight work, stop the worker, close the backend. Idempotent."""
        raise RuntimeError("interface commit: implementation lands in the next commit")
