"""Speech to text with Step-Audio-2 itself: its ASR prompt, the user audio, and the transcript streamed back.

Step-Audio-2 is an ASR model too. Its own examples transcribe with the system prompt `ASR_PROMPT`, a human
turn holding only the audio, and an empty assistant turn the model completes in text (no ``<tts_start>``),
at temperature 0. `transcribe` sends that request to the server's LLM backend, as a request of its own
beside any response, and yields the transcript as text deltas then a `TranscriptionDone` with the usage.
A request with ``task="translate"`` is the same request with the model's speech-translation prompt
(`TRANSLATE_PROMPT`): English text out, whatever language is spoken (``POST /v1/audio/translations``).

Both the Realtime input transcription (realtime/session/transcription.py) and ``POST
/v1/audio/transcriptions`` (realtime/http/transcriptions.py) go through here. Closing the iterator (or
cancelling the task iterating it) aborts the backend request. Both hold one of the server's
`TranscriptionSlots` (``--max-transcriptions``) while they run.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Literal

from realtime.backends.base import (
    BackendError,
    FinishReason,
    GenerationInput,
    LLMBackend,
    PromptTurn,
    SamplingParams,
)
from realtime.errors import ResponseFailure
from realtime.metrics import Metrics
from realtime.speech.detokenizer import IncrementalDetokenizer
from realtime.speech.llm_stream import generation_chunks, parse_ids
from realtime.speech.streams import StreamSlots
from streaming_parser import AudioTokenParser, TextTokens

# Step-Audio-2's ASR instruction ("write down the speech you hear"), as in stepfun-ai/Step-Audio2's examples.
ASR_PROMPT = "请记录下你所听到的语音内容。"
# Its speech-to-text translation instruction ("listen carefully to this speech, then translate its content
# into ..."): stepfun-ai/Step-Audio2's examples and README ask for Chinese this way (...翻译成中文 / 普通话);
# the target here is English (英文), the language OpenAI's translations endpoint writes.
TRANSLATE_PROMPT = "请仔细聆听这段语音，然后将其内容翻译成英文。"
# A transcript needs few tokens: ~4 tokens/s of speech; 1024 covers the longest audio the model accepts.
MAX_TRANSCRIPT_TOKENS = 1024
ASR_SAMPLING = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=MAX_TRANSCRIPT_TOKENS)
PCM16_BYTES = 2
CODE_TRANSCRIPTION_CAPACITY = "transcription_capacity_reached"


class TranscriptionSlots:
    """The server-wide cap on transcriptions running at once, shared by HTTP and Realtime (event loop only).

    Args:
        limit: transcriptions at once (``--max-transcriptions``).
        wait_seconds: how long one waits for a free slot (``--transcription-wait``).
        metrics: where waiting transcriptions are counted (optional).
    """

    def __init__(self, limit: int, wait_seconds: float, metrics: Metrics | None = None) -> None:
        self._slots = StreamSlots(limit)
        self._wait = wait_seconds
        self._metrics = metrics

    @property
    def live(self) -> int:
        """Transcriptions holding a slot now."""
        return self._slots.live

    @property
    def limit(self) -> int:
        """Transcriptions allowed at once."""
        return self._slots.limit

    async def acquire(self) -> None:
        """Take a slot (give it back with `release`), waiting at most ``wait_seconds``.

        Raises:
            ResponseFailure: ``transcription_capacity_reached`` when none came free in time.
        """
        if self._metrics is not None:
            self._metrics.admission_waiting("transcription", 1)
        try:
            taken = await self._slots.acquire(self._wait)
        finally:
            if self._metrics is not None:
                self._metrics.admission_waiting("transcription", -1)
        if not taken:
            raise ResponseFailure(
                CODE_TRANSCRIPTION_CAPACITY,
                f"The server is running its limit of {self._slots.limit} transcriptions and none finished "
                f"within {self._wait:g} s; retry later.",
            )

    def release(self) -> None:
        """Give a slot back."""
        self._slots.release()


@dataclass(frozen=True)
class TranscriptionRequest:
    """One piece of speech to transcribe.

    Attributes:
        rid: request id (the backend's abort handle); unique per request.
        pcm16: little-endian PCM16 mono speech at ``sample_rate``.
        sample_rate: rate of ``pcm16`` in Hz.
        language: ISO-639-1 hint (``en``, ``zh``...), or None to let the model decide.
        prompt: text to guide spelling and style (names, terms), or None.
        task: ``transcribe`` (text in the spoken language) or ``translate`` (English text).
    """

    rid: str
    pcm16: bytes
    sample_rate: int
    language: str | None = None
    prompt: str | None = None
    task: Literal["transcribe", "translate"] = "transcribe"

    @property
    def seconds(self) -> float:
        """Duration of the audio."""
        return len(self.pcm16) / PCM16_BYTES / self.sample_rate


@dataclass(frozen=True)
class TranscriptionDelta:
    """New transcript text (never a split UTF-8 character)."""

    text: str


@dataclass(frozen=True)
class TranscriptionDone:
    """The end of a transcription.

    Attributes:
        transcript: the whole transcript (the deltas joined), stripped of surrounding spaces.
        input_tokens: prompt tokens the backend reported (audio patches included).
        output_tokens: tokens generated.
        audio_seconds: duration of the transcribed audio.
        text_ids: the model's ids of the transcript text (Whisper-style ``tokens`` of a segment).
    """

    transcript: str
    input_tokens: int
    output_tokens: int
    audio_seconds: float
    text_ids: tuple[int, ...] = ()


TranscriptionEvent = TranscriptionDelta | TranscriptionDone


def asr_instructions(
    language: str | None, prompt: str | None, task: Literal["transcribe", "translate"] = "transcribe"
) -> str:
    """The system turn: the ASR (or translation) prompt, then the language hint and the client's prompt.

    The hints are appended as plain lines after the model's own instruction, so without them the request
    is exactly the one Step-Audio-2 was shown in its examples.
    """
    lines = [ASR_PROMPT if task == "transcribe" else TRANSLATE_PROMPT]
    if language:
        lines.append(f"语言：{language}")  # "language:"
    if prompt:
        lines.append(f"提示：{prompt}")  # "hint:"
    return "\n".join(lines)


async def transcribe(
    backend: LLMBackend, request: TranscriptionRequest
) -> AsyncGenerator[TranscriptionEvent, None]:
    """Stream the transcript of ``request.pcm16``.

    Yields:
        `TranscriptionDelta`s in order, then exactly one `TranscriptionDone` (unless cancelled or failed).

    Raises:
        BackendError: the backend failed, cut the stream, or stopped at the token limit.
    """
    generation = GenerationInput(
        rid=request.rid,
        turns=[PromptTurn(role="user", audio_pcm16=request.pcm16, audio_sample_rate=request.sample_rate)],
        instructions=asr_instructions(request.language, request.prompt, request.task),
        speak=False,
        sampling=ASR_SAMPLING,
        purpose="transcription",
    )
    parser = AudioTokenParser(backend.vocab, starts_in_speech=False)
    detok = IncrementalDetokenizer(backend.text_codec)
    pieces: list[str] = []
    text_ids: list[int] = []
    prompt_tokens = output_tokens = 0
    finish: FinishReason | None = None
    async with aclosing(generation_chunks(backend, generation)) as chunks:
        async for chunk in chunks:
            if chunk.prompt_tokens is not None:
                prompt_tokens = chunk.prompt_tokens
            output_tokens = chunk.completion_tokens or output_tokens + len(chunk.ids)
            for event in parse_ids(parser, chunk.ids):
                if isinstance(event, TextTokens):  # audio codes or markers would be a model slip: ignored
                    text_ids.extend(event.ids)
                    text = _lead_trimmed(detok.feed(event.ids), pieces)
                    if text:
                        pieces.append(text)
                        yield TranscriptionDelta(text)
            finish = chunk.finish_reason
    if finish is FinishReason.LENGTH:
        raise BackendError("too_long", "The transcript exceeded the token limit.")
    if finish is FinishReason.ABORT:
        raise BackendError("aborted", "The transcription request was aborted by the LLM server.")
    tail = _lead_trimmed(detok.flush(), pieces)
    if tail:
        pieces.append(tail)
        yield TranscriptionDelta(tail)
    transcript = "".join(pieces).strip()
    yield TranscriptionDone(transcript, prompt_tokens, output_tokens, request.seconds, tuple(text_ids))


def _lead_trimmed(text: str, pieces: list[str]) -> str:
    # the assistant turn starts right after "\n": a leading space of the first word is not transcript
    return text.lstrip() if not pieces else text
