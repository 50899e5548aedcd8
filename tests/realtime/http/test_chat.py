"""``POST /v1/chat/completions`` through the official openai SDK: spoken and text answers, streamed and not,
audio in and out, ``audio.id`` re-insertion, tools, usage, and errors in OpenAI's shape."""

from __future__ import annotations

import base64
import io
import time
import wave
from typing import Any

import av
import numpy as np
import openai
import pytest

from realtime.backends.base import GenerationInput
from tests.realtime.conftest import APP_KEYED, APP_TOOL_CALL, SERVER_KEY, TOOL_CALL_ARGUMENTS, TOOL_REQUESTS
from tests.realtime.http.conftest import SdkFactory
from tests.support.server_harness import ServerHandle

MODEL = "step-audio-2-mini"
PCM_RATE = 24_000


def _wav_b64(seconds: float = 1.5) -> str:
    t = np.arange(int(seconds * 16_000)) / 16_000
    pcm = (0.3 * 32767 * np.sin(2 * np.pi * 300 * t)).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(pcm.tobytes())
    return base64.b64encode(buffer.getvalue()).decode()


def _audio_message(text: str = "What did I say?") -> dict[str, Any]:
    return {
        "role": "user",
        "content": [
            {"type": "text", "text": text},
            {"type": "input_audio", "input_audio": {"data": _wav_b64(), "format": "wav"}},
        ],
    }


def _samples(data: bytes, fmt: str) -> int:
    if fmt == "pcm16":
        return len(data) // 2
    with av.open(io.BytesIO(data)) as container:
        return sum(frame.samples for frame in container.decode(audio=0))


@pytest.mark.parametrize("fmt", ["wav", "mp3", "pcm16"])
async def test_spoken_answer_with_audio_in(sdk: SdkFactory, server: ServerHandle, fmt: str) -> None:
    completion = await sdk(server).chat.completions.create(
        model=MODEL,
        modalities=["text", "audio"],
        audio={"voice": "alloy", "format": fmt},  # type: ignore[typeddict-item]
        messages=[{"role": "system", "content": "Be brief."}, _audio_message()],  # type: ignore[list-item]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.content is None
    audio = choice.message.audio
    assert audio is not None and audio.id.startswith("audio_") and audio.transcript
    assert audio.expires_at > time.time()
    assert _samples(base64.b64decode(audio.data), fmt) > PCM_RATE // 2
    usage = completion.usage
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert (
        usage.prompt_tokens_details is not None and usage.prompt_tokens_details.audio_tokens == 19
    )  # 1.5 s at 12.5/s
    details = usage.completion_tokens_details
    assert details is not None and details.audio_tokens and details.text_tokens
    assert details.audio_tokens + details.text_tokens == usage.completion_tokens


async def test_streamed_spoken_answer_and_usage(sdk: SdkFactory, server: ServerHandle) -> None:
    stream = await sdk(server).chat.completions.create(
        model=MODEL,
        modalities=["text", "audio"],
        audio={"voice": "alloy", "format": "pcm16"},
        messages=[_audio_message()],  # type: ignore[list-item]
        stream=True,
        stream_options={"include_usage": True},
    )
    transcript, pcm, ids, finish, usage = [], [], set(), None, None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
            continue
        delta: Any = chunk.choices[0].delta
        audio = (delta.model_extra or {}).get("audio")
        if audio:
            ids.add(audio["id"])
            transcript.append(audio.get("transcript", ""))
            pcm.append(base64.b64decode(audio.get("data", "")))
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "stop" and len(ids) == 1 and "".join(transcript)
    assert len(b"".join(pcm)) > PCM_RATE  # > 0.5 s of PCM16
    assert sum(1 for piece in pcm if piece) > 3  # many pieces, as they were decoded
    assert usage is not None and usage.completion_tokens > 0


async def test_the_audio_id_puts_the_answer_back_into_the_next_prompt(
    sdk: SdkFactory, server: ServerHandle
) -> None:
    api = sdk(server)
    kwargs: dict[str, Any] = {
        "model": MODEL,
        "modalities": ["text", "audio"],
        "audio": {"voice": "alloy", "format": "wav"},
    }
    first = await api.chat.completions.create(messages=[{"role": "user", "content": "Hello."}], **kwargs)
    audio = first.choices[0].message.audio
    assert audio is not None
    second = await api.chat.completions.create(
        messages=[
            {"role": "user", "content": "Hello."},
            {"role": "assistant", "audio": {"id": audio.id}},
            {"role": "user", "content": "And again?"},
        ],
        **kwargs,
    )
    usage1, usage2 = first.usage, second.usage
    assert usage1 is not None and usage2 is not None
    # the synthetic backend counts re-inserted output ids in its prompt: the whole first answer is in it
    assert usage2.prompt_tokens >= usage1.prompt_tokens + usage1.completion_tokens - 1
    with pytest.raises(openai.BadRequestError) as caught:
        await api.chat.completions.create(
            messages=[
                {"role": "assistant", "audio": {"id": "audio_unknown"}},
                {"role": "user", "content": "?"},
            ],
            **kwargs,
        )
    assert caught.value.body["param"] == "messages[0].audio.id"  # type: ignore[index]


async def test_text_only_chat_streams_and_not(sdk: SdkFactory, server: ServerHandle) -> None:
    api = sdk(server)
    plain = await api.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say something."}]
    )
    assert plain.choices[0].message.content and plain.choices[0].message.audio is None
    pieces = [
        chunk.choices[0].delta.content or ""
        async for chunk in await api.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Say something."}], stream=True
        )
        if chunk.choices
    ]
    assert "".join(pieces) == plain.choices[0].message.content  # the synthetic backend is deterministic


async def test_length_limit_finishes_with_length(sdk: SdkFactory, server: ServerHandle) -> None:
    completion = await sdk(server).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Talk."}], max_completion_tokens=3
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 3


async def test_tools_reach_the_prompt_and_calls_come_back_in_openai_shape(
    sdk: SdkFactory, server: ServerHandle
) -> None:
    TOOL_REQUESTS.clear()
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    completion = await sdk(server, APP_TOOL_CALL).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=tools
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call: Any = calls[0]
    assert call.function.name == "get_weather" and call.function.arguments == TOOL_CALL_ARGUMENTS
    request: GenerationInput = TOOL_REQUESTS[-1]
    assert request.turns[0].name == "tool_json_schemas" and "get_weather" in (request.turns[0].text or "")
    # the result goes back as a tool turn named after the call
    TOOL_REQUESTS.clear()
    await sdk(server, APP_TOOL_CALL).chat.completions.create(
        model=MODEL,
        tools=tools,
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": call.function.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
    )
    turns = TOOL_REQUESTS[-1].turns
    assert turns[-1].role == "tool" and turns[-1].name == "get_weather" and turns[-1].text == "sunny"
    assert "<tool_call>" in (turns[-2].text or "")


async def test_streamed_tool_call_deltas(sdk: SdkFactory, server: ServerHandle) -> None:
    stream = await sdk(server, APP_TOOL_CALL).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[{"type": "function", "function": {"name": "get_weather"}}],
        stream=True,
    )
    names, arguments, finish = [], [], None
    async for chunk in stream:
        delta = chunk.choices[0].delta
        for call in delta.tool_calls or []:
            if call.function and call.function.name:
                names.append(call.function.name)
            if call.function and call.function.arguments:
                arguments.append(call.function.arguments)
        finish = chunk.choices[0].finish_reason or finish
    assert names == ["get_weather"] and "".join(arguments) == TOOL_CALL_ARGUMENTS and finish == "tool_calls"


def _bad(messages: Any = None, **kwargs: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": messages or [{"role": "user", "content": "hi"}], **kwargs}


@pytest.mark.parametrize(
    ("kwargs", "code", "param"),
    [
        (_bad(modalities=["text", "audio"]), "missing_required_parameter", "audio"),
        (
            _bad(modalities=["text", "audio"], audio={"voice": "nobody", "format": "wav"}),
            "invalid_value",
            "audio.voice",
        ),
        (
            _bad(modalities=["text", "audio"], audio={"voice": "alloy", "format": "ogg"}),
            "invalid_value",
            "audio.format",
        ),
        (_bad(modalities=["video"]), "invalid_value", "modalities[0]"),
        (_bad(n=2), "invalid_value", "n"),
        (_bad(temperature=3), "invalid_value", "temperature"),
        (_bad(messages=[{"role": "wizard", "content": "x"}]), "invalid_value", "messages[0].role"),
        (
            _bad(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "@@@", "format": "wav"}}],
                    }
                ]
            ),
            "invalid_value",
            "messages[0].content[0].input_audio.data",
        ),
        (
            _bad(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "input_audio",
                                "input_audio": {"data": base64.b64encode(b"noise").decode(), "format": "mp3"},
                            }
                        ],
                    }
                ]
            ),
            "invalid_value",
            "messages[0].content[0].input_audio.data",
        ),
        (  # a Responses API part: OpenAI's chat refuses it too (image_url parts are accepted, docs/PROTOCOL.md §3.1)
            _bad(messages=[{"role": "user", "content": [{"type": "input_image", "image_url": "http://x"}]}]),
            "invalid_value",
            "messages[0].content[0].type",
        ),
        (
            _bad(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
            "missing_required_parameter",
            "messages[0].content[0].image_url.url",
        ),
        (
            _bad(messages=[{"role": "tool", "content": "x"}]),
            "missing_required_parameter",
            "messages[0].tool_call_id",
        ),
        (_bad(extra_body={"frobnicate": 1}), "unknown_parameter", "frobnicate"),
        # the same refusal as Realtime's (one tools-prompt builder, tests/realtime/session/test_tools_prompt.py)
        (
            _bad(
                tools=[{"type": "function", "function": {"name": "get_weather"}}],
                tool_choice={"type": "function", "function": {"name": "get_time"}},
            ),
            "invalid_value",
            "tool_choice",
        ),
        # OpenAI parameters the server knows but cannot honour: unsupported, not "unrecognized"
        (_bad(stop=["."]), "unsupported_parameter", "stop"),
        (_bad(logprobs=True, top_logprobs=2), "unsupported_parameter", "logprobs"),
        (_bad(response_format={"type": "json_object"}), "unsupported_parameter", "response_format"),
    ],
)
async def test_bad_requests_get_openai_errors(
    sdk: SdkFactory, server: ServerHandle, kwargs: dict[str, Any], code: str, param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk(server).chat.completions.create(**kwargs)
    body: Any = caught.value.body
    assert (body["code"], body["param"], body["type"]) == (code, param, "invalid_request_error"), body


async def test_logprobs_false_is_the_same_as_absent(sdk: SdkFactory, server: ServerHandle) -> None:
    completion = await sdk(server).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], logprobs=False, max_completion_tokens=8
    )
    assert completion.choices[0].message.content


async def test_key_models_and_unknown_routes(sdk: SdkFactory, server: ServerHandle) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        await sdk(server, APP_KEYED, key="wrong").chat.completions.create(**_bad())
    assert caught.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError):
        await sdk(server, APP_KEYED, key="wrong").models.list()
    models = await sdk(server, APP_KEYED, key=SERVER_KEY).models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert (await sdk(server).models.retrieve(MODEL)).id == MODEL
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk(server).models.retrieve("gpt-nothing")
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as route:
        await sdk(server).embeddings.create(model=MODEL, input="x")
    assert route.value.body["type"] == "invalid_request_error"  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (b"not json", 400, "invalid_json", None),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
            400,
            "invalid_json",
            None,
        ),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}',
            400,
            "invalid_type",
            "stream",
        ),
        (b'{"model": "m", "messages": []}', 400, "invalid_value", "messages"),
        # deeper than json.loads can recurse: a client error, not a RecursionError answered with a 500
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 400, "nesting_too_deep", None),
        (b'{"model": "m", "messages": [[[[' + b"[" * 70 + b"]" * 74 + b"]}", 400, "nesting_too_deep", None),
        (b'{"model": "\xff"}', 400, "invalid_json", None),  # not UTF-8
        (  # an unpaired surrogate escape: valid JSON syntax, but no valid text
            b'{"model": "m", "messages": [{"role": "user", "content": "hi \\ud800"}]}',
            400,
            "invalid_value",
            "messages[0].content",
        ),
        (
            b'{"model": "m", "messages": [{"role": "assistant", "tool_calls": "x"}]}',
            400,
            "invalid_type",
            "messages[0].tool_calls",
        ),
    ],
)
async def test_malformed_bodies(
    server: ServerHandle, body: bytes, status: int, code: str, param: str | None
) -> None:
    import httpx

    async with httpx.AsyncClient() as http:
        response = await http.post(
            server.http_url("/v1/chat/completions"),
            content=body,
            headers={"content-type": "application/json"},
        )
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)


async def test_wrong_method_is_405_in_openai_shape(server: ServerHandle) -> None:
    import httpx

    async with httpx.AsyncClient() as http:
        response = await http.get(server.http_url("/v1/chat/completions"))
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_that_leaves_stops_the_generation(slow_server: ServerHandle, stream: bool) -> None:
    import asyncio

    import httpx

    backend: Any = slow_server.runtime.backend if slow_server.runtime else None
    body = {
        "model": MODEL,
        "stream": stream,
        "modalities": ["text", "audio"],
        "audio": {"voice": "alloy", "format": "pcm16"},
        "messages": [{"role": "user", "content": " ".join(["long"] * 40)}],  # ~20 s at 100 tokens/s
    }

    async def call() -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            await http.post(slow_server.http_url("/v1/chat/completions"), json=body)

    task = asyncio.create_task(call())
    for _ in range(100):  # wait until the generation runs
        if backend._active:
            break
        await asyncio.sleep(0.05)
    assert backend._active
    task.cancel()  # closes the connection mid-answer
    await asyncio.gather(task, return_exceptions=True)
    for _ in range(100):
        if not backend._active:
            break
        await asyncio.sleep(0.05)
    assert not backend._active


async def test_input_audio_is_capped_per_request(
    sdk: SdkFactory, server: ServerHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    from realtime.http import chat_request

    monkeypatch.setattr(chat_request, "MAX_INPUT_AUDIO_SECONDS", 2.0)  # two 1.5 s parts exceed it together
    part = {"type": "input_audio", "input_audio": {"data": _wav_b64(), "format": "wav"}}
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk(server).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": [part]}, {"role": "user", "content": [part]}],  # type: ignore[list-item]
        )
    body: Any = caught.value.body
    assert body["param"] == "messages[1].content[0].input_audio.data" and body["code"] == "invalid_value"
