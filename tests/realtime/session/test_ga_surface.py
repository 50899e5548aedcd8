"""The GA session surface beyond the basics: truncate semantics, the idle timeout, openai 3.x session fields,
prompt variables, tool_choice and parallel_tool_calls."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from realtime.audio import AudioFormat
from realtime.session.response_calls import ResponseCalls
from realtime.session.tool_calls import call_text
from realtime.wire.handshake import Dialect
from realtime.wire.records import ResponseRecord
from realtime.wire.server_events import EventBuilder
from tests.realtime.conftest import APP_TOOL_CALL, TOOL_REQUESTS
from tests.support.server_harness import ServerHandle
from tests.support.wire_check import RawClient

LONG_QUESTION = " ".join(["please tell me a very long story about the sea and the wind"] * 3)
IDLE_TIMEOUT_MS = 300


def _user_text(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


async def test_truncate_then_cancel_gives_no_error(slow_server: ServerHandle) -> None:
    # the Agents SDK's interruption: truncate the playing item, then cancel the response
    client = await RawClient.connect(slow_server.ws_url())
    try:
        await client.send({"type": "conversation.item.create", "item": _user_text(LONG_QUESTION)})
        await client.send({"type": "response.create"})
        first = (await client.until("response.output_audio.delta"))[-1]
        item_id = first["item_id"]
        truncate = {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": 0,
        }
        await client.send(truncate)
        events = await client.until("conversation.item.truncated")
        assert not any(e["type"] == "response.done" for e in events)  # the truncate did not stop it
        await client.send({"type": "response.cancel"})
        events += await client.until("response.done")
        assert not any(e["type"] == "error" for e in events)
        assert events[-1]["response"]["status"] == "cancelled"
        await client.send({"type": "conversation.item.retrieve", "item_id": item_id})
        content = (await client.until("conversation.item.retrieved"))[-1]["item"]["content"][0]
        # what the user heard: no audio, and only the text spoken before the first unheard audio code
        full = next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"]
        assert content.get("audio", "") == "" and len(content["transcript"]) < len(full)
        assert full.startswith(content["transcript"])
    finally:
        await client.close()


async def test_truncate_without_cancel_lets_the_response_finish(ga: RawClient) -> None:
    await ga.send({"type": "conversation.item.create", "item": _user_text("hello there")})
    await ga.send({"type": "response.create"})
    first = (await ga.until("response.output_audio.delta"))[-1]
    await ga.send(
        {
            "type": "conversation.item.truncate",
            "item_id": first["item_id"],
            "content_index": 0,
            "audio_end_ms": 0,
        }
    )
    events = await ga.until("response.done")
    assert not any(e["type"] == "error" for e in events)
    assert events[-1]["response"]["status"] == "completed"
    # the cut holds once the response is final
    await ga.send({"type": "conversation.item.retrieve", "item_id": first["item_id"]})
    content = (await ga.until("conversation.item.retrieved"))[-1]["item"]["content"][0]
    full = next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"]
    assert len(content["transcript"]) < len(full) and content.get("audio", "") == ""


async def test_idle_timeout_commits_and_responds_after_playback(ga: RawClient) -> None:
    vad = {"type": "server_vad", "idle_timeout_ms": IDLE_TIMEOUT_MS}
    await ga.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": vad}}},
        }
    )
    echoed = (await ga.recv())["session"]
    assert echoed["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == IDLE_TIMEOUT_MS
    await ga.send({"type": "conversation.item.create", "item": _user_text("hello")})
    await ga.send({"type": "response.create"})
    first = await ga.until("response.done")
    audio_ms = sum(len(e["delta"]) * 3 // 4 for e in first if e["type"] == "response.output_audio.delta") / 48
    loop = asyncio.get_running_loop()
    done_at = loop.time()
    events = await ga.until("input_audio_buffer.timeout_triggered")
    waited_ms = (loop.time() - done_at) * 1000
    # not before the audio played out (it streamed faster than real time) plus the timeout
    assert waited_ms >= IDLE_TIMEOUT_MS
    assert audio_ms > 0
    triggered = events[-1]
    assert triggered["audio_end_ms"] >= triggered["audio_start_ms"] >= 0
    events = await ga.until("response.done")
    kinds = [e["type"] for e in events]
    committed = events[kinds.index("input_audio_buffer.committed")]
    assert committed["item_id"] == triggered["item_id"]
    assert kinds.index("input_audio_buffer.committed") < kinds.index("response.created")
    assert not any(e["type"] == "error" for e in events)
    # silence again: the timer re-arms after this response too; speech would disarm it
    await ga.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        }
    )
    await ga.until("session.updated")


async def test_openai_3_session_fields_are_accepted_and_echoed(ga: RawClient) -> None:
    session = {
        "type": "realtime",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "low"},
        "tracing": {"workflow_name": "demo"},
        "truncation": "auto",
        "prompt": {"id": "pmpt_1", "version": "2", "variables": {"who": "a pirate"}},
        "include": [],
        "max_output_tokens": 300,
        "tool_choice": "auto",
        "audio": {
            "input": {
                "transcription": {
                    "model": "whisper-1",
                    "languages": ["en"],
                    "delay": "low",
                    "keywords": ["Step"],
                },
                "noise_reduction": {"type": "far_field", "strength": 0.5},
            },
            "output": {"voice": {"id": "second"}},
        },
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "defer_loading": True}],
    }
    await ga.send({"type": "session.update", "session": session})
    echoed = (await ga.recv())["session"]
    assert echoed["parallel_tool_calls"] is False and echoed["reasoning"] == {"effort": "low"}
    assert echoed["prompt"]["variables"] == {"who": "a pirate"} and echoed["include"] == []
    assert echoed["audio"]["input"]["noise_reduction"] == {"type": "far_field", "strength": 0.5}
    assert echoed["audio"]["input"]["transcription"]["languages"] == ["en"]
    assert echoed["audio"]["output"]["voice"] == "second" and echoed["max_output_tokens"] == 300
    await ga.send(
        {"type": "session.update", "session": {"type": "realtime", "reasoning": {"effort": "huge"}}}
    )
    assert (await ga.error("invalid_value"))["param"] == "session.reasoning.effort"
    await ga.send({"type": "session.update", "session": {"type": "realtime", "parallel_tool_calls": "no"}})
    assert (await ga.error("invalid_type"))["param"] == "session.parallel_tool_calls"
    await ga.alive()


async def test_prompt_variables_and_tool_directives_reach_the_instructions(server: ServerHandle) -> None:
    client = await RawClient.connect(server.ws_url(index=APP_TOOL_CALL))
    try:
        session = {
            "type": "realtime",
            "instructions": "You are {{who}}.",
            "prompt": {"id": "pmpt_1", "variables": {"who": {"type": "input_text", "text": "a pirate"}}},
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "output_modalities": ["text"],
        }
        await client.send({"type": "session.update", "session": session})
        await client.until("session.updated")
        TOOL_REQUESTS.clear()
        await client.send({"type": "conversation.item.create", "item": _user_text("weather?")})
        await client.send({"type": "response.create"})
        await client.until("response.done")
        instructions = TOOL_REQUESTS[-1].instructions
        assert instructions.startswith("You are a pirate.")
        assert "calling one of the tools" in instructions and "at most one tool" in instructions
        # an image variable is accepted (OpenAI takes it); the model cannot see it, so it fills in nothing
        picture = {
            "type": "realtime",
            "instructions": "Look: [{{pic}}]",
            "prompt": {
                "id": "p",
                "variables": {
                    "pic": {"type": "input_image", "detail": "auto", "image_url": "https://example.com/a.png"}
                },
            },
        }
        await client.send({"type": "session.update", "session": picture})
        echoed = (await client.recv())["session"]
        assert echoed["prompt"]["variables"]["pic"]["type"] == "input_image"
        await client.send({"type": "response.create"})
        await client.until("response.done")
        assert TOOL_REQUESTS[-1].instructions.startswith("Look: []")
    finally:
        await client.close()


async def test_parallel_tool_calls_false_keeps_the_first_call() -> None:
    calls = ResponseCalls(max_calls=1)
    text = calls.feed("ok " + call_text("a", '{"x": 1}') + call_text("b", '{"y": 2}'))
    text += calls.finish()
    sent: list[BaseModel] = []

    async def put(event: BaseModel) -> None:
        sent.append(event)

    record = ResponseRecord("resp_1", None, ("text",), "v", AudioFormat.PCM16, "inf")
    items = await calls.emit(put, EventBuilder(Dialect.GA), record, None)
    assert [item.name for item in items] == ["a"] and text.strip() == "ok"
    assert [e.model_dump()["type"] for e in sent].count("response.function_call_arguments.done") == 1


@pytest.mark.parametrize("beta", [False, True])
async def test_openai_voice_names_are_echoed_and_spoken_by_the_default_voice(
    server: ServerHandle, beta: bool
) -> None:
    client = await RawClient.connect(server.ws_url(), beta=beta)
    try:
        session: dict[str, Any] = {"voice": "marin"} if beta else {"type": "realtime"}
        if not beta:
            session["audio"] = {"output": {"voice": "marin"}}
        await client.send({"type": "session.update", "session": session})
        echoed = (await client.until("session.updated"))[-1]["session"]
        assert (echoed["voice"] if beta else echoed["audio"]["output"]["voice"]) == "marin"
        await client.send({"type": "response.create", "response": {"instructions": "hi"}})
        events = await client.until("response.done")
        created, done = events[0]["response"], events[-1]["response"]
        for response in (created, done):
            assert (response["voice"] if beta else response["audio"]["output"]["voice"]) == "marin"
        assert any(e["type"].endswith("audio.delta") for e in events)  # spoken: by the default voice
        # another OpenAI name is another voice once audio was produced, as on OpenAI
        other: dict[str, Any] = (
            {"voice": "alloy"} if beta else {"type": "realtime", "audio": {"output": {"voice": "alloy"}}}
        )
        await client.send({"type": "session.update", "session": other})
        await client.error("cannot_update_voice")
    finally:
        await client.close()
