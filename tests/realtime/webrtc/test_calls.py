"""WebRTC calls end to end: an aiortc caller against the real server (docs/PROTOCOL.md §11).

The caller (realtime/bench/webrtc_client.py) does what a browser does: an Opus microphone track, the
``oai-events`` data channel, an offer without ICE candidates POSTed to ``/v1/realtime/calls``. Every event it
receives is validated against the openai SDK's GA models. Speech comes from tests/data/mic_hello.wav through
the microphone track (paced in real time), so the server VAD, the input path and the output track all run for
real; what the caller hears is decoded from the server's Opus track.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from realtime.audio import PCM_RATE, resample_pcm16
from realtime.bench.webrtc_client import CallClient
from tests.realtime.conftest import APP_TOOL_CALL, TOOL_CALL_ARGUMENTS
from tests.realtime.session.test_tool_calls import WEATHER_TOOL
from tests.support.server_harness import ServerHandle
from tests.support.wire_check import validate_frame

MIC_WAV = Path(__file__).resolve().parents[2] / "data" / "mic_hello.wav"
BYTES_PER_MS = PCM_RATE * 2 // 1000
USER_TEXT = {
    "type": "conversation.item.create",
    "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a long story"}]},
}


def speech_pcm() -> bytes:
    """mic_hello.wav (a spoken "hello", 16 kHz) as 24 kHz PCM16."""
    samples, rate = sf.read(MIC_WAV, dtype="int16")
    return resample_pcm16(samples.astype("<i2").tobytes(), rate, PCM_RATE)


def silence_ms(ms: int) -> bytes:
    return bytes(ms * BYTES_PER_MS)


def ga(text: str) -> dict[str, Any]:
    return validate_frame(text, "ga")


@pytest.fixture
async def caller(server: ServerHandle) -> AsyncIterator[CallClient]:
    client = await CallClient.connect(server.http_url(""), parse=ga)
    yield client
    await client.close()


async def _heard_ms_when(client: CallClient, kind: str) -> tuple[list[dict[str, Any]], float]:
    events = await client.until(kind)
    return events, client.heard_audio_ms()


async def test_a_spoken_turn_over_a_call(caller: CallClient) -> None:
    created = (await caller.until("session.created"))[-1]["session"]
    assert created["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    # a short answer: its retrieve (with audio) fits the data channel's 256 KiB messages
    caller.send({"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 40}})
    await caller.until("session.updated")
    assert caller.location == f"/v1/realtime/calls/{caller.call_id}" and caller.call_id.startswith("rtc_")
    await caller.speak(silence_ms(300) + speech_pcm() + silence_ms(1500))
    events = await caller.until("response.done")
    kinds = [event["type"] for event in events]
    for kind in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"):
        assert kind in kinds
    committed = events[kinds.index("input_audio_buffer.committed")]
    user = next(
        e["item"] for e in events if e["type"] == "conversation.item.added" and e["item"]["role"] == "user"
    )
    assert user["id"] == committed["item_id"] and user["content"][0]["type"] == "input_audio"
    done = events[-1]["response"]
    assert done["status"] in ("completed", "incomplete"), done
    assert "output_audio_buffer.started" in kinds  # before the first audio, on the channel
    assert "response.output_audio.delta" not in caller.types()  # audio goes on the track, never as events
    assert any(kind == "response.output_audio_transcript.delta" for kind in kinds)  # transcripts do
    await caller.until("output_audio_buffer.stopped")  # once the track has played it all
    item_id = done["output"][0]["id"]
    caller.send({"type": "conversation.item.retrieve", "item_id": item_id})
    item = (await caller.until("conversation.item.retrieved"))[-1]["item"]
    sent_ms = len(base64.b64decode(item["content"][0]["audio"])) / BYTES_PER_MS
    await asyncio.sleep(0.3)  # the last frames cross the jitter buffer
    heard = caller.heard_audio_ms()
    assert sent_ms > 0 and abs(heard - sent_ms) <= 0.1 * sent_ms + 200, (heard, sent_ms)


async def test_barge_in_truncates_at_what_the_caller_heard(caller: CallClient) -> None:
    await caller.until("session.created")
    caller.send(USER_TEXT)
    caller.send({"type": "response.create"})
    started = (await caller.until("output_audio_buffer.started"))[-1]
    await caller.until_heard(600)  # let the caller hear a little of the answer
    await caller.speak(speech_pcm())
    events, heard_at_truncation = await _heard_ms_when(caller, "conversation.item.truncated")
    events += await caller.until("output_audio_buffer.cleared")
    kinds = [event["type"] for event in events]
    speech = kinds.index("input_audio_buffer.speech_started")
    truncated = events[kinds.index("conversation.item.truncated")]
    if "response.done" in kinds[speech:]:  # the answer was still being generated: the VAD cancelled it
        done = events[speech + kinds[speech:].index("response.done")]["response"]
        assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        assert speech < kinds.index("response.done") < kinds.index("conversation.item.truncated")
    assert events[-1]["response_id"] == started["response_id"]
    # the server cut the item where the caller was (give or take the jitter buffer and the event's travel)
    assert abs(truncated["audio_end_ms"] - heard_at_truncation) <= 250, (truncated, heard_at_truncation)
    await asyncio.sleep(0.3)
    after = caller.heard_audio_ms()
    assert after - heard_at_truncation <= 300, "the caller kept hearing the answer after it was cleared"
    caller.send({"type": "conversation.item.retrieve", "item_id": truncated["item_id"]})
    item = (await caller.until("conversation.item.retrieved"))[-1]["item"]
    assert len(base64.b64decode(item["content"][0]["audio"])) == truncated["audio_end_ms"] * BYTES_PER_MS
    assert (
        "output_audio_buffer.stopped"
        not in caller.types()[caller.types().index("output_audio_buffer.cleared") :]
    )


async def test_output_audio_buffer_clear_from_the_caller(caller: CallClient) -> None:
    await caller.until("session.created")
    caller.send(USER_TEXT)
    caller.send({"type": "response.create"})
    await caller.until("output_audio_buffer.started")
    caller.send({"type": "response.cancel"})
    caller.send({"type": "output_audio_buffer.clear", "event_id": "evt_clear"})  # what the Agents SDK sends
    events = await caller.until("output_audio_buffer.cleared")
    assert "error" not in [event["type"] for event in events]


async def test_a_tool_call_over_a_call(server: ServerHandle) -> None:
    session = {"type": "realtime", "tools": [WEATHER_TOOL], "instructions": "Use the tools."}
    client = await CallClient.connect(server.http_url("", index=APP_TOOL_CALL), parse=ga, session=session)
    try:
        created = (await client.until("session.created"))[-1]["session"]
        assert [tool["name"] for tool in created["tools"]] == ["get_weather"]  # the form's session, applied
        client.send(USER_TEXT)
        client.send({"type": "response.create"})
        done = (await client.until("response.done"))[-1]["response"]
        call = next(item for item in done["output"] if item["type"] == "function_call")
        assert (call["name"], call["arguments"]) == ("get_weather", TOOL_CALL_ARGUMENTS)
        output = {"type": "function_call_output", "call_id": call["call_id"], "output": '{"sky": "clear"}'}
        client.send({"type": "conversation.item.create", "item": output})
        client.send({"type": "response.create"})
        second = (await client.until("response.done"))[-1]["response"]
        assert second["status"] == "completed"
        await client.until_heard(100)  # the answer after the tool's output is heard
    finally:
        await client.close()


async def test_the_session_form_field_is_validated_like_a_session_update(server: ServerHandle) -> None:
    session = {"type": "realtime", "audio": {"output": {"voice": "no-such-voice"}}}
    with pytest.raises(Exception) as refused:
        await CallClient.connect(server.http_url(""), session=session)
    response = refused.value.response  # type: ignore[attr-defined]
    error = response.json()["error"]
    assert response.status_code == 400
    assert (error["code"], error["param"]) == ("invalid_value", "session.audio.output.voice")
