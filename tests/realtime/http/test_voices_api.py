"""``/v1/audio/voices``: upload (validated, primed, persisted), use over HTTP and the Realtime API, delete."""

from __future__ import annotations

import io
import uuid
import wave
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from realtime.config import ServerConfig
from realtime.speech.voices import default_voice_path
from tests.realtime.conftest import APP_KEYED, SERVER_KEY
from tests.realtime.http.conftest import SdkFactory
from tests.support.server_harness import ServerHandle, start_server
from tests.support.wire_check import RawClient


def _wav(seconds: float, rate: int = 24_000, amplitude: float = 0.3) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (amplitude * 32767 * np.sin(2 * np.pi * 220 * t)).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buffer.getvalue()


def _name() -> str:
    return f"v{uuid.uuid4().hex[:10]}"


async def _upload(
    server: ServerHandle, name: str, data: bytes, index: int = 0, **headers: str
) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.post(
            server.http_url("/v1/audio/voices", index=index),
            data={"name": name},
            files={"file": ("voice.wav", data, "audio/wav")},
            headers=headers,
        )


async def _delete(server: ServerHandle, name: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.delete(server.http_url(f"/v1/audio/voices/{name}"))


async def test_upload_then_speak_over_http_and_realtime_then_delete(
    sdk: SdkFactory, server: ServerHandle
) -> None:
    name = _name()
    shipped = default_voice_path().read_bytes()
    created = await _upload(server, name, shipped)
    assert created.status_code == 201, created.text
    assert created.json()["name"] == name and created.json()["uploaded"] is True
    async with httpx.AsyncClient() as http:
        listed = (await http.get(server.http_url("/v1/audio/voices"))).json()
    assert name in [v["name"] for v in listed["data"]]

    api = sdk(server)
    async with api.audio.speech.with_streaming_response.create(
        model="tts-1", voice=name, input="Speaking in the uploaded voice.", response_format="pcm"
    ) as response:
        assert len(await response.read()) > 0

    client = await RawClient.connect(server.ws_url())
    try:
        await client.send(
            {"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"voice": name}}}}
        )
        updated = (await client.until("session.updated"))[-1]
        assert updated["session"]["audio"]["output"]["voice"] == name
        await client.send({"type": "response.create"})
        done = (await client.until("response.done"))[-1]
        assert done["response"]["status"] == "completed"
    finally:
        await client.close()

    assert server.runtime is not None
    stored = server.runtime.voice_folder.path(name)
    assert stored.is_file()  # persisted in the cache folder
    deleted = await _delete(server, name)
    assert deleted.status_code == 200 and deleted.json() == {
        "object": "voice.deleted",
        "name": name,
        "deleted": True,
    }
    assert not stored.exists()
    with pytest.raises(openai.BadRequestError):
        await api.audio.speech.create(model="tts-1", voice=name, input="gone")


def test_uploads_survive_a_restart(t2w_cache: Path) -> None:
    import asyncio

    config = ServerConfig(backend="synthetic", synthetic_tokens_per_second=2000.0, cache_dir=t2w_cache)
    name = _name()
    first = start_server(config)
    try:
        assert asyncio.run(_upload(first, name, default_voice_path().read_bytes())).status_code == 201
    finally:
        first.stop()
    second = start_server(config)
    try:
        assert second.runtime is not None and name in second.runtime.voices
        assert asyncio.run(_delete(second, name)).status_code == 200
    finally:
        second.stop()


@pytest.mark.parametrize(
    ("name", "data", "status", "code", "param"),
    [
        ("bad name!", _wav(2.0), 400, "invalid_value", "name"),
        ("../escape", _wav(2.0), 400, "invalid_value", "name"),
        ("alloy", _wav(2.0), 400, "invalid_value", "name"),
        ("default", _wav(2.0), 409, "voice_exists", "name"),
        ("ok-name", b"not audio at all", 400, "invalid_value", "file"),
        ("ok-name", _wav(0.3), 400, "invalid_value", "file"),
        ("ok-name", _wav(40.0), 400, "invalid_value", "file"),
        ("ok-name", _wav(2.0, amplitude=0.0), 400, "invalid_value", "file"),
        ("ok-name", _wav(2.0, rate=8_000), 400, "invalid_value", "file"),
        ("ok-name", b"", 400, "invalid_value", "file"),
    ],
    ids=[
        "chars",
        "path",
        "openai-name",
        "exists",
        "not-audio",
        "short",
        "long",
        "silent",
        "low-rate",
        "empty",
    ],
)
async def test_bad_uploads_get_openai_errors(
    server: ServerHandle, name: str, data: bytes, status: int, code: str, param: str
) -> None:
    response = await _upload(server, name, data)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (code, param, "invalid_request_error")


async def test_too_large_upload_is_413(server: ServerHandle) -> None:
    response = await _upload(server, "big", b"\0" * (11 * 1024 * 1024))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


async def test_missing_fields_and_wrong_content_type(server: ServerHandle) -> None:
    async with httpx.AsyncClient() as http:
        no_file = await http.post(
            server.http_url("/v1/audio/voices"), data={"name": "x"}, files={"other": ("a", b"1")}
        )
        as_json = await http.post(server.http_url("/v1/audio/voices"), json={"name": "x"})
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    assert as_json.status_code == 400 and as_json.json()["error"]["code"] == "invalid_value"


async def test_delete_unknown_and_builtin(server: ServerHandle) -> None:
    unknown = await _delete(server, "never-uploaded")
    builtin = await _delete(server, "default")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "voice_not_found"
    assert builtin.status_code == 400 and builtin.json()["error"]["code"] == "voice_not_deletable"


async def test_voice_routes_need_the_key_when_one_is_set(server: ServerHandle) -> None:
    refused = await _upload(server, _name(), _wav(2.0), index=APP_KEYED)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    async with httpx.AsyncClient() as http:
        listed = await http.get(
            server.http_url("/v1/audio/voices", index=APP_KEYED),
            headers={"Authorization": f"Bearer {SERVER_KEY}"},
        )
    assert listed.status_code == 200
