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
from realtime.backends.context import ContextLengthExceeded, FitResult, TruncationPolicy, fit

__all__ = [
    "BackendError",
    "ContextLengthExceeded",
    "FinishReason",
    "FitResult",
    "GenerationInput",
    "LLMBackend",
    "PromptTurn",
    "SamplingParams",
    "TextCodec",
    "TokenChunk",
    "TruncationPolicy",
    "fit",
]
