"""The bounded queue between a session's producers (dispatch, responses) and its sender task.

Producers await `Outbox.put` (backpressure: a client that reads slowly slows its own responses, never the
server's memory). The sender (realtime/session/connection.py) writes each frame to the socket, skipping audio
frames whose response was cancelled meanwhile, and runs the frame's ``on_sent`` hook after writing it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel

from realtime.wire.server_events import encode


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
    """A bounded FIFO of `OutFrame`s (one per connection)."""

    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[OutFrame] = asyncio.Queue(maxsize=maxsize)

    async def put(self, event: BaseModel) -> None:
        """Queue a server event; waits while the socket is behind."""
        await self.queue.put(OutFrame(encode(event)))

    async def put_frame(self, frame: OutFrame) -> None:
        """Queue a prepared frame."""
        await self.queue.put(frame)
