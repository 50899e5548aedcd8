"""How many tokens an HTTP request may generate: the single place where HTTP requests get `SamplingParams`.

A context-fitting rule (max new tokens from the model's context length and the prompt) plugs in here; every
HTTP route calls `speech_sampling` or `chat_sampling` and nothing else sets ``max_new_tokens``.
"""

from __future__ import annotations

from realtime.backends.base import SamplingParams

_DEFAULT = SamplingParams()
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
