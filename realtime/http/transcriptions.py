"""``POST /v1/audio/transcriptions``: OpenAI's transcription endpoint on Step-Audio-2's own ASR.

Multipart form fields (as the ``openai`` SDK sends them): ``file`` (required: any audio FFmpeg reads, decoded
by `realtime.codecs.decode_audio` like every other upload), ``model`` (required, any name: the server's model
transcribes), ``language``, ``prompt``, ``response_format`` (``json`` or ``text``), ``stream`` (``true``:
Server-Sent Events ``transcript.text.delta`` then ``transcript.text.done``), ``temperature`` (accepted; ASR
runs at temperature 0). ``include[]=logprobs``, ``timestamp_granularities[]`` and the ``srt`` / ``vtt`` /
``verbose_json`` / ``diarized_json`` formats are refused with a 400 naming the field.

The audio goes through the same path as the Realtime input transcription (realtime/speech/transcribe.py).
Errors are OpenAI-shaped (realtime/http/errors.py, shared with the other ``/v1`` routes); with an API key
configured, requests must present it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from realtime.audio import PCM_RATE
from realtime.backends.base import BackendError
from realtime.codecs import AudioTooLong, UndecodableAudio, decode_audio
from realtime.errors import CODE_SHUTTING_DOWN, SERVER_ERROR, ResponseFailure, quote
from realtime.http.errors import HTTPError, check_api_key, error_body, error_response
from realtime.http.streaming import (
    ClientGone,
    DisconnectAwareStreamingResponse,
    Holding,
    sse_data,
    until_disconnect,
)
from realtime.speech.runtime import Runtime
from realtime.speech.transcribe import TranscriptionDelta, TranscriptionDone, TranscriptionRequest, transcribe
from realtime.wire.records import new_id
from realtime.wire.session_extensions import MAX_LANGUAGE_CHARS, MAX_TRANSCRIPTION_PROMPT

MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # OpenAI's file limit
MAX_AUDIO_SECONDS = 300  # the transcript token budget covers about this much speech
MAX_FIELD_BYTES = 64 * 1024  # form fields other than the file (a long prompt fits)
FORMATS = ("json", "text")
REFUSED_FORMATS = ("srt", "vtt", "verbose_json", "diarized_json")
HTTP_BAD_GATEWAY = 502


def _refused(message: str, param: str | None, code: str, status: int = 400) -> HTTPError:
    """A client mistake, answered with ``status`` and an ``invalid_request_error`` body."""
    return HTTPError(status, code, message, param)


def transcriptions_endpoint(runtime: Runtime) -> Callable[[Request], Awaitable[Response]]:
    """The route handler for ``runtime`` (register it for POST)."""
    server_key = runtime.config.api_key or None

    async def transcriptions(request: Request) -> Response:
        try:
            check_api_key(request, server_key)
            form = await _read_form(request)
            audio = await _decode(form["file"])
            settings = form["settings"]
        except HTTPError as exc:
            return error_response(exc)
        pcm, rate = audio
        job = TranscriptionRequest(
            new_id("asr"), pcm, rate, language=settings["language"], prompt=settings["prompt"]
        )
        try:
            await _admit(runtime)
        except HTTPError as exc:
            return error_response(exc)
        if settings["stream"]:
            return DisconnectAwareStreamingResponse(
                Holding(_sse(runtime, job), runtime.transcriptions.release),
                send_timeout=runtime.config.send_timeout,
                media_type="text/event-stream",
            )
        try:
            done = await until_disconnect(request, _collect(runtime, job))
        except ClientGone:
            return Response(status_code=499)  # nobody to answer; the transcription was stopped
        except ResponseFailure as exc:
            return error_response(HTTPError(HTTP_BAD_GATEWAY, exc.code, exc.message, None, SERVER_ERROR))
        finally:
            runtime.transcriptions.release()
        if settings["response_format"] == "text":
            return PlainTextResponse(done.transcript)
        return JSONResponse({"text": done.transcript, "usage": _usage(done)})

    return transcriptions


async def _read_form(request: Request) -> dict[str, Any]:
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():  # the body is bounded by its declared length (h11 enforces it)
        raise _refused("A Content-Length header is required for uploads.", None, "length_required", 411)
    if int(length) > MAX_UPLOAD_BYTES + MAX_FIELD_BYTES:
        raise _refused(
            f"Maximum content size limit ({MAX_UPLOAD_BYTES} bytes) exceeded.", "file", "file_too_large", 413
        )
    if "multipart/form-data" not in request.headers.get("content-type", ""):
        raise _refused(
            "Send the audio as multipart/form-data with a 'file' field.", None, "invalid_content_type"
        )
    try:
        form = await request.form(max_files=1, max_fields=32, max_part_size=MAX_FIELD_BYTES)
    except Exception as exc:  # starlette raises its HTTPException / MultiPartException on malformed bodies
        raise _refused(f"The form could not be read: {quote(str(exc))}", None, "invalid_form") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise _refused("Missing required parameter: 'file'.", "file", "missing_required_parameter")
    model = form.get("model")
    if not isinstance(model, str) or not model:
        raise _refused("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    fmt = _text(form, "response_format") or "json"
    if fmt not in FORMATS:
        detail = "is not supported by this server" if fmt in REFUSED_FORMATS else "is not a valid format"
        raise _refused(
            f"Invalid value: '{fmt}' {detail}. Supported values are: 'json' and 'text'.",
            "response_format",
            "unsupported_value",
        )
    if form.getlist("include[]") or form.getlist("include"):
        raise _refused(
            "Invalid value: logprobs are not available: this server's transcription model does not return "
            "log probabilities.",
            "include",
            "unsupported_value",
        )
    if form.getlist("timestamp_granularities[]") or form.getlist("timestamp_granularities"):
        raise _refused(
            "Invalid value: timestamps are not supported by this server.",
            "timestamp_granularities",
            "unsupported_value",
        )
    stream = (_text(form, "stream") or "false").lower()
    if stream not in ("true", "false"):
        raise _refused("Invalid value for 'stream': expected true or false.", "stream", "invalid_value")
    temperature = _text(form, "temperature")
    if temperature is not None:
        try:
            float(temperature)
        except ValueError:
            raise _refused(
                "Invalid type for 'temperature': expected a number.", "temperature", "invalid_type"
            ) from None
    language, prompt = _text(form, "language") or None, _text(form, "prompt") or None
    if language is not None and len(language) > MAX_LANGUAGE_CHARS:
        raise _refused(
            f"Invalid 'language': at most {MAX_LANGUAGE_CHARS} characters.",
            "language",
            "string_above_max_length",
        )
    if prompt is not None and len(prompt) > MAX_TRANSCRIPTION_PROMPT:
        raise _refused(
            f"Invalid 'prompt': at most {MAX_TRANSCRIPTION_PROMPT} characters.",
            "prompt",
            "string_above_max_length",
        )
    settings = {
        "language": language,
        "prompt": prompt,
        "response_format": fmt,
        "stream": stream == "true",
    }
    return {"file": upload, "settings": settings}


async def _admit(runtime: Runtime) -> None:
    """Take one of the server's transcription slots (`Runtime.transcriptions`).

    Raises:
        HTTPError: 503 ``server_shutting_down`` while draining; 503 ``transcription_capacity_reached`` when no
            slot came free within ``--transcription-wait`` (the openai SDKs retry a 503).
    """
    if runtime.draining:
        raise HTTPError(503, CODE_SHUTTING_DOWN, "The server is shutting down.", error_type=SERVER_ERROR)
    try:
        await runtime.transcriptions.acquire()
    except ResponseFailure as exc:
        raise HTTPError(503, exc.code, exc.message, error_type=SERVER_ERROR) from None


def _text(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _refused(f"Invalid type for '{name}': expected a string.", name, "invalid_type")
    return value


async def _decode(upload: UploadFile) -> tuple[bytes, int]:
    data = await upload.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise _refused(
            f"Maximum content size limit ({MAX_UPLOAD_BYTES} bytes) exceeded.", "file", "file_too_large", 413
        )
    if not data:
        raise _refused("The audio file is empty.", "file", "invalid_value")
    try:  # decoding stops at the limit: a small compressed file may hold hours of audio
        pcm, _ = await asyncio.to_thread(decode_audio, data, PCM_RATE, max_seconds=MAX_AUDIO_SECONDS)
    except AudioTooLong:
        raise _refused(
            f"The audio is longer than this server's limit of {MAX_AUDIO_SECONDS} s.",
            "file",
            "audio_too_long",
        ) from None
    except UndecodableAudio:
        raise _refused(
            "The audio file could not be decoded or its format is not supported.", "file", "invalid_value"
        ) from None
    return pcm, PCM_RATE


async def _collect(runtime: Runtime, job: TranscriptionRequest) -> TranscriptionDone:
    async with aclosing(transcribe(runtime.backend, job)) as events:  # closed (LLM request ended) on cancel
        async for event in events:
            if isinstance(event, TranscriptionDone):
                return event
    raise BackendError("stream_cut", "The transcription ended without a result.")


async def _sse(runtime: Runtime, job: TranscriptionRequest) -> AsyncIterator[bytes]:
    try:
        async with aclosing(transcribe(runtime.backend, job)) as events:
            async for event in events:
                if isinstance(event, TranscriptionDelta):
                    yield sse_data({"type": "transcript.text.delta", "delta": event.text})
                else:
                    yield sse_data(
                        {"type": "transcript.text.done", "text": event.transcript, "usage": _usage(event)}
                    )
    except ResponseFailure as exc:
        yield sse_data({"type": "error", **error_body(SERVER_ERROR, exc.code, exc.message)})


def _usage(done: TranscriptionDone) -> dict[str, Any]:
    return {
        "type": "tokens",
        "input_tokens": done.input_tokens,
        "output_tokens": done.output_tokens,
        "total_tokens": done.input_tokens + done.output_tokens,
    }
