"""The call's parts without a network: the playout track's accounting, the inbox's caps, the data channel's
message size, the sideband link's bound (realtime/webrtc/)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError
from pyee.asyncio import AsyncIOEventEmitter

from realtime.audio import AudioFormat, pcm16_to_ulaw
from realtime.errors import PeerGone
from realtime.session.transport import Ending, OutputAudio, PeerAudio, Undecodable
from realtime.webrtc.call_transport import CallTransport, SidebandLink
from realtime.webrtc.inbox import Inbox
from realtime.webrtc.playout import FRAME_SAMPLES, PLAYOUT_RATE, PlayoutTrack
from realtime.wire.handshake import Dialect
from realtime.wire.server_events import EventBuilder, PartIds, encode
from tests.support.wire_check import validate_frame

EVENTS = EventBuilder(Dialect.GA)


def audio(item_id: str, ms: int, fmt: AudioFormat = AudioFormat.PCM16) -> OutputAudio:
    rate_khz = fmt.sample_rate // 1000
    tone = (np.sin(np.arange(rate_khz * ms) / 3) * 8000).astype("<i2").tobytes()
    wire = tone if fmt is AudioFormat.PCM16 else pcm16_to_ulaw(tone)
    return OutputAudio(PartIds("resp_1", item_id, 0, 0), wire, fmt, EVENTS)


async def test_the_playout_track_knows_what_was_played_per_item() -> None:
    track = PlayoutTrack(start_cushion_ms=0)
    await track.play(audio("item_a", 100))
    await track.play(audio("item_b", 60))
    assert 150 <= track.pending_ms() <= 160  # the resampler holds back a few samples of its filter
    frames = [await track.recv() for _ in range(7)]  # 140 ms
    assert [frame.pts for frame in frames] == [i * FRAME_SAMPLES for i in range(7)]
    assert all(frame.sample_rate == PLAYOUT_RATE and frame.samples == FRAME_SAMPLES for frame in frames)
    assert track.played_ms("item_a") >= 95 and 30 <= track.played_ms("item_b") <= 45
    track.clear()
    assert track.pending_ms() == 0
    await asyncio.wait_for(track.drained(), 1)
    silent = await track.recv()  # the clock goes on with silence
    assert not silent.to_ndarray().any()
    track.stop()


async def test_a_new_item_waits_for_the_start_cushion_then_plays_without_a_break() -> None:
    track = PlayoutTrack(start_cushion_ms=100)
    await track.play(audio("item_a", 100))
    frames = [await track.recv() for _ in range(10)]  # 200 ms
    heard = [bool(frame.to_ndarray().any()) for frame in frames]
    assert heard[:4] == [False] * 4  # the first 80 ms: the cushion (frames 0-4 are due at 0-80 ms)
    assert True in heard
    first = heard.index(True)
    assert all(heard[first : first + 4])  # then the item's audio, in one piece
    assert track.played_ms("item_a") >= 75
    await track.play(audio("item_a", 40))  # more of the same item: no second cushion
    assert (await track.recv()).to_ndarray().any()
    track.stop()


async def test_g711_output_is_played_at_its_own_rate() -> None:
    track = PlayoutTrack()
    await track.play(audio("item_a", 100, AudioFormat.G711_ULAW))
    assert 90 <= track.pending_ms() <= 101
    track.stop()


async def test_play_waits_while_the_track_is_full() -> None:
    track = PlayoutTrack(max_pending_ms=100, start_cushion_ms=0)
    await track.play(audio("item_a", 200))  # one piece may overshoot the cap
    waiting = asyncio.create_task(track.play(audio("item_a", 20)))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    for _ in range(6):  # 120 ms played: below the cap again
        await track.recv()
    await asyncio.wait_for(waiting, 1)
    track.stop()
    with pytest.raises(MediaStreamError):  # once the call has ended
        await track.play(audio("item_a", 20))


async def test_the_inbox_keeps_room_for_events_whatever_the_audio() -> None:
    inbox = Inbox(max_events=2, max_audio=1)
    await inbox.put_audio(b"\x00\x00")
    blocked = asyncio.create_task(inbox.put_audio(b"\x00\x00"))
    await asyncio.sleep(0)
    assert not blocked.done()
    event = Undecodable(ValueError("a stand-in client event"))
    assert inbox.offer_event(event) is True  # events have their own room
    assert inbox.offer_event(event) is True
    assert inbox.offer_event(event) is False  # ... of two
    assert isinstance(await inbox.get(), PeerAudio)
    await asyncio.wait_for(blocked, 1)
    inbox.end()
    assert await inbox.get() is None


class FakeChannel(AsyncIOEventEmitter):
    """What CallTransport uses of an aiortc data channel, with a maximum message size."""

    def __init__(self, max_message: int) -> None:
        super().__init__()
        self.max_message = max_message
        self.sent: list[str] = []
        self.readyState = "open"
        self.bufferedAmount = 0
        self.bufferedAmountLowThreshold = 0

    def send(self, data: str) -> None:
        if len(data.encode()) > self.max_message:
            raise ValueError(f"Cannot send message of {len(data)} bytes")
        self.sent.append(data)


def _transport(channel: FakeChannel) -> CallTransport:
    transport = CallTransport(PlayoutTrack())
    transport.attach_channel(channel)  # type: ignore[arg-type]
    return transport


async def test_an_event_too_large_for_the_channel() -> None:
    channel = FakeChannel(max_message=4096)
    transport = _transport(channel)
    item: dict[str, Any] = {
        "id": "item_1",
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_audio", "transcript": "hi", "audio": "A" * 8000}],
    }
    retrieved = encode(EVENTS.event("conversation.item.retrieved", item=item))
    await transport.send_event(retrieved)
    lean = validate_frame(channel.sent[-1], "ga")
    assert lean["type"] == "conversation.item.retrieved" and "audio" not in lean["item"]["content"][0]
    assert lean["item"]["content"][0]["transcript"] == "hi"  # what fits is kept
    big = encode(EVENTS.event("response.output_audio_transcript.done", **_ids(), transcript="x" * 8000))
    await transport.send_event(big)
    error = validate_frame(channel.sent[-1], "ga")["error"]
    assert (error["type"], error["code"]) == ("server_error", "event_too_large")


def _ids() -> dict[str, Any]:
    return {"response_id": "resp_1", "item_id": "item_1", "output_index": 0, "content_index": 0}


async def test_a_peer_flooding_its_channel_ends_the_call() -> None:
    channel = FakeChannel(max_message=65536)
    transport = _transport(channel)
    for _ in range(300):  # nobody reads: the session is behind
        channel.emit("message", json.dumps({"type": "input_audio_buffer.clear"}))
    assert transport.left.is_set() and "flooded" in transport.reason
    assert await transport.receive() is None
    with pytest.raises(PeerGone):
        await transport.send_event(encode(EVENTS.cleared()))


async def test_a_sideband_that_does_not_read_is_cut_off_alone() -> None:
    link = SidebandLink(max_queued=3)
    for n in range(4):
        link.offer(f"event {n}")
    assert link.ending == Ending(1008, "send_timeout")
    assert await link.next() is None
    calm = SidebandLink()
    calm.offer("one")
    calm.end(Ending(1000))
    assert [await calm.next(), await calm.next()] == ["one", None]  # what was queued goes out first
