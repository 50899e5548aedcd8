"""What one spoken reply yields, and the seam between a response and the speech runtime.

A response (realtime/session/response.py) iterates a `ReplyProducer` (`Runtime.reply`) and gets, in the order
the model produced them, transcript and text deltas, decoded `AudioChunk`s and finally `GenerationDone`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from realtime.backends.base import FinishReason, GenerationInput


@dataclass(frozen=True)
class TranscriptDelta:
    """Spoken transcript text (inside ``<tts_start>`` .. ``<tts_end>``), never a split UTF-8 sequence."""

    text: str


@dataclass(frozen=True)
class TextDelta:
    """Text of a text-only reply, or text the model wrote outside its speech segment."""

    text: str


@dataclass(frozen=True)
class AudioChunk:
    """One decoded Token2Wav chunk: 24 kHz mono PCM16 little-endian, any length (slice it for the wire).

    Attributes:
        pcm16: the samples.
        decoded_at: `time.perf_counter()` on the worker thread when the PCM was ready (for overhead figures).
    """

    pcm16: bytes
    decoded_at: float = field(default=0.0, compare=False)


@dataclass
class UsageMeter:
    """Running token counts of one response, filled while it streams: a cancelled response (which never
    reaches `GenerationDone`) still reports what it consumed and produced. Owned by the caller of
    `stream_reply`; written only from the event loop.

    Attributes:
        input_tokens: prompt tokens, once the backend has reported them.
        output_ids: every output id received so far.
        cached_tokens: prompt tokens the LLM served from its prefix cache, once reported (None: not said).
    """

    input_tokens: int = 0
    output_ids: list[int] = field(default_factory=list)
    cached_tokens: int | None = None


@dataclass(frozen=True)
class Usage:
    """Token and audio accounting of one response.

    Attributes:
        input_tokens: prompt tokens as reported by the backend (0 if it did not say).
        output_tokens: LLM tokens generated (text, audio and specials).
        output_audio_seconds: seconds of PCM yielded as `AudioChunk`s.
        cached_tokens: prompt tokens the LLM served from its prefix (KV) cache; None when it did not say.
    """

    input_tokens: int
    output_tokens: int
    output_audio_seconds: float
    cached_tokens: int | None = None


@dataclass(frozen=True)
class GenerationDone:
    """Last event of a response that was not cancelled.

    Attributes:
        finish: why the LLM stopped (STOP -> completed, LENGTH -> incomplete, ABORT -> cancelled upstream).
        output_ids: every LLM output id of the reply, in order (re-inserted verbatim into later prompts).
        usage: token and audio accounting.
    """

    finish: FinishReason
    output_ids: tuple[int, ...]
    usage: Usage


PipelineEvent = TranscriptDelta | TextDelta | AudioChunk | GenerationDone


class ReplyProducer(Protocol):
    """Starts one reply stream (implemented by `realtime.speech.runtime.Runtime.reply`).

    Every failure surfaces while iterating, as a `realtime.errors.ResponseFailure`; closing the iterator (or
    cancelling the task iterating it) aborts the LLM request and drops the reply's pending decode steps.
    """

    def __call__(
        self, request: GenerationInput, *, voice: str, meter: UsageMeter | None = None
    ) -> AsyncIterator[PipelineEvent]: ...
