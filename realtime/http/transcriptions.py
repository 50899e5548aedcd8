"""``POST /v1/audio/transcriptions`` and ``POST /v1/audio/translations``: OpenAI's speech-to-text endpoints on
Step-Audio-2's own ASR and speech-translation prompts.

Multipart form fields (as the ``openai`` SDK sends them): ``file`` (required: any audio FFmpeg reads, decoded
by `realtime.codecs.decode_audio` like every other upload), ``model`` (required, any name: the server's model
answers), ``prompt``, ``response_format`` (``json``, ``text``, ``verbose_json``, ``srt``, ``vtt``),
``temperature`` (accepted; the model decodes at 0); transcriptions also take ``language``, ``stream``
(``true`` with ``json`` / ``text``: Server-Sent Events ``transcript.text.delta`` then ``transcript.text.done``;
ignored with the timed formats, as OpenAI's ``whisper-1`` ignores it) and ``timestamp_granularities[]``
(``segment``; ``word`` is refused: the model gives no word timing). ``include[]=logprobs`` and
``diarized_json`` are refused with a 400 naming the field.

``json`` and ``text`` transcribe the whole file in one request. The timed formats segment the audio with the
server VAD and transcribe each segment on its own (realtime/http/transcript_formats.py). Everything goes
through the same model path as the Realtime input transcription (realtime/speech/transcribe.py). Errors are
OpenAI-shaped (realtime/http/errors.py); with an API key configured, requests must present it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import replace
from typing import Any, Literal

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from realtime.audio import PCM_RATE
from realtime.backends.base import BackendError
from realtime.codecs import AudioTooLong, UndecodableAudio, decode_audio
from realtime.errors import CODE_SHUTTING_DOWN, SERVER_ERROR, ResponseFailure, quote
from realtime.http.errors import HTTPError, error_body, error_response
from realtime.http.streaming import (
    ClientGone,
    DisconnectAwareStreamingResponse,
    Holding,
    sse_data,
    until_disconnect,
)
from realtime.http.transcript_formats import TimedText, language_name, srt, verbose_json, vtt
from realtime.session.vad import speech_segments
from realtime.speech.runtime import Runtime
from realtime.speech.transcribe import TranscriptionDelta, TranscriptionDone, TranscriptionRequest, transcribe
from realtime.wire.records import new_id
from realtime.wire.session_extensions import MAX_LANGUAGE_CHARS, MAX_TRANSCRIPTION_PROMPT

MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # OpenAI's file limit
MAX_AUDIO_SECONDS = 300  # the transcript token budget covers about this much speech
MAX_FIELD_BYTES = 64 * 1024  # form fields other than the file (a long prompt fits)
FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
TIMED_FORMATS = frozenset({"srt", "verbose_json", "vtt"})
GRANULARITIES = ("segment",)  # "word" would need word timing the model does not give
SEGMENTS_AT_ONCE = 4  # segment requests of one answer in flight together (the LLM batches them)
HTTP_BAD_GATEWAY = 502
PCM16_BYTES = 2
MS_PER_SECOND = 1000
Task = Literal["transcribe", "translate"]


def _refused(message: str, param: str | None, code: str, status: int = 400) -> HTTPError:
    """A client mistake, answered with ``status`` and an ``invalid_request_error`` body."""
    return HTTPError(status, code, message, param)


def transcriptions_endpoint(runtime: Runtime) -> Callable[[Request], Awaitable[Response]]:
    """The ``/v1/audio/transcriptions`` handler for ``runtime`` (register it for POST)."""
    return _endpoint(runtime, "transcribe")


def translations_endpoint(runtime: Runtime) -> Callable[[Request], Awaitable[Response]]:
    """The ``/v1/audio/translations`` handler for ``runtime``: English text of speech in any language."""
    return _endpoint(runtime, "translate")


def _endpoint(runtime: Runtime, task: Task) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        try:
            form = await _read_form(request, task)
            audio = await _decode(form["file"])
            settings = form["settings"]
        except HTTPError as exc:
            return error_response(exc)
        pcm, rate = audio
        job = TranscriptionRequest(
            new_id("asr"), pcm, rate, language=settings["language"], prompt=settings["prompt"], task=task
        )
        fmt = settings["response_format"]
        try:
            await _admit(runtime)  # one slot per request, its segment requests included
        except HTTPError as exc:
            return error_response(exc)
        if settings["stream"] and fmt not in TIMED_FORMATS:
            return DisconnectAwareStreamingResponse(
                Holding(_sse(runtime, job), runtime.transcriptions.release),
                send_timeout=runtime.config.send_timeout,
                media_type="text/event-stream",
            )
        work = _timed(runtime, job, fmt) if fmt in TIMED_FORMATS else _whole(runtime, job, fmt)
        try:
            return await until_disconnect(request, work)
        except ClientGone:
            return Response(status_code=499)  # nobody to answer; the transcription was stopped
        except ResponseFailure as exc:
            return error_response(HTTPError(HTTP_BAD_GATEWAY, exc.code, exc.message, None, SERVER_ERROR))
        finally:
            runtime.transcriptions.release()

    return handle


async def _whole(runtime: Runtime, job: TranscriptionRequest, fmt: str) -> Response:
    """``json`` / ``text``: the whole file in one request."""
    done = await _collect(runtime, job)
    if fmt == "text":
        return PlainTextResponse(done.transcript)
    return JSONResponse({"text": done.transcript, "usage": _usage(done)})


async def _timed(runtime: Runtime, job: TranscriptionRequest, fmt: str) -> Response:
    """``verbose_json`` / ``srt`` / ``vtt``: the VAD's segments, each transcribed on its own."""
    spans = await speech_segments(job.pcm16)
    segments: list[TimedText | None] = [None] * len(spans)
    gate = asyncio.Semaphore(SEGMENTS_AT_ONCE)

    async def one(index: int, start_ms: int, end_ms: int) -> None:
        bytes_per_ms = job.sample_rate * PCM16_BYTES // MS_PER_SECOND
        piece = replace(
            job, rid=new_id("asr"), pcm16=job.pcm16[start_ms * bytes_per_ms : end_ms * bytes_per_ms]
        )
        async with gate:
            done = await _collect(runtime, piece)
        segments[index] = TimedText(start_ms, end_ms, done.transcript, done.text_ids)

    async with asyncio.TaskGroup() as tasks:  # a failure or a cancel stops every segment request
        for index, (start_ms, end_ms) in enumerate(spans):
            tasks.create_task(one(index, start_ms, end_ms))
    timed = [segment for segment in segments if segment is not None]
    if fmt == "srt":
        return PlainTextResponse(srt(timed))
    if fmt == "vtt":
        return PlainTextResponse(vtt(timed))
    text = " ".join(segment.text for segment in timed)
    language = "english" if job.task == "translate" else language_name(job.language, text)
    return JSONResponse(verbose_json(job.task, language, job.seconds, timed))


async def _read_form(request: Request, task: Task) -> dict[str, Any]:
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
        raise _refused(
            f"Invalid value: '{fmt}'. Supported values are: 'json', 'text', 'srt', 'verbose_json', and 'vtt'.",
            "response_format",
            "invalid_value",
        )
    if form.getlist("include[]") or form.getlist("include"):
        raise _refused(
            "Invalid value: logprobs are not available: this server's transcription model does not return "
            "log probabilities.",
            "include",
            "unsupported_value",
        )
    _check_granularities(form, fmt, task)
    if task == "translate":  # OpenAI's translations take neither: English is the output, nothing streams
        for name in ("stream", "language"):
            if form.get(name) is not None:
                raise _refused(f"Unrecognized request argument supplied: {name}", name, "unknown_parameter")
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


def _check_granularities(form: Any, fmt: str, task: Task) -> None:
    """``timestamp_granularities[]`` as OpenAI documents it: transcriptions only, with ``verbose_json``."""
    granularities = form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")
    if not granularities:
        return
    param = "timestamp_granularities"
    if task == "translate":
        raise _refused(f"Unrecognized request argument supplied: {param}", param, "unknown_parameter")
    if fmt != "verbose_json":
        raise _refused(
            "Invalid value: timestamp_granularities needs response_format 'verbose_json'.",
            param,
            "invalid_value",
        )
    for value in granularities:
        if value == "word":
            raise _refused(
                "Invalid value: 'word'. Word timestamps are not available: this server's model gives no word "
                "timing, only the segments the server finds in the audio. Ask for 'segment'.",
                param,
                "invalid_value",
            )
        if value not in GRANULARITIES:
            raise _refused(
                f"Invalid value: '{value}'. Supported values are: 'word' and 'segment'.",
                param,
                "invalid_value",
            )


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
