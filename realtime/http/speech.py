"""``POST /v1/audio/speech``: OpenAI's text-to-speech endpoint on the streaming reply pipeline.

The request is OpenAI's (``model``, ``input`` <= 4096 characters, ``voice``, ``instructions``,
``response_format``, ``speed``, ``stream_format``). The text becomes a read-aloud generation
(`GenerationInput.read_aloud`: Step-Audio-2's TTS system prompt, the ``instructions`` as style notes, the
text as the user turn) and every decoded chunk is encoded (realtime/codecs.py) and sent the moment it exists:

- ``stream_format: "audio"`` (default): the audio file's bytes with chunked transfer encoding.
- ``stream_format: "sse"``: ``data: {"type": "speech.audio.delta", "audio": "<base64>"}`` events, then
  ``speech.audio.done`` with ``usage`` (``input_tokens``, ``output_tokens``, ``total_tokens``); a failure after
  the first event ends the stream with an ``error`` event in OpenAI's error shape.

Failures before the first byte (unknown voice, backend down) are proper HTTP errors; a failure after it can only
cut the stream short (``audio``) or send an ``error`` event (``sse``). A client that disconnects stops the
reply at once (the LLM request is aborted, pending decode steps are dropped).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import Response

from realtime.backends.base import GenerationInput, PromptTurn
from realtime.codecs import MAX_SPEED, MIN_SPEED, SpeechFormat, StreamEncoder
from realtime.errors import CODE_INVALID_VALUE, CODE_STRING_TOO_LONG, ProtocolViolation
from realtime.http.body import drop_nulls, parse_request, read_json
from realtime.http.errors import as_http_error, error_body, error_response
from realtime.http.realtime_ws import SessionCount
from realtime.http.sampling import fit_to_context, speech_sampling
from realtime.http.streaming import AnswerAdmission, DisconnectAwareStreamingResponse, ReplyStream, sse_data
from realtime.speech.reply import AudioChunk, GenerationDone, PipelineEvent
from realtime.speech.runtime import Runtime
from realtime.wire.session_config import resolve_voice

log = logging.getLogger(__name__)

MAX_INPUT_CHARS = 4096  # OpenAI's limit on ``input``
MAX_INSTRUCTIONS_CHARS = 4096
MAX_BODY_BYTES = 256 * 1024  # two 4096-character fields of 4-byte characters, JSON-escaped, with room
SSE_MEDIA_TYPE = "text/event-stream"


class SpeechRequest(BaseModel):
    """The body of ``POST /v1/audio/speech`` (openai ``SpeechCreateParams``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    input: str
    voice: str
    instructions: str = ""
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(default=1.0, ge=MIN_SPEED, le=MAX_SPEED)
    stream_format: Literal["sse", "audio"] = "audio"

    @field_validator("input")
    @classmethod
    def _input_length(cls, value: str) -> str:
        if not value.strip():
            raise ProtocolViolation(
                CODE_INVALID_VALUE, "Invalid value for 'input': it must not be empty.", "input"
            )
        if len(value) > MAX_INPUT_CHARS:
            raise ProtocolViolation(
                CODE_STRING_TOO_LONG,
                f"Invalid 'input': string too long. Expected a string with maximum length {MAX_INPUT_CHARS}, "
                f"but got a string with length {len(value)} instead.",
                "input",
            )
        return value

    @field_validator("instructions")
    @classmethod
    def _instructions_length(cls, value: str) -> str:
        if len(value) > MAX_INSTRUCTIONS_CHARS:
            raise ProtocolViolation(
                CODE_STRING_TOO_LONG,
                f"Invalid 'instructions': string too long. Expected a string with maximum length "
                f"{MAX_INSTRUCTIONS_CHARS}, but got a string with length {len(value)} instead.",
                "instructions",
            )
        return value


def read_aloud_input(text: str, instructions: str) -> GenerationInput:
    """The generation that reads ``text`` aloud verbatim in the style ``instructions`` describe."""
    return GenerationInput(
        rid=f"speech_{uuid.uuid4().hex}",
        turns=(PromptTurn(role="user", text=text),),
        instructions=instructions,
        speak=True,
        sampling=speech_sampling(text),
        read_aloud=True,
    )


def speech_endpoint(runtime: Runtime, sessions: SessionCount) -> Callable[[Request], Awaitable[Response]]:
    """The ``POST /v1/audio/speech`` handler on ``runtime``; each stream counts against ``sessions``."""

    async def speech(request: Request) -> Response:
        try:
            body = parse_request(SpeechRequest, drop_nulls(await read_json(request, MAX_BODY_BYTES)))
            voice = resolve_voice(body.voice, runtime.voices.accepted_names(), "voice")
            fmt = SpeechFormat(body.response_format)
            encoder = StreamEncoder(fmt, speed=body.speed, sample_rate=runtime.sample_rate)
            generation = await fit_to_context(runtime, read_aloud_input(body.input, body.instructions))
            admission = await AnswerAdmission.take(
                sessions,
                runtime.decoder_streams,
                speaks=True,
                wait_s=runtime.config.decoder_wait_seconds,
                metrics=runtime.metrics,
            )
            stream = ReplyStream(runtime.reply(generation, voice=voice), admission)
        except Exception as exc:
            return error_response(exc)
        try:
            first = await stream.next()  # a failure before any byte is still an HTTP error
        except Exception as exc:
            stream.close()
            return error_response(exc)
        if body.stream_format == "sse":
            return DisconnectAwareStreamingResponse(
                _sse_body(stream, first, encoder),
                send_timeout=runtime.config.send_timeout,
                media_type=SSE_MEDIA_TYPE,
                headers={"Cache-Control": "no-cache"},
            )
        return DisconnectAwareStreamingResponse(
            _audio_body(stream, first, encoder),
            send_timeout=runtime.config.send_timeout,
            media_type=fmt.media_type,
        )

    return speech


async def _events(stream: ReplyStream, first: PipelineEvent | None) -> AsyncIterator[PipelineEvent]:
    event = first
    while event is not None:
        yield event
        event = await stream.next()


async def _audio_body(
    stream: ReplyStream, first: PipelineEvent | None, encoder: StreamEncoder
) -> AsyncIterator[bytes]:
    try:
        async for event in _events(stream, first):
            if isinstance(event, AudioChunk):
                data = await asyncio.to_thread(encoder.encode, event.pcm16)
                if data:
                    yield data
        tail = await asyncio.to_thread(encoder.finish)
        if tail:
            yield tail
    finally:
        stream.close()


async def _sse_body(
    stream: ReplyStream, first: PipelineEvent | None, encoder: StreamEncoder
) -> AsyncIterator[bytes]:
    input_tokens = output_tokens = 0
    try:
        async for event in _events(stream, first):
            if isinstance(event, AudioChunk):
                data = await asyncio.to_thread(encoder.encode, event.pcm16)
                if data:
                    yield _delta(data)
            elif isinstance(event, GenerationDone):
                input_tokens, output_tokens = event.usage.input_tokens, event.usage.output_tokens
        tail = await asyncio.to_thread(encoder.finish)
        if tail:
            yield _delta(tail)
        usage = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        }
        yield sse_data({"type": "speech.audio.done", "usage": usage})
    except Exception as exc:
        yield sse_data({"type": "error", **_error_payload(exc)})
    finally:
        stream.close()


def _delta(data: bytes) -> bytes:
    return sse_data({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")})


def _error_payload(exc: BaseException) -> dict[str, object]:
    error = as_http_error(exc)
    return error_body(error.error_type, error.code, error.message, error.param)
