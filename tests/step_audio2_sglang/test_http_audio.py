"""OpenAI's HTTP audio API end to end on real SGLang: openai SDK -> our server -> SGLang (our plugin, CPU, dummy
weights) -> parser -> tiny Token2Wav -> encoded audio. Speech and spoken chat (with audio in) both go through
the plugin model; the random-weight model says nothing meaningful, so the checks are on shapes and audio."""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from openai import AsyncOpenAI

from realtime.config import ServerConfig
from realtime.config_groups import LLMOptions
from tests.step_audio2_sglang.conftest import SGLangServer
from tests.support.server_harness import ServerHandle, start_server

pytestmark = [pytest.mark.sglang, pytest.mark.slow, pytest.mark.timeout(900)]

MODEL = "step-audio-2-mini"
REPLY_TOKENS = 48


@pytest.fixture(scope="module")
def http_server(
    sglang_server: SGLangServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerHandle]:
    """Our server on the ``sglang`` (HTTP) backend pointing at the session's SGLang server."""
    config = ServerConfig(
        backend="sglang",
        llm=LLMOptions(sglang_url=sglang_server.url),
        model_path=str(sglang_server.checkpoint.path),
        cache_dir=Path(tmp_path_factory.mktemp("http-audio-t2w-cache")),
    )
    handle = start_server(config)
    yield handle
    handle.stop()


def _wav_b64(seconds: float = 1.0, rate: int = 16_000) -> str:
    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((0.3 * 32767 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes())
    return base64.b64encode(buffer.getvalue()).decode()


async def test_speech_streams_encoded_audio_from_the_plugin_model(http_server: ServerHandle) -> None:
    async with AsyncOpenAI(api_key="x", base_url=http_server.http_url("/v1"), max_retries=0) as client:
        async with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input="hi", response_format="mp3"
        ) as response:
            assert response.status_code == 200
            data = await response.read()
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(audio=0))
    assert frames and frames[0].sample_rate == 24_000


async def test_spoken_chat_with_audio_in_through_the_plugin_model(http_server: ServerHandle) -> None:
    async with AsyncOpenAI(api_key="x", base_url=http_server.http_url("/v1"), max_retries=0) as client:
        completion = await client.chat.completions.create(
            model=MODEL,
            modalities=["text", "audio"],
            audio={"voice": "alloy", "format": "pcm16"},
            max_completion_tokens=REPLY_TOKENS,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_audio", "input_audio": {"data": _wav_b64(), "format": "wav"}}
                    ],
                }
            ],
        )
    choice = completion.choices[0]
    assert choice.message.audio is not None and choice.message.audio.id.startswith("audio_")
    assert len(base64.b64decode(choice.message.audio.data)) > 0  # the dummy model is biased towards codes
    usage = completion.usage
    assert usage is not None and 0 < usage.completion_tokens <= REPLY_TOKENS
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.audio_tokens
