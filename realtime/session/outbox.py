"""The bounded queue between a session's producers (dispatch, responses) and its sender task.

Producers await `Outbox.put` (backpressure: a client that reads slowly slows its own responses, never the
server's memory), but never longer than the session's send timeout: a producer that finds no room for that
long raises `PeerStalled`, which ends the session (realtime/session/connection.py). The sender writes each
frame to the socket, skipping audio frames whose response was cancelled meanwhile, and runs the frame's
``on_sent`` hook after writing it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel

from realtime.errors import PeerStalled
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
    """A bounded FIFO of `OutFrame`s (one per connection).

    Args:
        maxsize: frames queued before producers wait.
        put_timeout: longest a producer waits for room (seconds); then `PeerStalled`.
    """

    def __init__(self, maxsize: int, put_timeout: float) -> None:
        self.queue: asyncio.Queue[OutFrame] = asyncio.Queue(maxsize=maxsize)
        self.put_timeout = put_timeout

    async def put(self, event: BaseModel) -> None:
        """Queue a server event; waits while the socket is behind.

        Raises:
            PeerStalled: no room for `put_timeout` seconds (the client stopped reading).
        """
        await self.put_frame(OutFrame(encode(event)))

    async def put_frame(self, frame: OutFrame) -> None:
        """Queue a prepared frame (see `put`)."""
        queue = self.queue
        if not queue.full():
            queue.put_nowait(frame)
            return
        try:
            async with asyncio.timeout(self.put_timeout):
                await queue.put(frame)
        except TimeoutError:
            raise PeerStalled(f"no room in the outbox for {self.put_timeout:g} s") from None
