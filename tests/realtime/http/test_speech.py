"""``POST /v1/audio/speech`` through the official openai SDK against a real server on a socket.

Every format and both stream formats are decoded back (PyAV) and checked for rate and duration; the SSE
events are checked against OpenAI's shapes; streaming is proved by order on the slow server.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from typing import Any

import av
import openai
import pytest

from realtime.codecs import SpeechFormat
from tests.realtime.http.conftest import SdkFactory
from tests.support.server_harness import ServerHandle

TEXT = "Hello there, this sentence is read aloud verbatim."
PCM_RATE = 24_000
# Decoded length may differ from the PCM we produced by the codec's priming/padding (mp3: LAME's 1105-sample
# delay, which a decoder can only trim with a seekable Xing header; aac: 1024 priming) plus one codec frame.
FRAME_TOLERANCE = {"mp3": 1105 + 576, "aac": 1024 + 1024, "opus": 960, "flac": 4608, "wav": 0, "pcm": 0}
ENCODED_RATE = {"opus": 48_000}


def decode(data: bytes, fmt: str) -> tuple[int, int]:
    """(samples, rate) of an encoded stream."""
    if fmt == "pcm":
        return len(data) // 2, PCM_RATE
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(audio=0))
    assert frames, "no audio decoded"
    return sum(f.samples for f in frames), frames[0].sample_rate


async def _speech_sse(sdk: SdkFactory, server: ServerHandle, fmt: str, **extra: Any) -> list[dict[str, Any]]:
    async with sdk(server).audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="alloy",
        input=TEXT,
        response_format=fmt,
        stream_format="sse",
        **extra,  # type: ignore[arg-type]
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        return [
            json.loads(line[len("data: ") :])
            async for line in response.iter_lines()
            if line.startswith("data: ")
        ]


@pytest.mark.parametrize("fmt", [f.value for f in SpeechFormat])
async def test_each_format_decodes_to_the_audio_the_model_made(
    sdk: SdkFactory, server: ServerHandle, fmt: str
) -> None:
    # the SSE stream tells how much PCM the model made (via the pcm twin), the audio stream is the file
    events = await _speech_sse(sdk, server, "pcm")
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert len(pcm) > PCM_RATE  # seconds of speech for this sentence
    async with sdk(server).audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="alloy",
        input=TEXT,
        response_format=fmt,  # type: ignore[arg-type]
    ) as response:
        assert response.headers["content-type"] == SpeechFormat(fmt).media_type
        data = b"".join([chunk async for chunk in response.iter_bytes()])
    samples, rate = decode(data, fmt)
    assert rate == ENCODED_RATE.get(fmt, PCM_RATE)
    expected = len(pcm) // 2 * rate // PCM_RATE  # the synthetic reply is deterministic: same PCM both times
    assert abs(samples - expected) <= FRAME_TOLERANCE[fmt] * rate // PCM_RATE + 1, (samples, expected)


@pytest.mark.parametrize("fmt", ["mp3", "opus", "wav"])
async def test_sse_deltas_concatenate_to_a_decodable_file_and_end_with_usage(
    sdk: SdkFactory, server: ServerHandle, fmt: str
) -> None:
    events = await _speech_sse(sdk, server, fmt)
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "speech.audio.done" and set(kinds[:-1]) == {"speech.audio.delta"}
    assert len(kinds) > 3  # streamed in pieces, not one blob
    usage = events[-1]["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
    data = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    samples, _ = decode(data, fmt)
    assert samples > 0


@pytest.mark.parametrize("speed", [0.5, 2.0])
async def test_speed_changes_the_duration(sdk: SdkFactory, server: ServerHandle, speed: float) -> None:
    async def length(s: float) -> int:
        async with sdk(server).audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=TEXT, response_format="pcm", speed=s
        ) as response:
            return len(b"".join([c async for c in response.iter_bytes()])) // 2

    normal, changed = await length(1.0), await length(speed)
    assert changed == pytest.approx(normal / speed, rel=0.02)


async def test_first_bytes_arrive_long_before_the_reply_is_finished(
    sdk: SdkFactory, slow_server: ServerHandle
) -> None:
    """Streaming by order: on a 100 tokens/s backend the first audio bytes come while the LLM still runs."""
    text = " ".join(["streaming"] * 24)  # 239 characters, 120 TA4 groups: ~6 s of generation at 100 tokens/s
    started = time.perf_counter()
    arrivals: list[float] = []
    async with sdk(slow_server).audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=text, response_format="pcm"
    ) as response:
        async for chunk in response.iter_bytes():
            if chunk:
                arrivals.append(time.perf_counter() - started)
    total = arrivals[-1]
    assert total > 3.0  # the reply really takes seconds
    assert arrivals[0] < total / 3  # the first audio left long before the end
    assert len(arrivals) > 5


async def test_disconnect_aborts_the_generation(sdk: SdkFactory, slow_server: ServerHandle) -> None:
    runtime = slow_server.runtime
    assert runtime is not None
    backend: Any = runtime.backend
    text = " ".join(["cancel"] * 60)
    async with sdk(slow_server).audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=text, response_format="pcm"
    ) as response:
        async for chunk in response.iter_bytes():
            if chunk:
                break  # leave after the first bytes: the context manager closes the connection
    for _ in range(100):  # the server notices within a poll interval, not at the end of the reply
        if not backend._active:
            break
        await asyncio.sleep(0.05)
    assert not backend._active


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "param"),
    [
        ({"voice": "nobody"}, 400, "invalid_value", "voice"),
        ({"input": ""}, 400, "invalid_value", "input"),
        ({"input": "   "}, 400, "invalid_value", "input"),
        ({"input": "x" * 4097}, 400, "string_above_max_length", "input"),
        ({"response_format": "ogg"}, 400, "invalid_value", "response_format"),
        ({"speed": 4.5}, 400, "invalid_value", "speed"),
        ({"speed": 0.1}, 400, "invalid_value", "speed"),
        ({"stream_format": "chunks"}, 400, "invalid_value", "stream_format"),
        ({"extra_body": {"pitch": 3}}, 400, "unknown_parameter", "pitch"),
    ],
)
async def test_bad_requests_get_openai_errors(
    sdk: SdkFactory, server: ServerHandle, kwargs: dict[str, Any], status: int, code: str, param: str
) -> None:
    args: dict[str, Any] = {"model": "tts-1", "voice": "alloy", "input": TEXT, **kwargs}
    with pytest.raises(openai.APIStatusError) as caught:
        await sdk(server).audio.speech.create(**args)
    assert caught.value.status_code == status
    body: Any = caught.value.body
    assert body["code"] == code and body["param"] == param and body["type"] == "invalid_request_error"
    assert body["message"]


async def test_http_streams_share_the_session_cap(sdk: SdkFactory, slow_server: ServerHandle) -> None:
    """App `APP_LIMITED` admits one session: a running speech stream fills it, the next request gets 503.

    On the 100 tokens/s server the first reply takes minutes to generate, so its slot is held for the whole
    test however fast the decoder and the socket buffers absorb what was generated so far.
    """
    from tests.realtime.conftest import APP_LIMITED

    server = slow_server
    async with sdk(server, APP_LIMITED).audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="x" * 4000, response_format="pcm"
    ) as response:
        # Keep the byte iterator referenced: a generator left by `break` is finalized at once, and its
        # ``aclose`` closes the connection, which (rightly) frees the slot before the next request is made.
        chunks = response.iter_bytes()
        while not await anext(chunks):
            pass
        with pytest.raises(openai.InternalServerError) as caught:
            await sdk(server, APP_LIMITED).audio.speech.create(model="tts-1", voice="alloy", input="hi")
        assert caught.value.status_code == 503
        assert caught.value.body["code"] == "session_limit_reached"  # type: ignore[index]
    for _ in range(100):  # the slot comes back once the abandoned stream is closed
        try:
            await sdk(server, APP_LIMITED).audio.speech.create(model="tts-1", voice="alloy", input="hi")
            return
        except openai.InternalServerError:
            await asyncio.sleep(0.05)
    raise AssertionError("the slot was never released")
