"""The contract between a response and the LLM that produces its tokens.

A backend receives the conversation as a list of `PromptTurn` (already stripped of Realtime wire details) and
yields `TokenChunk`s holding only the *new* output ids since the previous chunk: cumulative streams are
normalised inside the backend. Every backend owns its prompt format, its tokenizer (`TextCodec`) and the
`VocabLayout` that the parser classifies ids with.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from realtime.audio import PCM_RATE
from realtime.errors import ResponseFailure
from streaming_parser import VocabLayout


class FinishReason(enum.Enum):
    """Why the LLM stopped; maps onto the Realtime response status."""

    STOP = "stop"  # <|EOT|> or a stop id: response completed
    LENGTH = "length"  # max_new_tokens reached: response incomplete (max_output_tokens)
    ABORT = "abort"  # aborted by us (cancel) or by the server


class BackendError(ResponseFailure):
    """A recoverable failure of one generation: the response fails, the session lives on.

    ``code`` is a short machine-readable reason (e.g. ``connection_refused``, ``http_503``, ``timeout``,
    ``stream_cut``, ``server_error``, ``audio_dropped``); ``message`` is safe to show to a client.
    """


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings of one response (Step-Audio-2 defaults).

    ``max_new_tokens`` is the client's cap on the answer; None means "whatever the context leaves". Front doors
    pass requests through `realtime.backends.context.fit`, which always sets it to an int that fits; a backend
    given None uses its context length minus the prompt.
    """

    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int | None = None
    repetition_penalty: float = 1.05


TOOL_SCHEMAS_ROLE = "tool_json_schemas"  # StepFun's prompt turn holding the tool definitions (a system turn)


def answer_budget(sampling: SamplingParams, prompt_tokens: int, context_length: int) -> int:
    """``max_new_tokens`` to send: the client's cap, or what the context leaves when there is none."""
    left = max(context_length - prompt_tokens, 0)
    return left if sampling.max_new_tokens is None else sampling.max_new_tokens


# Step-Audio-2's text-to-speech system prompt, as in StepFun's own TTS example ("read the following text aloud at
# a natural pace"): the text to read is the user turn, the reply a spoken segment that speaks exactly that.
READ_ALOUD_INSTRUCTION = "以自然的语速读出下面的文字。"


@dataclass(frozen=True)
class PromptTurn:
    """One turn of the conversation, in order, as the prompt builder needs it.

    Attributes:
        role: ``system`` (instructions), ``user``, ``assistant`` or ``tool`` (a function result).
        text: the text of the turn, if any (user text, assistant transcript or text reply, tool output).
        audio_pcm16: user speech as little-endian PCM16 mono at ``audio_sample_rate`` Hz, if any.
        audio_sample_rate: sample rate of ``audio_pcm16`` (the Realtime input rate, 24 kHz by default).
        output_ids: raw LLM output ids of an earlier assistant turn (already cut at the truncation point),
            so a spoken answer is re-inserted exactly as generated; ``None`` when only text is known.
        spoken: whether an assistant turn was a spoken (``<tts_start>``) answer.
        name: function name for ``tool`` turns.
    """

    role: Literal["system", "user", "assistant", "tool"]
    text: str | None = None
    audio_pcm16: bytes | None = None
    audio_sample_rate: int = PCM_RATE
    output_ids: tuple[int, ...] | None = None
    spoken: bool = False
    name: str | None = None


@dataclass(frozen=True)
class GenerationInput:
    """Everything a backend needs to start one generation.

    Attributes:
        rid: our request id; the backend sends it to SGLang so the request can be aborted by it.
        turns: the conversation, oldest first, not including the reply being generated.
        instructions: the session instructions (the system turn); empty for none.
        speak: True for a spoken reply (prompt ends with ``<tts_start>``), False for text only.
        sampling: sampling parameters.
        purpose: ``reply`` (an assistant answer) or ``transcription`` (Step-Audio-2 as ASR or as speech
            translator: the instructions are its ASR or translation prompt, the one user turn is the audio,
            the reply is text). Model
            backends build the prompt the same way for both; the synthetic backend answers a transcription
            request with its deterministic stand-in transcript (realtime/backends/synthetic.py).
        read_aloud: text-to-speech: the reply must speak the last user turn's text verbatim, nothing else.
            ``instructions`` then only describes the delivery (style, emotion, pace); the backend's prompt
            layer adds its own read-this-aloud instruction (`READ_ALOUD_INSTRUCTION` for Step-Audio-2).
        affinity_key: the same for every generation of one session (its conversation id): a gateway in front of
            several LLM workers sends equal keys to the same worker, which holds the session's prompt prefix in
            its KV cache. Empty: no preference.
    """

    rid: str
    turns: Sequence[PromptTurn]
    instructions: str = ""
    speak: bool = True
    sampling: SamplingParams = field(default_factory=SamplingParams)
    purpose: Literal["reply", "transcription"] = "reply"
    read_aloud: bool = False
    affinity_key: str = ""


@dataclass(frozen=True)
class TokenChunk:
    """New output ids since the previous chunk (never cumulative), and the finish reason on the last one.

    Attributes:
        ids: newly generated token ids, possibly empty (e.g. a final chunk that only carries the reason).
        finish_reason: set on the last chunk of a generation, None before.
        prompt_tokens: prompt length the LLM reported (for usage and the audio placeholder check).
        completion_tokens: total output tokens so far as reported by the LLM.
        cached_tokens: how many of the prompt tokens the LLM found in its prefix (KV) cache, if it says.
    """

    ids: tuple[int, ...]
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None


@runtime_checkable
class TextCodec(Protocol):
    """Text <-> ids for one model's tokenizer. Implementations are pure and thread-safe."""

    def encode(self, text: str) -> list[int]:
        """Text to ids, without adding special tokens."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Ids to text; special ids render as their token strings."""
        ...


class LLMBackend(Protocol):
    """A source of Step-Audio-2 token streams. One instance serves every session of the server."""

    @property
    def name(self) -> str:
        """Short name shown in /health and logs (``synthetic``, ``sglang``, ``sglang-engine``)."""
        ...

    @property
    def vocab(self) -> VocabLayout:
        """The id layout the parser classifies this backend's output with."""
        ...

    @property
    def text_codec(self) -> TextCodec:
        """Detokenizer for transcript text."""
        ...

    @property
    def context_length(self) -> int:
        """Most tokens (prompt + completion) one request may use; known once `start` has returned."""
        ...

    def count_prompt_tokens(self, request: GenerationInput) -> int:
        """Prompt tokens of ``request`` as the LLM will count them (audio placeholders expanded), without
        sending anything. Pure and thread-safe; cost is one tokenisation of the prompt text."""
        ...

    async def start(self) -> None:
        """Connect and check the LLM is reachable and serves the expected model; raise BackendError if not."""
        ...

    async def check_reachable(self) -> None:
        """Cheap liveness probe of a started backend (for readiness); raise BackendError when it is not."""
        ...

    def generate(self, request: GenerationInput) -> AsyncIterator[TokenChunk]:
        """Stream the reply. Raises BackendError on failure.

        Closing the iterator early (or cancelling the task iterating it), at any point after the first
        ``__anext__``, aborts the request exactly once; callers need not call `abort` as well.
        """
        ...

    async def abort(self, rid: str) -> None:
        """Abort a request by id; idempotent, cheap if it already finished, never raises."""
        ...

    async def aclose(self) -> None:
        """Release connections and workers."""
        ...
