"""Conversation and response behaviour over a raw socket: cancel, truncate, retrieve, delete, formats, modes."""

from __future__ import annotations

import base64
from typing import Any

from tests.support.server_harness import ServerHandle
from tests.support.wire_check import RawClient

PCM_RATE = 24_000
PUSH_TO_TALK = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
# A long question gets the synthetic backend's longest reply (seconds at 100 tokens/s): room to interrupt.
LONG_QUESTION = " ".join(["please tell me a very long story about the sea and the wind"] * 3)


def _user_text(text: str = "hello", item_id: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }
    if item_id is not None:
        item["id"] = item_id
    return item


async def _spoken_response(client: RawClient) -> list[dict[str, Any]]:
    await client.send({"type": "conversation.item.create", "item": _user_text()})
    await client.until("conversation.item.done")
    await client.send({"type": "response.create"})
    return await client.until("response.done")


def _audio_item_id(events: list[dict[str, Any]]) -> str:
    return str(next(e for e in events if e["type"] == "response.output_item.added")["item"]["id"])


def _audio_ms(events: list[dict[str, Any]], kind: str = "response.output_audio.delta") -> float:
    pcm = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == kind)
    return len(pcm) / 2 / PCM_RATE * 1000


async def test_cancel_mid_response_stops_audio(slow_server: ServerHandle) -> None:
    client = await RawClient.connect(slow_server.ws_url())
    try:
        await client.send({"type": "conversation.item.create", "item": _user_text(LONG_QUESTION)})
        await client.until("conversation.item.done")
        await client.send({"type": "response.create"})
        await client.until("response.output_audio.delta")
        await client.send({"type": "response.cancel"})
        events = await client.until("response.done")
        done = events[-1]["response"]
        assert done["status"] == "cancelled"
        assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
        kinds = [e["type"] for e in events]
        closing = [
            "response.output_audio.done",
            "response.output_audio_transcript.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
        ]
        assert [k for k in kinds if k in closing] == closing
        assert done["output"][0]["status"] == "incomplete"
        # a cancelled response still reports what it consumed and produced up to the cancel
        usage = done["usage"]
        assert usage["output_tokens"] > 0
        assert usage["output_token_details"]["audio_tokens"] > 0
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        # nothing of that response arrives after response.done: the next event answers our next request
        await client.alive()
        assert not any(e["type"].startswith("response.") for e in client.received[-1:])
    finally:
        await client.close()


async def test_first_audio_arrives_while_the_backend_is_still_generating(slow_server: ServerHandle) -> None:
    client = await RawClient.connect(slow_server.ws_url())
    try:
        await client.send({"type": "conversation.item.create", "item": _user_text(LONG_QUESTION)})
        await client.until("conversation.item.done")
        await client.send({"type": "response.create"})
        await client.until("response.output_audio.delta")
        # the reply is still being generated: more transcript text follows the first audio
        later = await client.until("response.output_audio_transcript.delta")
        assert all(e["type"] != "response.done" for e in later)
        await client.send({"type": "response.cancel"})
        await client.until("response.done")
    finally:
        await client.close()


async def test_cancel_by_response_id(slow_server: ServerHandle) -> None:
    client = await RawClient.connect(slow_server.ws_url())
    try:
        await client.send({"type": "conversation.item.create", "item": _user_text(LONG_QUESTION)})
        await client.send({"type": "response.create"})
        created = (await client.until("response.created"))[-1]["response"]["id"]
        await client.send({"type": "response.cancel", "response_id": created})
        done = (await client.until("response.done"))[-1]["response"]
        assert done["id"] == created and done["status"] == "cancelled"
    finally:
        await client.close()


async def test_retrieve_returns_the_item_with_its_audio(ga: RawClient) -> None:
    events = await _spoken_response(ga)
    item_id = _audio_item_id(events)
    await ga.send({"type": "conversation.item.retrieve", "item_id": item_id})
    item = (await ga.recv())["item"]
    assert item["id"] == item_id and item["role"] == "assistant" and item["status"] == "completed"
    content = item["content"][0]
    assert content["type"] == "output_audio"
    transcript = next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"]
    assert content["transcript"] == transcript
    sent = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    assert base64.b64decode(content["audio"]) == sent


async def test_truncate_cuts_audio_and_transcript(ga: RawClient) -> None:
    events = await _spoken_response(ga)
    item_id = _audio_item_id(events)
    sent_ms = _audio_ms(events)
    assert sent_ms > 200
    await ga.send(
        {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 200}
    )
    truncated = await ga.recv()
    assert truncated == {
        **truncated,
        "type": "conversation.item.truncated",
        "item_id": item_id,
        "audio_end_ms": 200,
    }
    await ga.send({"type": "conversation.item.retrieve", "item_id": item_id})
    content = (await ga.recv())["item"]["content"][0]
    full = next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"]
    assert len(content["transcript"]) < len(full) and full.startswith(content["transcript"])
    assert len(base64.b64decode(content["audio"])) == 200 * PCM_RATE // 1000 * 2
    # beyond what was sent: error, nothing changes
    await ga.send(
        {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 10**7}
    )
    assert (await ga.error(None))["message"].startswith("Audio content of ")  # OpenAI: code and param null


async def test_truncate_refuses_user_items(ga: RawClient) -> None:
    await ga.send({"type": "conversation.item.create", "item": _user_text(item_id="item_user1")})
    await ga.until("conversation.item.done")
    await ga.send(
        {"type": "conversation.item.truncate", "item_id": "item_user1", "content_index": 0, "audio_end_ms": 0}
    )
    await ga.error("invalid_value")


async def test_delete_and_previous_item_id(ga: RawClient) -> None:
    await ga.send({"type": "conversation.item.create", "item": _user_text("a", "item_a")})
    added = await ga.recv()
    assert added["type"] == "conversation.item.added" and added["previous_item_id"] is None
    await ga.recv()
    await ga.send(
        {"type": "conversation.item.create", "item": _user_text("b", "item_b"), "previous_item_id": "root"}
    )
    added = await ga.recv()
    assert added["item"]["id"] == "item_b" and added["previous_item_id"] is None
    await ga.recv()
    await ga.send(
        {"type": "conversation.item.create", "item": _user_text("c", "item_c"), "previous_item_id": "item_b"}
    )
    added = await ga.recv()
    assert added["previous_item_id"] == "item_b"
    await ga.recv()
    await ga.send({"type": "conversation.item.delete", "item_id": "item_b", "event_id": "evt_del"})
    assert await ga.recv() == {**ga.received[-1], "type": "conversation.item.deleted", "item_id": "item_b"}
    await ga.send({"type": "conversation.item.retrieve", "item_id": "item_b"})
    await ga.error("item_retrieve_invalid_item_id")
    await ga.send({"type": "conversation.item.create", "item": _user_text("d", "item_a")})
    await ga.error("item_create_duplicate_item_id")  # ids are unique


async def test_text_only_response(ga: RawClient) -> None:
    await ga.send({"type": "conversation.item.create", "item": _user_text()})
    await ga.until("conversation.item.done")
    await ga.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    events = await ga.until("response.done")
    kinds = [e["type"] for e in events]
    assert "response.output_text.delta" in kinds and "response.output_text.done" in kinds
    assert not any("audio" in k for k in kinds)
    part = next(e for e in events if e["type"] == "response.content_part.added")["part"]
    assert part == {"type": "text", "text": ""}
    text = next(e for e in events if e["type"] == "response.output_text.done")["text"]
    assert text == "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") and text
    done = events[-1]["response"]
    assert done["output_modalities"] == ["text"]
    assert done["output"][0]["content"][0] == {"type": "output_text", "text": text}


async def test_out_of_band_response(ga: RawClient) -> None:
    await ga.send({"type": "conversation.item.create", "item": _user_text(item_id="item_q")})
    await ga.until("conversation.item.done")
    response = {
        "conversation": "none",
        "output_modalities": ["text"],
        "metadata": {"purpose": "classify"},
        "input": [{"type": "item_reference", "id": "item_q"}, _user_text("is this a question?")],
    }
    await ga.send({"type": "response.create", "response": response})
    events = await ga.until("response.done")
    kinds = [e["type"] for e in events]
    assert "conversation.item.added" not in kinds and "conversation.item.done" not in kinds
    done = events[-1]["response"]
    assert done["conversation_id"] is None and done["metadata"] == {"purpose": "classify"}
    await ga.send({"type": "conversation.item.retrieve", "item_id": done["output"][0]["id"]})
    await ga.error("item_retrieve_invalid_item_id")  # not in the default conversation


async def test_push_to_talk_commit_creates_user_audio_item(ga: RawClient) -> None:
    await ga.send({"type": "session.update", "session": PUSH_TO_TALK})
    assert (await ga.recv())["session"]["audio"]["input"]["turn_detection"] is None
    pcm = b"\x10\x00" * (PCM_RATE // 5)  # 200 ms
    await ga.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
    await ga.send({"type": "input_audio_buffer.commit"})
    committed = await ga.recv()
    assert committed["type"] == "input_audio_buffer.committed"
    added = await ga.recv()
    assert added["type"] == "conversation.item.added" and added["item"]["id"] == committed["item_id"]
    assert added["item"]["content"][0]["type"] == "input_audio"
    await ga.recv()
    await ga.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
    await ga.send({"type": "input_audio_buffer.clear"})
    assert (await ga.recv())["type"] == "input_audio_buffer.cleared"
    await ga.send({"type": "input_audio_buffer.commit"})
    await ga.error("input_audio_buffer_commit_empty")
    await ga.send({"type": "conversation.item.retrieve", "item_id": committed["item_id"]})
    item = (await ga.recv())["item"]
    assert base64.b64decode(item["content"][0]["audio"]) == pcm
    await ga.send({"type": "response.create"})
    assert (await ga.until("response.done"))[-1]["response"]["status"] == "completed"


async def test_g711_output(ga: RawClient) -> None:
    session = {"type": "realtime", "audio": {"output": {"format": {"type": "audio/pcmu"}}}}
    await ga.send({"type": "session.update", "session": session})
    assert (await ga.recv())["session"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    events = await _spoken_response(ga)
    deltas = [base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"]
    assert deltas and all(len(d) <= 800 for d in deltas)  # <= 100 ms at 8 kHz, one byte per sample
    assert events[-1]["response"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}


async def test_beta_alaw_and_flat_session_nulls(beta: RawClient) -> None:
    await beta.send(
        {
            "type": "session.update",
            "session": {"output_audio_format": "g711_alaw", "turn_detection": None, "temperature": 2.0},
        }
    )
    session = (await beta.recv())["session"]
    assert session["output_audio_format"] == "g711_alaw" and session["turn_detection"] is None
    assert session["temperature"] == 1.2  # beta range is clamped
    await beta.send({"type": "conversation.item.create", "item": _user_text()})
    await beta.recv()
    await beta.send({"type": "response.create", "response": {"modalities": ["text", "audio"]}})
    events = await beta.until("response.done")
    assert any(e["type"] == "response.audio.delta" for e in events)
    assert events[-1]["response"]["output_audio_format"] == "g711_alaw"


async def test_beta_assistant_text_item(beta: RawClient) -> None:
    item = {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "earlier answer"}]}
    await beta.send({"type": "conversation.item.create", "item": item})
    created = await beta.recv()
    assert created["type"] == "conversation.item.created"
    assert created["item"]["content"] == [{"type": "text", "text": "earlier answer"}]


async def test_function_call_items_round_trip(ga: RawClient) -> None:
    call = {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": '{"city": "Paris"}'}
    await ga.send({"type": "conversation.item.create", "item": call})
    added = await ga.recv()
    assert added["item"]["name"] == "weather" and added["item"]["call_id"] == "call_1"
    await ga.recv()
    output = {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}
    await ga.send({"type": "conversation.item.create", "item": output})
    assert (await ga.recv())["item"]["output"] == "sunny"
    await ga.recv()
    await ga.send({"type": "response.create"})
    assert (await ga.until("response.done"))[-1]["response"]["status"] == "completed"


async def test_max_output_tokens_gives_incomplete(ga: RawClient) -> None:
    await ga.send({"type": "conversation.item.create", "item": _user_text()})
    await ga.until("conversation.item.done")
    await ga.send({"type": "response.create", "response": {"max_output_tokens": 20}})
    done = (await ga.until("response.done"))[-1]["response"]
    assert done["status"] == "incomplete"
    assert done["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
    assert done["max_output_tokens"] == 20


async def test_session_update_partial_and_nulls(ga: RawClient) -> None:
    await ga.send({"type": "session.update", "session": {"type": "realtime", "instructions": "one"}})
    first = (await ga.recv())["session"]
    assert first["instructions"] == "one" and first["audio"]["input"]["turn_detection"] is not None
    semantic = {"type": "semantic_vad", "eagerness": "low"}
    await ga.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": semantic}}},
        }
    )
    second = (await ga.recv())["session"]
    assert second["instructions"] == "one"  # untouched
    assert second["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"
    tracing = {"workflow_name": "w"}
    await ga.send(
        {"type": "session.update", "session": {"type": "realtime", "instructions": "", "tracing": tracing}}
    )
    third = (await ga.recv())["session"]
    assert third["instructions"] == "" and third["tracing"] == tracing
