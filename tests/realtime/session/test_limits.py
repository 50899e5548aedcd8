"""Per-session caps over a real socket: conversation items, bytes and audio seconds, the input buffer, and
how much of a client's value an error repeats. Each refusal is an ``error`` with a precise code; the session
lives on."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from realtime.audio import AudioFormat
from realtime.config import ServerConfig
from realtime.errors import MAX_MESSAGE_CHARS, MAX_QUOTED_CHARS, ProtocolViolation
from realtime.session.input_audio import MAX_BUFFER_SECONDS, InputAudioBuffer
from tests.support.server_harness import ServerHandle, configured_app, start_server
from tests.support.wire_check import RawClient

PCM_RATE = 24_000
PUSH_TO_TALK = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
APP_FEW_ITEMS = 0  # at most 3 items
APP_SMALL = 1  # at most 1 MiB and 1 s of audio
MAX_ITEMS = 3


@pytest.fixture(scope="module")
def capped(t2w_cache: Path) -> Iterator[ServerHandle]:
    config = ServerConfig(backend="synthetic", synthetic_tokens_per_second=2000.0, cache_dir=t2w_cache)
    apps = [
        configured_app(max_conversation_items=MAX_ITEMS),
        configured_app(max_conversation_mb=1, max_conversation_audio_seconds=1.0),
    ]
    handle = start_server(config, apps)
    yield handle
    handle.stop()


def _text_item(text: str, item_id: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }
    if item_id:
        item["id"] = item_id
    return item


def _silence(seconds: float) -> str:
    return base64.b64encode(bytes(2 * int(PCM_RATE * seconds))).decode()


async def test_item_cap_refuses_the_next_item_until_one_is_deleted(capped: ServerHandle) -> None:
    client = await RawClient.connect(capped.ws_url(index=APP_FEW_ITEMS))
    try:
        for index in range(MAX_ITEMS):
            await client.send({"type": "conversation.item.create", "item": _text_item("hi", f"item_{index}")})
            await client.until("conversation.item.done")
        await client.send({"type": "conversation.item.create", "event_id": "evt_4", "item": _text_item("hi")})
        error = await client.error("conversation_limit_reached", event_id="evt_4")
        assert f"{MAX_ITEMS} items" in error["message"]
        await client.send({"type": "response.create", "event_id": "evt_r"})  # its reply would not fit
        await client.error("conversation_limit_reached", event_id="evt_r")
        await client.send({"type": "conversation.item.delete", "item_id": "item_0"})
        await client.until("conversation.item.deleted")
        await client.send({"type": "conversation.item.create", "item": _text_item("again")})
        await client.until("conversation.item.done")
    finally:
        await client.close()


async def test_byte_cap_counts_the_new_item(capped: ServerHandle) -> None:
    client = await RawClient.connect(capped.ws_url(index=APP_SMALL))
    try:
        big = "y" * (600 * 1024)
        await client.send({"type": "conversation.item.create", "item": _text_item(big)})
        await client.until("conversation.item.done")
        await client.send({"type": "conversation.item.create", "item": _text_item(big)})
        error = await client.error("conversation_limit_reached")
        assert "bytes" in error["message"]
        await client.alive()
    finally:
        await client.close()


async def test_audio_cap_refuses_the_commit_and_keeps_the_buffer(capped: ServerHandle) -> None:
    client = await RawClient.connect(capped.ws_url(index=APP_SMALL))
    try:
        await client.send({"type": "session.update", "session": PUSH_TO_TALK})
        await client.until("session.updated")
        await client.send({"type": "input_audio_buffer.append", "audio": _silence(0.8)})
        await client.send({"type": "input_audio_buffer.commit"})
        await client.until("conversation.item.done")
        await client.send({"type": "input_audio_buffer.append", "audio": _silence(0.5)})
        await client.send({"type": "input_audio_buffer.commit", "event_id": "evt_c"})
        error = await client.error("conversation_limit_reached", event_id="evt_c")
        assert "s of audio" in error["message"]
        await client.send({"type": "input_audio_buffer.clear"})  # the refused audio was still buffered
        assert (await client.recv())["type"] == "input_audio_buffer.cleared"
    finally:
        await client.close()


async def test_append_cap_counts_the_new_audio() -> None:
    buffer = InputAudioBuffer(AudioFormat.G711_ULAW)  # 8 kHz, one byte a sample: a small test
    rate = AudioFormat.G711_ULAW.sample_rate
    await buffer.append(bytes(rate * (MAX_BUFFER_SECONDS - 1)))
    with pytest.raises(ProtocolViolation) as caught:
        await buffer.append(bytes(rate * 2))  # the buffer is under the cap, but not with this append
    assert caught.value.code == "input_audio_buffer_full"
    assert buffer.buffered_ms == (MAX_BUFFER_SECONDS - 1) * 1000
    await buffer.append(bytes(rate))  # exactly at the cap is fine


async def test_error_messages_quote_at_most_a_little_of_the_client_value(ga: RawClient) -> None:
    huge = "z" * 1_000_000
    await ga.send({"type": huge})
    error = await ga.error("invalid_value")
    assert len(error["message"]) < MAX_QUOTED_CHARS + 400  # the quote, then the list of supported types
    await ga.send({"type": "session.update", "session": {"type": "realtime", "voice": [huge]}})
    event = await ga.recv()
    assert event["type"] == "error" and len(event["error"]["message"]) <= MAX_MESSAGE_CHARS + 3
    await ga.send({"type": "session.update", "event_id": huge, "session": {"type": "nope"}})
    event = await ga.recv()
    assert event["type"] == "error" and len(event["error"]["event_id"]) < MAX_QUOTED_CHARS + 40
    await ga.alive()
