"""``POST /v1/audio/transcriptions``: OpenAI's transcription endpoint on Step-Audio-2's own ASR.

Multipart form fields (as the ``openai`` SDK sends them): ``file`` (required: WAV, FLAC, OGG, MP3, or any
container PyAV can open when it is installed), ``model`` (required, any name: the server's model
transcribes), ``language``, ``prompt``, ``response_format`` (``json`` or ``text``), ``stream`` (``true``:
Server-Sent Events ``transcript.text.delta`` then ``transcript.text.done``), ``temperature`` (accepted; ASR
runs at temperature 0). ``include[]=logprobs``, ``timestamp_granularities[]`` and the ``srt`` / ``vtt`` /
``verbose_json`` / ``diarized_json`` formats are refused with a 400 naming the field.

The audio goes through the same path as the Realtime input transcription (realtime/speech/transcribe.py).
Errors are OpenAI-shaped: ``{"error": {"message", "type", "param", "code"}}``. With an API key configured,
requests must present it (``Authorization: Bearer <key>``).
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.util import find_spec
from typing import Any

import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from realtime.backends.base import BackendError
from realtime.errors import ResponseFailure
from realtime.http.realtime_ws import key_accepted
from realtime.speech.runtime import Runtime
from realtime.speech.transcribe import TranscriptionDelta, TranscriptionDone, TranscriptionRequest, transcribe
from realtime.wire.records import new_id
from realtime.wire.session_extensions import MAX_LANGUAGE_CHARS, MAX_TRANSCRIPTION_PROMPT

MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # OpenAI's file limit
MAX_AUDIO_SECONDS = 300  # the transcript token budget covers about this much speech
MAX_FIELD_BYTES = 64 * 1024  # form fields other than the file (a long prompt fits)
FORMATS = ("json", "text")
REFUSED_FORMATS = ("srt", "vtt", "verbose_json", "diarized_json")
PCM16_MAX = 32767


class RequestRefused(Exception):
    """A client mistake: answered with ``status`` and an ``invalid_request_error`` body."""

    def __init__(self, message: str, param: str | None, code: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


def error_response(status: int, message: str, error_type: str, param: str | None, code: str) -> JSONResponse:
    """An OpenAI-shaped HTTP error."""
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def transcriptions_endpoint(runtime: Runtime) -> Callable[[Request], Awaitable[Response]]:
    """The route handler for ``runtime`` (register it for POST)."""
    server_key = runtime.config.api_key or None

    async def transcriptions(request: Request) -> Response:
        if not key_accepted(_bearer(request), server_key):
            return error_response(
                401, "Incorrect API key provided.", "invalid_request_error", None, "invalid_api_key"
            )
        try:
            form = await _read_form(request)
            audio = await _decode(form["file"])
            settings = form["settings"]
        except RequestRefused as exc:
            return error_response(exc.status, exc.message, "invalid_request_error", exc.param, exc.code)
        pcm, rate = audio
        job = TranscriptionRequest(
            new_id("asr"), pcm, rate, language=settings["language"], prompt=settings["prompt"]
        )
        if settings["stream"]:
            return StreamingResponse(_sse(runtime, job), media_type="text/event-stream")
        try:
            done = await _collect(runtime, job)
        except ResponseFailure as exc:
            return error_response(502, exc.message, "server_error", None, exc.code)
        if settings["response_format"] == "text":
            return PlainTextResponse(done.transcript)
        return JSONResponse({"text": done.transcript, "usage": _usage(done)})

    return transcriptions


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else request.headers.get("api-key")


async def _read_form(request: Request) -> dict[str, Any]:
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():  # the body is bounded by its declared length (h11 enforces it)
        raise RequestRefused("A Content-Length header is required for uploads.", None, "length_required", 411)
    if int(length) > MAX_UPLOAD_BYTES + MAX_FIELD_BYTES:
        raise RequestRefused(
            f"Maximum content size limit ({MAX_UPLOAD_BYTES} bytes) exceeded.", "file", "file_too_large", 413
        )
    if "multipart/form-data" not in request.headers.get("content-type", ""):
        raise RequestRefused(
            "Send the audio as multipart/form-data with a 'file' field.", None, "invalid_content_type"
        )
    try:
        form = await request.form(max_files=1, max_fields=32, max_part_size=MAX_FIELD_BYTES)
    except Exception as exc:  # starlette raises its HTTPException / MultiPartException on malformed bodies
        raise RequestRefused(f"The form could not be read: {exc}", None, "invalid_form") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise RequestRefused("Missing required parameter: 'file'.", "file", "missing_required_parameter")
    model = form.get("model")
    if not isinstance(model, str) or not model:
        raise RequestRefused("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    fmt = _text(form, "response_format") or "json"
    if fmt not in FORMATS:
        detail = "is not supported by this server" if fmt in REFUSED_FORMATS else "is not a valid format"
        raise RequestRefused(
            f"Invalid value: '{fmt}' {detail}. Supported values are: 'json' and 'text'.",
            "response_format",
            "unsupported_value",
        )
    if form.getlist("include[]") or form.getlist("include"):
        raise RequestRefused(
            "Invalid value: logprobs are not available: this server's transcription model does not return "
            "log probabilities.",
            "include",
            "unsupported_value",
        )
    if form.getlist("timestamp_granularities[]") or form.getlist("timestamp_granularities"):
        raise RequestRefused(
            "Invalid value: timestamps are not supported by this server.",
            "timestamp_granularities",
            "unsupported_value",
        )
    stream = (_text(form, "stream") or "false").lower()
    if stream not in ("true", "false"):
        raise RequestRefused("Invalid value for 'stream': expected true or false.", "stream", "invalid_value")
    temperature = _text(form, "temperature")
    if temperature is not None:
        try:
            float(temperature)
        except ValueError:
            raise RequestRefused(
                "Invalid type for 'temperature': expected a number.", "temperature", "invalid_type"
            ) from None
    language, prompt = _text(form, "language") or None, _text(form, "prompt") or None
    if language is not None and len(language) > MAX_LANGUAGE_CHARS:
        raise RequestRefused(
            f"Invalid 'language': at most {MAX_LANGUAGE_CHARS} characters.",
            "language",
            "string_above_max_length",
        )
    if prompt is not None and len(prompt) > MAX_TRANSCRIPTION_PROMPT:
        raise RequestRefused(
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


def _text(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestRefused(f"Invalid type for '{name}': expected a string.", name, "invalid_type")
    return value


async def _decode(upload: UploadFile) -> tuple[bytes, int]:
    data = await upload.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise RequestRefused(
            f"Maximum content size limit ({MAX_UPLOAD_BYTES} bytes) exceeded.", "file", "file_too_large", 413
        )
    if not data:
        raise RequestRefused("The audio file is empty.", "file", "invalid_value")
    return await asyncio.to_thread(decode_audio, data)


def decode_audio(data: bytes) -> tuple[bytes, int]:
    """An audio file's bytes -> (PCM16 LE mono, sample rate). Blocking: run it in a thread.

    soundfile reads WAV, FLAC, OGG and MP3; PyAV, when installed, reads the rest (M4A, WEBM...).

    Raises:
        RequestRefused: nothing could decode it, or it is longer than `MAX_AUDIO_SECONDS` (checked before the
            samples are decoded: a small compressed file may hold hours of audio).
    """
    import soundfile as sf

    try:
        with sf.SoundFile(io.BytesIO(data)) as probe:
            _check_length(probe.frames, probe.samplerate)
        samples, rate = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)  # [frames, channels]
        mono = samples[:, 0] if samples.shape[1] == 1 else np.round(samples.mean(axis=1)).astype(np.int16)
        return bytes(mono.astype("<i2").tobytes()), int(rate)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        pass
    if find_spec("av") is not None:
        decoded = _decode_with_av(data)
        if decoded is not None:
            return decoded
    raise RequestRefused(
        "The audio file could not be decoded or its format is not supported.", "file", "invalid_value"
    )


def _check_length(frames: int, rate: int) -> None:
    if rate > 0 and frames / rate > MAX_AUDIO_SECONDS:
        raise RequestRefused(
            f"Audio of {frames / rate:.0f} s is longer than this server's limit of {MAX_AUDIO_SECONDS} s.",
            "file",
            "audio_too_long",
        )


def _decode_with_av(data: bytes) -> tuple[bytes, int] | None:
    import av

    pieces: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            rate = int(stream.rate or 0)
            decoded = 0
            for frame in container.decode(stream):
                pieces.append(_mono(frame.to_ndarray(), len(frame.layout.channels), frame.format.is_planar))
                decoded += pieces[-1].size
                _check_length(decoded, rate)
    except (av.FFmpegError, ValueError):
        return None
    if not pieces or rate <= 0:
        return None
    return _to_pcm16(np.concatenate(pieces)), rate


def _mono(array: np.ndarray, channels: int, planar: bool) -> np.ndarray:
    # planar frames are [channels, samples], packed ones [1, samples * channels]; integers scale to [-1, 1)
    scale = float(np.iinfo(array.dtype).max) + 1 if np.issubdtype(array.dtype, np.integer) else 1.0
    samples = array.astype(np.float32) / scale
    shaped = samples.reshape(channels, -1) if planar else samples.reshape(-1, channels).T
    return np.asarray(shaped.mean(axis=0), dtype=np.float32)


def _to_pcm16(samples: np.ndarray) -> bytes:
    clipped = np.clip(np.round(samples * PCM16_MAX), -PCM16_MAX - 1, PCM16_MAX)
    return bytes(clipped.astype("<i2").tobytes())


async def _collect(runtime: Runtime, job: TranscriptionRequest) -> TranscriptionDone:
    async for event in transcribe(runtime.backend, job):
        if isinstance(event, TranscriptionDone):
            return event
    raise BackendError("stream_cut", "The transcription ended without a result.")


async def _sse(runtime: Runtime, job: TranscriptionRequest) -> AsyncIterator[str]:
    try:
        async for event in transcribe(runtime.backend, job):
            if isinstance(event, TranscriptionDelta):
                yield _frame({"type": "transcript.text.delta", "delta": event.text})
            else:
                yield _frame(
                    {"type": "transcript.text.done", "text": event.transcript, "usage": _usage(event)}
                )
    except ResponseFailure as exc:
        error = {"message": exc.message, "type": "server_error", "param": None, "code": exc.code}
        yield _frame({"type": "error", "error": error})


def _frame(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _usage(done: TranscriptionDone) -> dict[str, Any]:
    return {
        "type": "tokens",
        "input_tokens": done.input_tokens,
        "output_tokens": done.output_tokens,
        "total_tokens": done.input_tokens + done.output_tokens,
    }
