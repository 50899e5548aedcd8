"""The bounded queue between a session's producers (dispatch, responses) and its sender task.

Producers await `Outbox.put` (backpressure: a client that reads slowly slows its own responses, never the
server's memory), but never longer than the session's send timeout: a producer that finds no room for that
long raises `PeerStalled`, which ends the session (realtime/session/connection.py). Room is counted in frames
and in characters, so a client that asks for big frames (retrieving a large item again and again) cannot
queue more than `DEFAULT_MAX_CHARS` plus one frame.

A frame is an encoded server event (`EventFrame`) or a piece of a response's output audio (`AudioFrame`). The
sender takes frames with `Outbox.get` in FIFO order, skips the audio of an owner that was cancelled meanwhile,
hands the rest to the transport, tells the frame's owner (`FrameOwner.frame_sent`) and calls `Outbox.done`.
FIFO is what lets a response count its audio as delivered before its ``response.done`` goes out: its deltas
were queued first.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from pydantic import BaseModel

from realtime.errors import PeerStalled
from realtime.session.transport import OutputAudio
from realtime.wire.server_events import encode

DEFAULT_MAX_CHARS = 8 * 1024 * 1024  # queued text per session before producers wait


class FrameOwner(Protocol):
    """The producer of frames that must know when they went out (a response). Event loop only."""

    @property
    def cancelled(self) -> bool:
        """True once the owner's audio frames still queued must be dropped, not sent."""
        ...

    def frame_sent(self, frame: OutFrame) -> None:
        """``frame`` was handed to the transport (called by the sender, in outbox order)."""
        ...


@dataclass(frozen=True)
class EventFrame:
    """One encoded server event.

    Attributes:
        text: the JSON text.
        owner: told once the event was sent (a response's ``response.done``); None for most events.
    """

    text: str
    owner: FrameOwner | None = None

    @property
    def size_chars(self) -> int:
        """Characters this frame holds while queued."""
        return len(self.text)


@dataclass(frozen=True)
class AudioFrame:
    """One piece of a response's output audio.

    Attributes:
        audio: the audio and the ids it belongs to.
        owner: the response: the frame is dropped if it was cancelled, else it is told once it was delivered.
        ready_at: `time.perf_counter()` when the chunk was ready to encode (the delta-overhead histogram).
    """

    audio: OutputAudio
    owner: FrameOwner
    ready_at: float

    @property
    def size_chars(self) -> int:
        """Characters this frame holds while queued (as its ``response.output_audio.delta``)."""
        return self.audio.size_chars


OutFrame: TypeAlias = EventFrame | AudioFrame


class Outbox:
    """A bounded FIFO of `OutFrame`s (one per connection).

    Args:
        maxsize: frames queued before producers wait.
        put_timeout: longest a producer waits for room (seconds); then `PeerStalled`.
        max_chars: characters queued before producers wait (one frame is always let in when empty).

    Attributes:
        queue: the frames; `queue.join()` waits until every frame put so far was sent or skipped.
        queued_chars: characters of the frames waiting.
    """

    def __init__(self, maxsize: int, put_timeout: float, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        self.queue: asyncio.Queue[OutFrame] = asyncio.Queue(maxsize=maxsize)
        self.put_timeout = put_timeout
        self.max_chars = max_chars
        self.queued_chars = 0
        self._room = asyncio.Event()  # set whenever the sender takes a frame

    async def put(self, event: BaseModel) -> None:
        """Queue a server event; waits while the transport is behind.

        Raises:
            PeerStalled: no room for `put_timeout` seconds (the client stopped reading).
        """
        await self.put_frame(EventFrame(encode(event)))

    async def put_frame(self, frame: OutFrame) -> None:
        """Queue a prepared frame (see `put`)."""
        if not self.queue.full() and self._fits(frame):
            self._add(frame)
            return
        try:
            async with asyncio.timeout(self.put_timeout):
                while not self._fits(frame):
                    self._room.clear()
                    await self._room.wait()
                await self.queue.put(frame)
                self.queued_chars += frame.size_chars
        except TimeoutError:
            raise PeerStalled(f"no room in the outbox for {self.put_timeout:g} s") from None

    async def get(self) -> OutFrame:
        """The next frame for the sender (who must call `done` once it is sent or skipped)."""
        frame = await self.queue.get()
        self.queued_chars -= frame.size_chars
        self._room.set()
        return frame

    def done(self) -> None:
        """The frame taken by the last `get` was handled."""
        self.queue.task_done()

    def _fits(self, frame: OutFrame) -> bool:
        return self.queued_chars == 0 or self.queued_chars + frame.size_chars <= self.max_chars

    def _add(self, frame: OutFrame) -> None:
        self.queue.put_nowait(frame)
        self.queued_chars += frame.size_chars
