"""`DisconnectAwareStreamingResponse`: a streamed answer ends, and its body is closed, when the client leaves
or stops reading, so the reply behind it (its admission slot, LLM request and decoder stream) is given back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from starlette.types import Message

from realtime.http.realtime_ws import SessionCount
from realtime.http.streaming import AdmissionSlot, DisconnectAwareStreamingResponse

SEND_TIMEOUT_S = 0.3
SCOPE = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "method": "POST", "headers": []}


class _Body:
    """An endless streamed body that records how it ended."""

    def __init__(self, slot: AdmissionSlot) -> None:
        self.slot = slot
        self.chunks = 0
        self.closed = False

    async def __call__(self) -> AsyncIterator[bytes]:
        try:
            while True:
                self.chunks += 1
                yield b"x" * 1024
                await asyncio.sleep(0.01)
        finally:
            self.closed = True
            self.slot.release()


async def _never_disconnects() -> Message:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def test_a_client_that_stops_reading_ends_the_stream_after_the_send_timeout() -> None:
    sessions = SessionCount(limit=1)
    body = _Body(AdmissionSlot(sessions))
    room = asyncio.Semaphore(3)  # the socket takes the headers and two chunks, then never drains

    async def send(message: Message) -> None:
        await room.acquire()

    response = DisconnectAwareStreamingResponse(body(), send_timeout=SEND_TIMEOUT_S)
    started = time.monotonic()
    await asyncio.wait_for(response(SCOPE, _never_disconnects, send), 10)
    assert SEND_TIMEOUT_S <= time.monotonic() - started < SEND_TIMEOUT_S + 2
    assert body.closed and body.chunks <= 3
    assert sessions.open == 0  # the slot is back: the next client can be served


async def test_a_client_that_leaves_ends_the_stream_at_once() -> None:
    sessions = SessionCount(limit=1)
    body = _Body(AdmissionSlot(sessions))
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def leaves() -> Message:
        await asyncio.sleep(0.2)
        return {"type": "http.disconnect"}

    response = DisconnectAwareStreamingResponse(body(), send_timeout=60.0)
    started = time.monotonic()
    await asyncio.wait_for(response(SCOPE, leaves, send), 10)
    assert time.monotonic() - started < 2  # not the send timeout: the disconnect itself ends it
    assert body.closed and sessions.open == 0
    assert len(sent) > 2  # it streamed until the client left


async def test_a_reading_client_gets_the_whole_body() -> None:
    async def finite() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"abc"

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await DisconnectAwareStreamingResponse(finite(), send_timeout=SEND_TIMEOUT_S)(
        SCOPE, _never_disconnects, send
    )
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert b"".join(m.get("body", b"") for m in bodies) == b"abc" * 5
    assert bodies[-1].get("more_body") is False
