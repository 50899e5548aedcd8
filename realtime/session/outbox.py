"""The bounded queue between a session's producers (dispatch, responses) and its sender task.

Producers await `Outbox.put` (backpressure: a client that reads slowly slows its own responses, never the
server's memory), but never longer than the session's send timeout: a producer that finds no room for that
long raises `PeerStalled`, which ends the session (realtime/session/connection.py). Room is counted in frames
and in characters, so a client that asks for big frames (retrieving a large item again and again) cannot
queue more than `DEFAULT_MAX_CHARS` plus one frame. The sender takes frames with `Outbox.get`, writes each
to the socket, skipping audio frames whose response was cancelled meanwhile, runs the frame's ``on_sent``
hook after writing it, and calls `Outbox.done`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel

from realtime.errors import PeerStalled
from realtime.wire.server_events import encode

DEFAULT_MAX_CHARS = 8 * 1024 * 1024  # queued text per session before producers wait


class FrameOwner(Protocol):
    """The producer of a droppable frame (a response): its frames are skipped once it is cancelled."""

    @property
    def cancelled(self) -> bool: ...


@dataclass
class OutFrame:
    """One frame waiting in the session's outbox.

    Attributes:
        text: the JSON text frame.
        owner: for audio deltas, the response that produced it: dropped if that response was cancelled.
        on_sent: called by the sender right after the frame was written to the socket.
    """

    text: str
    owner: FrameOwner | None = None
    on_sent: Callable[[], None] | None = None


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
        """Queue a server event; waits while the socket is behind.

        Raises:
            PeerStalled: no room for `put_timeout` seconds (the client stopped reading).
        """
        await self.put_frame(OutFrame(encode(event)))

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
                self.queued_chars += len(frame.text)
        except TimeoutError:
            raise PeerStalled(f"no room in the outbox for {self.put_timeout:g} s") from None

    async def get(self) -> OutFrame:
        """The next frame for the sender (who must call `done` once it is written or skipped)."""
        frame = await self.queue.get()
        self.queued_chars -= len(frame.text)
        self._room.set()
        return frame

    def done(self) -> None:
        """The frame taken by the last `get` was handled."""
        self.queue.task_done()

    def _fits(self, frame: OutFrame) -> bool:
        return self.queued_chars == 0 or self.queued_chars + len(frame.text) <= self.max_chars

    def _add(self, frame: OutFrame) -> None:
        self.queue.put_nowait(frame)
        self.queued_chars += len(frame.text)
