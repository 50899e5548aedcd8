"""The response pipeline: LLM token stream -> parser -> transcript text and Token2Wav audio chunks.

`Runtime.respond` (realtime/runtime.py) is the public entry point; it returns the async generator built here.
Events come out in the order the model produced them: transcript text a little ahead of the audio that speaks
it, each `AudioChunk` the moment the worker has decoded it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from realtime.backends.base import FinishReason

if TYPE_CHECKING:
    from realtime.runtime import Runtime

__all__ = [
    "AudioChunk",
    "GenerationDone",
    "PipelineEvent",
    "Runtime",
    "SpeechError",
    "TextDelta",
    "TranscriptDelta",
    "Usage",
]


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
    """One decoded Token2Wav chunk: 24 kHz mono PCM16 little-endian, any length (slice it for the wire)."""

    pcm16: bytes


@dataclass(frozen=True)
class Usage:
    """Token and audio accounting of one response.

    Attributes:
        input_tokens: prompt tokens as reported by the backend (0 if it did not say).
        output_tokens: LLM tokens generated (text, audio and specials).
        output_audio_seconds: seconds of PCM yielded as `AudioChunk`s.
    """

    input_tokens: int
    output_tokens: int
    output_audio_seconds: float


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


class SpeechError(Exception):
    """The speech side of a response failed (unknown voice, Token2Wav error, worker closed).

    The response fails with this code and message; the session lives on.

    Attributes:
        code: short machine-readable reason (``unknown_voice``, ``speech_failed``, ``worker_closed``).
        message: human-readable explanation that is safe to show to a client.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def __getattr__(name: str) -> Any:
    # `Runtime` is defined in realtime.runtime (which imports this module); re-export it lazily so
    # `from realtime.pipeline import Runtime` works without an import cycle.
    if name == "Runtime":
        from realtime.runtime import Runtime

        return Runtime
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
