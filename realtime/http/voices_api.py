"""``/v1/audio/voices``: list, upload and delete the voices every endpoint (and the Realtime API) can speak in.

- ``GET /v1/audio/voices`` -> ``{"object": "list", "data": [voice...], "default": name}``; a voice is
  ``{"object": "voice", "name", "default", "uploaded"}``.
- ``POST /v1/audio/voices``, multipart: ``name`` (1-64 letters, digits, ``_``, ``-``) and ``file`` (also
  accepted as ``audio_sample``, vllm-omni's field name): any audio file FFmpeg reads, at most 10 MiB, 1-30 s,
  >= 16 kHz, not silent. The voice is primed on the inference worker (off the event loop), stored in the
  cache folder (it survives a restart) and usable at once by name. Answer 201 with the voice object plus
  ``duration_seconds``. A name already registered is 409 ``voice_exists``; OpenAI's built-in voice names are
  refused (they map to the default voice).
- ``DELETE /v1/audio/voices/{name}`` removes an uploaded voice (404 ``voice_not_found``; built-in and
  configured voices are 400 ``voice_not_deletable``) -> ``{"object": "voice.deleted", "name", "deleted"}``.

At most `MAX_UPLOADED_VOICES` uploaded voices exist at once (429 ``voice_limit_reached`` beyond). Uploads and
deletes are serialised by one lock, so two uploads of one name cannot race.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message

from realtime.errors import CODE_INVALID_VALUE, CODE_MISSING_PARAMETER, ProtocolViolation, SpeechError, quote
from realtime.http.body import read_body, too_large
from realtime.http.errors import HTTPError, error_response
from realtime.speech.runtime import Runtime
from realtime.speech.voice_store import (
    MAX_UPLOAD_BYTES,
    MAX_UPLOADED_VOICES,
    InvalidVoice,
    PreparedVoice,
    check_name,
    prepare_voice,
)
from realtime.speech.voices import OPENAI_VOICE_NAMES

MAX_FORM_BYTES = MAX_UPLOAD_BYTES + 64 * 1024  # the file plus the multipart framing and the name field
FILE_FIELDS = ("file", "audio_sample")
Handler = Callable[[Request], Awaitable[Response]]


class VoicesAPI:
    """The three voice routes on one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._lock = asyncio.Lock()

    def _voice(self, name: str) -> dict[str, Any]:
        return {
            "object": "voice",
            "name": name,
            "default": name == self._runtime.voices.default,
            "uploaded": name in self._runtime.uploaded_voices,
        }

    async def list(self, request: Request) -> Response:
        """``GET /v1/audio/voices``."""
        names = self._runtime.voices.names()
        return JSONResponse(
            {
                "object": "list",
                "data": [self._voice(n) for n in names],
                "default": self._runtime.voices.default,
            }
        )

    async def upload(self, request: Request) -> Response:
        """``POST /v1/audio/voices``."""
        try:
            name, data = await _read_form(request)
            _check_new_name(name)
            prepared = await asyncio.to_thread(_prepare, data)
            async with self._lock:
                if name in self._runtime.voices:
                    raise HTTPError(409, "voice_exists", f"A voice named {name!r} already exists.", "name")
                if len(self._runtime.uploaded_voices) >= MAX_UPLOADED_VOICES:
                    raise HTTPError(
                        429,
                        "voice_limit_reached",
                        f"The server holds its limit of {MAX_UPLOADED_VOICES} uploaded voices; delete one first.",
                    )
                folder = self._runtime.voice_folder
                path = await asyncio.to_thread(folder.save, name, prepared)
                try:
                    await self._runtime.add_voice(name, path)
                except SpeechError:
                    await asyncio.to_thread(folder.delete, name)
                    raise HTTPError(
                        400, "invalid_voice", "The recording could not be used as a voice prompt.", "file"
                    ) from None
        except Exception as exc:
            return error_response(exc)
        body = {**self._voice(name), "duration_seconds": round(prepared.seconds, 3)}
        return JSONResponse(body, status_code=201)

    async def delete(self, request: Request) -> Response:
        """``DELETE /v1/audio/voices/{name}``."""
        name = str(request.path_params["name"])
        try:
            async with self._lock:
                if name not in self._runtime.voices:
                    raise HTTPError(404, "voice_not_found", f"No voice named {quote(name)!r}.", "name")
                if name not in self._runtime.uploaded_voices or name == self._runtime.voices.default:
                    raise HTTPError(
                        400,
                        "voice_not_deletable",
                        f"Voice {name!r} is built in; only uploaded voices can be deleted.",
                        "name",
                    )
                self._runtime.remove_voice(name)
                await asyncio.to_thread(self._runtime.voice_folder.delete, name)
        except Exception as exc:
            return error_response(exc)
        return JSONResponse({"object": "voice.deleted", "name": name, "deleted": True})


def _prepare(data: bytes) -> PreparedVoice:
    try:
        return prepare_voice(data)
    except InvalidVoice as exc:
        raise ProtocolViolation(CODE_INVALID_VALUE, str(exc), "file") from None


def _check_new_name(name: str) -> None:
    try:
        check_name(name)
    except InvalidVoice as exc:
        raise ProtocolViolation(CODE_INVALID_VALUE, str(exc), "name") from None
    if name in OPENAI_VOICE_NAMES:
        raise ProtocolViolation(
            CODE_INVALID_VALUE,
            f"{name!r} is an OpenAI voice name (it selects the default voice); pick another.",
            "name",
        )


async def _read_form(request: Request) -> tuple[str, bytes]:
    """The ``name`` and file bytes of a multipart upload, reading at most `MAX_FORM_BYTES`."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPError(
            400, CODE_INVALID_VALUE, "Upload a voice as multipart/form-data with 'name' and 'file'."
        )
    body = await read_body(request, MAX_FORM_BYTES)
    sent = False

    async def replay() -> Message:  # the form parser reads the body we already hold
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=4, max_part_size=1024)
    except StarletteHTTPException as exc:  # malformed multipart, too many parts, an oversized field
        raise HTTPError(
            400, "invalid_multipart", f"The multipart body could not be read: {exc.detail}"
        ) from None
    try:
        name = form.get("name")
        upload = next((form[f] for f in FILE_FIELDS if isinstance(form.get(f), UploadFile)), None)
        if not isinstance(name, str) or not name:
            raise ProtocolViolation(CODE_MISSING_PARAMETER, "Missing required parameter: 'name'.", "name")
        if not isinstance(upload, UploadFile):
            raise ProtocolViolation(CODE_MISSING_PARAMETER, "Missing required parameter: 'file'.", "file")
        data = await upload.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise too_large(MAX_UPLOAD_BYTES, "voice file")
        if not data:
            raise ProtocolViolation(CODE_INVALID_VALUE, "The uploaded file is empty.", "file")
        return name, data
    finally:
        await form.close()
