"""LLM backends: each turns a conversation into a stream of Step-Audio-2 token ids."""

from __future__ import annotations

from realtime.backends.base import (
    BackendError,
    FinishReason,
    GenerationInput,
    LLMBackend,
    PromptTurn,
    SamplingParams,
    TextCodec,
    TokenChunk,
)

__all__ = [
    "BackendError",
    "FinishReason",
    "GenerationInput",
    "LLMBackend",
    "PromptTurn",
    "SamplingParams",
    "TextCodec",
    "TokenChunk",
]
