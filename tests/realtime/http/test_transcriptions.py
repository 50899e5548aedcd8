"""``POST /v1/audio/transcriptions`` over HTTP: the openai SDK and raw requests, JSON, text, SSE and errors."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
import soundfile as sf
from openai import AsyncOpenAI, BadRequestError

from tests.realtime.conftest import APP_KEYED, SERVER_KEY
from tests.realtime.session.test_transcription import PCM_RATE, expected_transcript, speech_pcm
from tests.support.server_harness import ServerHandle

PATH = "/v1/audio/transcriptions"


def wav(pcm: bytes, rate: int = PCM_RATE) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.frombuffer(pcm, dtype="<i2"), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def sdk(server: ServerHandle) -> AsyncOpenAI:
    return AsyncOpenAI(api_key="unused", base_url=server.http_url("/v1"))


async def test_sdk_json_and_text(server: ServerHandle) -> None:
    pcm = speech_pcm(2.0)
    client = sdk(server)
    result = await client.audio.transcriptions.create(
        file=("speech.wav", wav(pcm), "audio/wav"), model="step-audio-2-mini", language="en", prompt="Step"
    )
    assert result.text == expected_transcript(pcm) != ""
    text = await client.audio.transcriptions.create(
        file=("speech.wav", wav(pcm), "audio/wav"), model="whisper-1", response_format="text"
    )
    assert str(text).strip() == result.text


async def test_sdk_stream(server: ServerHandle) -> None:
    pcm = speech_pcm(3.0)
    stream = await sdk(server).audio.transcriptions.create(
        file=("speech.wav", wav(pcm), "audio/wav"), model="gpt-4o-mini-transcribe", stream=True
    )
    kinds, deltas, done = [], [], None
    async for event in stream:
        kinds.append(event.type)
        if event.type == "transcript.text.delta":
            deltas.append(event.delta)
        else:
            done = event
    assert kinds[-1] == "transcript.text.done" and len(deltas) >= 1 and done is not None
    assert done.text == "".join(deltas).strip() == expected_transcript(pcm)
    assert done.usage is not None and done.usage.type == "tokens"


async def test_stereo_flac_is_mixed_down(server: ServerHandle) -> None:
    pcm = speech_pcm(1.0)
    mono = np.frombuffer(pcm, dtype="<i2")
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([mono, mono], axis=1), PCM_RATE, format="FLAC")
    async with httpx.AsyncClient() as http:
        reply = await http.post(
            server.http_url(PATH), files={"file": ("a.flac", buffer.getvalue())}, data={"model": "m"}
        )
    assert reply.status_code == 200 and reply.json()["text"] == expected_transcript(pcm)


@pytest.mark.parametrize(
    ("data", "files", "param", "code"),
    [
        ({"model": "m"}, None, "file", "missing_required_parameter"),
        ({}, {"file": ("a.wav", b"RIFF")}, "model", "missing_required_parameter"),
        ({"model": "m"}, {"file": ("a.wav", b"not audio at all")}, "file", "invalid_value"),
        ({"model": "m", "response_format": "srt"}, "speech", "response_format", "unsupported_value"),
        ({"model": "m", "include[]": "logprobs"}, "speech", "include", "unsupported_value"),
        ({"model": "m", "stream": "maybe"}, "speech", "stream", "invalid_value"),
        ({"model": "m", "temperature": "hot"}, "speech", "temperature", "invalid_type"),
        ({"model": "m", "language": "x" * 40}, "speech", "language", "string_above_max_length"),
    ],
)
async def test_client_mistakes_get_openai_errors(
    server: ServerHandle, data: dict[str, str], files: object, param: str, code: str
) -> None:
    if files == "speech":
        files = {"file": ("a.wav", wav(speech_pcm(0.5)))}
    async with httpx.AsyncClient() as http:
        if files is None:  # still multipart: a dummy field part
            reply = await http.post(server.http_url(PATH), data=data, files={"x": ("x", b"")})
        else:
            reply = await http.post(server.http_url(PATH), data=data, files=files)  # type: ignore[arg-type]
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["code"] == code
    assert "Traceback" not in error["message"]


async def test_not_multipart_is_refused(server: ServerHandle) -> None:
    async with httpx.AsyncClient() as http:
        reply = await http.post(server.http_url(PATH), json={"model": "m"})
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_content_type"


async def test_sdk_error_is_raised_as_bad_request(server: ServerHandle) -> None:
    with pytest.raises(BadRequestError) as caught:
        await sdk(server).audio.transcriptions.create(
            file=("a.wav", wav(speech_pcm(0.5))), model="m", response_format="vtt"
        )
    assert caught.value.body is not None and json.dumps(caught.value.body).find("response_format") >= 0


async def test_api_key_is_required_when_configured(server: ServerHandle) -> None:
    url = server.http_url(PATH, index=APP_KEYED)
    files = {"file": ("a.wav", wav(speech_pcm(0.5)))}
    async with httpx.AsyncClient() as http:
        refused = await http.post(url, data={"model": "m"}, files=files)
        accepted = await http.post(
            url, data={"model": "m"}, files=files, headers={"Authorization": f"Bearer {SERVER_KEY}"}
        )
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert accepted.status_code == 200


async def test_too_long_audio_is_refused_before_decoding(server: ServerHandle) -> None:
    rate = 8000
    silence = b"\x00\x00" * (rate * 301)  # one second over the limit
    async with httpx.AsyncClient(timeout=60) as http:
        reply = await http.post(
            server.http_url(PATH), data={"model": "m"}, files={"file": ("long.wav", wav(silence, rate))}
        )
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "audio_too_long"


async def test_upload_without_content_length_is_refused(server: ServerHandle) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'--x\r\nContent-Disposition: form-data; name="model"\r\n\r\nm\r\n--x--\r\n'

    async with httpx.AsyncClient() as http:
        reply = await http.post(
            server.http_url(PATH),
            content=body(),
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
    assert reply.status_code == 411 and reply.json()["error"]["code"] == "length_required"
