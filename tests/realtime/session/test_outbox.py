"""The outbox: bounded in frames and in characters, and no producer waits longer than the send timeout."""

from __future__ import annotations

import asyncio

import pytest

from realtime.errors import PeerStalled
from realtime.session.outbox import EventFrame, Outbox


async def test_a_producer_gives_up_after_the_timeout_when_nobody_reads() -> None:
    outbox = Outbox(2, put_timeout=0.2)
    await outbox.put_frame(EventFrame("a"))
    await outbox.put_frame(EventFrame("b"))
    with pytest.raises(PeerStalled):
        await outbox.put_frame(EventFrame("c"))


async def test_big_frames_wait_for_room_in_characters() -> None:
    outbox = Outbox(256, put_timeout=0.2, max_chars=1000)
    await outbox.put_frame(EventFrame("x" * 5000))  # an empty outbox always takes one frame
    with pytest.raises(PeerStalled):
        await outbox.put_frame(EventFrame("y" * 10))
    assert outbox.queued_chars == 5000


async def test_a_waiting_producer_goes_on_once_the_sender_takes_a_frame() -> None:
    outbox = Outbox(256, put_timeout=5.0, max_chars=1000)
    await outbox.put_frame(EventFrame("x" * 900))
    waiting = asyncio.create_task(outbox.put_frame(EventFrame("y" * 900)))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    first = await outbox.get()
    outbox.done()
    await asyncio.wait_for(waiting, 1.0)
    assert isinstance(first, EventFrame) and first.text[0] == "x" and outbox.queued_chars == 900
