"""TEST DOUBLE of a connection: an in-memory `realtime.session.transport.Transport`, optionally with playback.

It is the second implementation of the transport seam (the first is realtime/http/ws_transport.py), written
against the protocol only: the session core runs over it without knowing. The test plays the client:
`FakeTransport.send` puts a client event (decoded exactly as a WebSocket frame would be) on the inbound queue,
`FakeTransport.leave` disconnects, `FakeTransport.until` waits for a server event (`EventLog`). Every server event is
validated against the openai SDK's models, as the raw WebSocket client of the other tests does.

`FakePlayback` stands for a WebRTC media track: audio handed to the transport is queued, not sent as
``response.output_audio.delta``, and plays only when the test says so (`FakePlayback.play`), so tests control
exactly what the peer has heard.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from realtime.bench.event_log import EventLog
from realtime.errors import PeerGone
from realtime.session.transport import Ending, Inbound, OutputAudio, PeerAudio, Playback, Undecodable
from realtime.wire.client_events import decode_client_frame
from realtime.wire.handshake import Dialect
from tests.support.wire_check import validate_frame

WAIT_GUARD_S = 30.0  # only a hang guard, never a latency assertion
MS_PER_SECOND = 1000


@dataclass
class _Queued:
    item_id: str
    ms: float


@dataclass
class FakePlayback:
    """A media track paced by the test: `play` advances what the peer has heard.

    Attributes:
        delivered: every piece of audio handed over, in order.
        cleared: how many times `clear` was called.
    """

    delivered: list[OutputAudio] = field(default_factory=list)
    cleared: int = 0
    _queue: list[_Queued] = field(default_factory=list)
    _played: dict[str, float] = field(default_factory=dict)
    _drained: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._drained.set()

    def add(self, audio: OutputAudio) -> None:
        """Queue one piece for playing."""
        self.delivered.append(audio)
        ms = audio.samples * MS_PER_SECOND / 24_000
        self._queue.append(_Queued(audio.ids.item_id, ms))
        self._drained.clear()

    def play(self, ms: float | None = None) -> None:
        """Play ``ms`` milliseconds of the queued audio (all of it when None)."""
        left = float("inf") if ms is None else ms
        while self._queue and left > 0:
            head = self._queue[0]
            step = min(head.ms, left)
            self._played[head.item_id] = self._played.get(head.item_id, 0.0) + step
            head.ms -= step
            left -= step
            if head.ms <= 0:
                self._queue.pop(0)
        if not self._queue:
            self._drained.set()

    # Playback --------------------------------------------------------------------------------------------
    def played_ms(self, item_id: str) -> int:
        return int(self._played.get(item_id, 0.0))

    def pending_ms(self) -> int:
        return round(sum(piece.ms for piece in self._queue))

    def clear(self) -> None:
        self.cleared += 1
        self._queue.clear()
        self._drained.set()

    async def drained(self) -> None:
        await self._drained.wait()


class FakeTransport(EventLog):
    """An in-memory connection: the test is the client.

    Args:
        dialect: how client events are decoded and server events validated.
        playback: a `FakePlayback` to play output audio (WebRTC-like); None to send it as delta events
            (WebSocket-like).

    Attributes:
        received: every server event, validated, in the order the session sent it.
        ending: how the session closed the transport (None while open).
    """

    def __init__(self, dialect: Dialect = Dialect.GA, playback: FakePlayback | None = None) -> None:
        self._dialect = dialect
        self._playback = playback
        super().__init__(WAIT_GUARD_S)
        self._inbound: asyncio.Queue[Inbound | None] = asyncio.Queue(maxsize=64)
        self.ending: Ending | None = None

    # the client's side -----------------------------------------------------------------------------------
    async def send(self, event: dict[str, Any]) -> None:
        """Send one client event, decoded as the WebSocket transport decodes a text frame."""
        try:
            inbound: Inbound = decode_client_frame(json.dumps(event), self._dialect)
        except Exception as exc:
            inbound = Undecodable(exc)
        await self._inbound.put(inbound)

    async def send_track_audio(self, pcm16: bytes) -> None:
        """Input audio from the media track (24 kHz PCM16)."""
        await self._inbound.put(PeerAudio(pcm16))

    async def leave(self) -> None:
        """The client disconnects."""
        await self._inbound.put(None)

    # Transport -------------------------------------------------------------------------------------------
    @property
    def playback(self) -> Playback | None:
        return self._playback

    async def receive(self) -> Inbound | None:
        return await self._inbound.get()

    async def send_event(self, text: str) -> None:
        if self.ending is not None:
            raise PeerGone("closed")
        self.add(validate_frame(text, "beta" if self._dialect is Dialect.BETA else "ga"))

    async def send_audio(self, audio: OutputAudio) -> None:
        if self._playback is None:
            await self.send_event(audio.delta_text)
        else:
            self._playback.add(audio)

    async def close(self, ending: Ending) -> None:
        self.ending = ending
        self.wake()
