"""A transport that plays the output audio itself (WebRTC-like), in process: the session core unchanged.

`FakePlayback` stands for a media track the test paces by hand, so what the peer "heard" is exact. The core
must send no ``response.output_audio.delta`` on such a transport (transcripts still go), bracket the audio
with ``output_audio_buffer.started`` / ``.stopped``, and on a clear (the client's, or a barge-in on the
track's input audio) truncate the item where the peer stopped hearing it and say ``.cleared``.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import soundfile as sf

from realtime.speech.runtime import Runtime
from realtime.speech.voices import default_voice_path
from tests.support.fake_transport import FakePlayback, FakeTransport
from tests.support.session_harness import USER_TEXT, Script, running, scripted, spoken

BYTES_PER_MS = 48  # 24 kHz PCM16
CHUNK_MS = 100


def _kinds(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


async def test_audio_goes_to_the_track_and_the_buffer_events_bracket_it(runtime: Runtime) -> None:
    playback = FakePlayback()
    transport = FakeTransport(playback=playback)
    async with running(scripted(runtime, Script(spoken("Hello ", 300, "there.", 200))), transport):
        await transport.send(USER_TEXT)
        await transport.send({"type": "response.create"})
        events = await transport.until("response.done")
        assert playback.pending_ms() == 500 and "output_audio_buffer.stopped" not in transport.types()
        playback.play(200)
        await asyncio.sleep(0)
        assert "output_audio_buffer.stopped" not in transport.types()  # 300 ms still to play
        playback.play()
        stopped = (await transport.until("output_audio_buffer.stopped"))[-1]
    kinds = _kinds(events)
    assert "response.output_audio.delta" not in kinds  # the audio went on the track
    assert "response.output_audio_transcript.delta" in kinds  # transcripts still go on the channel
    started = events[kinds.index("output_audio_buffer.started")]
    response_id = events[-1]["response"]["id"]
    assert started["response_id"] == stopped["response_id"] == response_id
    assert kinds.index("response.created") < kinds.index("output_audio_buffer.started")
    assert sum(len(audio.wire) for audio in playback.delivered) == 500 * BYTES_PER_MS


async def test_output_audio_buffer_clear_truncates_where_the_peer_stopped_hearing(runtime: Runtime) -> None:
    playback = FakePlayback()
    transport = FakeTransport(playback=playback)
    async with running(scripted(runtime, Script(spoken("one two three four ", 1000))), transport):
        await transport.send(USER_TEXT)
        await transport.send({"type": "response.create"})
        done = (await transport.until("response.done"))[-1]["response"]
        item_id = done["output"][0]["id"]
        playback.play(400)
        await transport.send({"type": "output_audio_buffer.clear"})
        events = await transport.until("output_audio_buffer.cleared")
        await transport.send({"type": "conversation.item.retrieve", "item_id": item_id})
        item = (await transport.until("conversation.item.retrieved"))[-1]["item"]
    truncated = next(event for event in events if event["type"] == "conversation.item.truncated")
    assert (truncated["item_id"], truncated["audio_end_ms"]) == (item_id, 400)
    assert events[-1]["response_id"] == done["id"] and playback.cleared == 1
    assert len(base64.b64decode(item["content"][0]["audio"])) == 400 * BYTES_PER_MS
    assert "output_audio_buffer.stopped" not in transport.types()  # cleared, not played out


async def test_output_audio_buffer_clear_is_refused_where_the_transport_cannot_play(runtime: Runtime) -> None:
    transport = FakeTransport()  # sends audio as delta events, like a WebSocket
    async with running(runtime, transport):
        await transport.send({"type": "output_audio_buffer.clear", "event_id": "evt_clear"})
        error = (await transport.until("error"))[-1]["error"]
    # OpenAI refuses it over a WebSocket like an unknown type (docs/PROTOCOL.md §8.3)
    assert (error["code"], error["param"], error["event_id"]) == ("invalid_value", "type", "evt_clear")


def _speech() -> bytes:
    samples, rate = sf.read(default_voice_path(), dtype="int16")
    assert rate == 24_000
    return bytes(samples.astype("<i2").tobytes())


async def test_barge_in_on_track_audio_cancels_truncates_and_clears(runtime: Runtime) -> None:
    gate = asyncio.Event()  # never opened: the response is still generating when the user speaks
    playback = FakePlayback()
    transport = FakeTransport(playback=playback)
    async with running(scripted(runtime, Script(spoken(300, "a long story ", gate))), transport):
        await transport.send(USER_TEXT)
        await transport.send({"type": "response.create"})
        events = await transport.until("response.output_audio_transcript.delta")  # queued after the audio
        item_id = next(e for e in events if e["type"] == "response.output_item.added")["item"]["id"]
        assert playback.pending_ms() == 300
        playback.play(200)
        audio = bytes(200 * BYTES_PER_MS) + _speech()[: 2 * 24_000 * 2]
        for start in range(0, len(audio), CHUNK_MS * BYTES_PER_MS):
            await transport.send_track_audio(audio[start : start + CHUNK_MS * BYTES_PER_MS])
        events = await transport.until("output_audio_buffer.cleared")
    kinds = _kinds(events)
    done = events[kinds.index("response.done")]["response"]
    assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    # OpenAI's order: speech_started, the cancelled response's closing events, truncated, cleared
    started = kinds.index("input_audio_buffer.speech_started")
    assert started < kinds.index("response.done") < kinds.index("conversation.item.truncated")
    truncated = events[kinds.index("conversation.item.truncated")]
    assert (truncated["item_id"], truncated["audio_end_ms"]) == (item_id, 200)  # what the peer heard
    assert playback.cleared == 1 and playback.pending_ms() == 0
