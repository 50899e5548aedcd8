"""How many tokens an HTTP request may generate: the single place where HTTP requests get `SamplingParams`.

Every HTTP route calls `speech_sampling` or `chat_sampling` (the client's cap) and then `fit_to_context`,
the same context rule as the Realtime path (`realtime.backends.context.fit`): the budget is the smaller of
the cap and what the model's context leaves. HTTP requests carry their whole conversation and have no
``truncation`` setting, so, as OpenAI's chat API does, a prompt that does not fit is refused (400
``context_length_exceeded``) rather than shortened.
"""

from __future__ import annotations

import asyncio

from realtime.backends.base import GenerationInput, SamplingParams
from realtime.backends.context import TruncationPolicy, fit
from realtime.speech.runtime import Runtime

_DEFAULT = SamplingParams()
_NO_TRUNCATION = TruncationPolicy(mode="disabled")
# Reading text aloud: Step-Audio-2 writes one text token per 4 audio tokens (TA4) at 25 audio tokens/s, and a
# reader speaks ~15 characters/s. A UTF-8 byte is an upper bound on text tokens, and 8 tokens per byte leaves
# room for ~32 audio codes per character: more than twice the slowest natural reading pace.
READ_ALOUD_TOKENS_PER_BYTE = 8
READ_ALOUD_MIN_TOKENS = 256
MAX_NEW_TOKENS_CAP = 65_536


def speech_sampling(text: str) -> SamplingParams:
    """Sampling for reading ``text`` aloud: enough new tokens to finish it, never an open-ended budget."""
    budget = READ_ALOUD_MIN_TOKENS + READ_ALOUD_TOKENS_PER_BYTE * len(text.encode("utf-8"))
    return SamplingParams(max_new_tokens=min(budget, MAX_NEW_TOKENS_CAP))


def chat_sampling(
    max_tokens: int | None, temperature: float | None = None, top_p: float | None = None
) -> SamplingParams:
    """Sampling for a chat completion: the client's ``max_completion_tokens`` within the server default."""
    limit = _DEFAULT.max_new_tokens if max_tokens is None else min(max_tokens, MAX_NEW_TOKENS_CAP)
    return SamplingParams(
        temperature=_DEFAULT.temperature if temperature is None else temperature,
        top_p=_DEFAULT.top_p if top_p is None else top_p,
        max_new_tokens=limit,
        repetition_penalty=_DEFAULT.repetition_penalty,
    )


async def fit_to_context(runtime: Runtime, generation: GenerationInput) -> GenerationInput:
    """``generation`` with its answer budget fitted to the model's context (counted off the event loop).

    Raises:
        ContextLengthExceeded: the prompt leaves no room for an answer (an HTTP 400).
    """
    min_answer = runtime.config.min_answer_tokens
    result = await asyncio.to_thread(
        fit, generation, runtime.backend, _NO_TRUNCATION, min_answer_tokens=min_answer
    )
    return result.request
