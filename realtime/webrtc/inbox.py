"""What reaches a call's session, in arrival order: data channel events, sideband events, track audio.

A WebSocket has backpressure (the server stops reading the socket); a data channel has none: its messages
arrive in aiortc's callbacks whether or not the session keeps up. `Inbox` bounds both kinds separately, so
track audio (which is awaited by its reader: `put_audio`) can never crowd out the client's events:

- events from the data channel: `offer_event`, which refuses past ``max_events`` queued (the call then ends:
  a peer that floods its channel faster than the session can answer is not a client we can serve);
- events from a sideband WebSocket: `put_event`, which waits for room (the socket stops being read);
- audio: `put_audio`, which waits while ``max_audio`` pieces are queued.

Event loop only.
"""

from __future__ import annotations

import asyncio
from collections import deque

from realtime.session.transport import Inbound, PeerAudio

MAX_EVENTS = 256  # client events queued for the session (one SDK burst is a handful)
MAX_AUDIO = 50  # pieces of track audio queued (2 s of 40 ms pieces)


class Inbox:
    """A bounded FIFO of `Inbound` messages with separate caps for events and audio.

    Args:
        max_events: client events queued before `offer_event` refuses and `put_event` waits.
        max_audio: audio pieces queued before `put_audio` waits.
    """

    def __init__(self, max_events: int = MAX_EVENTS, max_audio: int = MAX_AUDIO) -> None:
        self._items: deque[Inbound] = deque()
        self._events = 0
        self._audio = 0
        self._max_events = max_events
        self._max_audio = max_audio
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._ended = False

    @property
    def ended(self) -> bool:
        """True once `end` was called: nothing more is delivered."""
        return self._ended

    def offer_event(self, inbound: Inbound) -> bool:
        """Queue a client event without waiting; False (nothing queued) when the event cap is reached."""
        if self._ended:
            return True  # the call is over: nothing to refuse
        if self._events >= self._max_events:
            return False
        self._push(inbound)
        return True

    async def put_event(self, inbound: Inbound) -> None:
        """Queue a client event, waiting while the event cap is reached (dropped once ended)."""
        while self._events >= self._max_events and not self._ended:
            self._room.clear()
            await self._room.wait()
        if not self._ended:
            self._push(inbound)

    async def put_audio(self, pcm16: bytes) -> None:
        """Queue track audio, waiting while the audio cap is reached (dropped once ended)."""
        while self._audio >= self._max_audio and not self._ended:
            self._room.clear()
            await self._room.wait()
        if not self._ended:
            self._push(PeerAudio(pcm16))

    async def get(self) -> Inbound | None:
        """The next message, or None once ended (what is still queued then is dropped)."""
        while not self._items and not self._ended:
            self._arrived.clear()
            await self._arrived.wait()
        if self._ended:
            return None
        inbound = self._items.popleft()
        if isinstance(inbound, PeerAudio):
            self._audio -= 1
        else:
            self._events -= 1
        self._room.set()
        return inbound

    def end(self) -> None:
        """The call is over: `get` returns None, waiting producers return, the queue is dropped."""
        self._ended = True
        self._items.clear()
        self._events = self._audio = 0
        self._arrived.set()
        self._room.set()

    def _push(self, inbound: Inbound) -> None:
        if isinstance(inbound, PeerAudio):
            self._audio += 1
        else:
            self._events += 1
        self._items.append(inbound)
        self._arrived.set()
