"""The WebRTC implementation of the session core's `Transport` (realtime/session/transport.py): one call.

In: client events from the ``oai-events`` data channel and from every sideband WebSocket attached to the call
(``/v1/realtime?call_id=...``), and the peer's track audio as `PeerAudio`, all through one bounded `Inbox`.
Out: every server event on the data channel and to every sideband; output audio on the call's `PlayoutTrack`
(never as ``response.output_audio.delta``), which is the session's `Playback`.

Flow control: aiortc queues what the data channel sends without limit; `send_event` waits while more than
`HIGH_WATER_BYTES` are queued for the peer, so a peer that stops reading stalls the sender, and the session's
``--send-timeout`` ends it as it ends a WebSocket that is not read. A sideband has its own bounded queue
(`SidebandLink`); one that falls `SIDEBAND_QUEUE` events behind is closed (1008 ``send_timeout``) without
touching the call.

An event larger than the peer's data channel message size (256 KiB from browsers) cannot be sent: a
``conversation.item.retrieved`` then leaves out its audio and images (as above 1 MiB on a WebSocket), anything
else becomes an ``error`` event saying what was not sent (docs/PROTOCOL.md §8.3).

Event loop only.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque

from aiortc import RTCDataChannel
from aiortc.exceptions import InvalidStateError
from aiortc.mediastreams import MediaStreamError

from realtime.errors import (
    CLOSE_POLICY_VIOLATION,
    CODE_EVENT_TOO_LARGE,
    CODE_INVALID_EVENT,
    CODE_SEND_TIMEOUT,
    SERVER_ERROR,
    ErrorReport,
    PeerGone,
    ProtocolViolation,
)
from realtime.session.transport import Ending, Inbound, OutputAudio, Playback, Undecodable
from realtime.webrtc.inbox import Inbox
from realtime.webrtc.playout import PlayoutTrack
from realtime.wire.client_events import decode_client_frame
from realtime.wire.handshake import Dialect
from realtime.wire.server_events import EventBuilder, encode

log = logging.getLogger(__name__)

HIGH_WATER_BYTES = 1024 * 1024  # queued for the peer before send_event waits
LOW_WATER_BYTES = 256 * 1024  # ... until it drains below this
SIDEBAND_QUEUE = 1024  # events a sideband may fall behind before it is closed
MAX_SIDEBANDS = 4  # sideband WebSockets one call may have at once


def decode_text(message: str | bytes, dialect: Dialect) -> Inbound:
    """One client message (data channel or sideband) as what the session gets: the event, or why not."""
    if not isinstance(message, str):
        return Undecodable(
            ProtocolViolation(
                CODE_INVALID_EVENT, "Expected a text message; binary messages are not supported."
            )
        )
    try:
        return decode_client_frame(message, dialect)
    except Exception as exc:  # the session reports it: a client mistake precisely, a bug generically
        return Undecodable(exc)


class SidebandLink:
    """The events a call sends one sideband WebSocket, queued for its writer (event loop only).

    Attributes:
        ending: set once the link is over: how its socket should close.
    """

    def __init__(self, max_queued: int = SIDEBAND_QUEUE) -> None:
        self._queue: deque[str] = deque()
        self._max = max_queued
        self._changed = asyncio.Event()
        self.ending: Ending | None = None

    def offer(self, text: str) -> None:
        """Queue one event; a link already `SIDEBAND_QUEUE` behind is ended (its socket is not read)."""
        if self.ending is not None:
            return
        if len(self._queue) >= self._max:
            self._queue.clear()
            self.end(Ending(CLOSE_POLICY_VIOLATION, CODE_SEND_TIMEOUT))
            return
        self._queue.append(text)
        self._changed.set()

    def end(self, ending: Ending) -> None:
        """No more events: the writer sends what is queued, then closes with ``ending``."""
        if self.ending is None:
            self.ending = ending
        self._changed.set()

    async def next(self) -> str | None:
        """The next event to write, or None once the link is over and its queue written."""
        while not self._queue:
            if self.ending is not None:
                return None
            self._changed.clear()
            await self._changed.wait()
        return self._queue.popleft()


class CallTransport:
    """One call as a `Transport`: the data channel, the sidebands and the two audio tracks.

    Args:
        playout: the server's audio track (the `Playback`).
        dialect: how client events are decoded (calls speak GA).

    Attributes:
        left: set once the peer left, the call was hung up, or the transport closed.
        reason: why it ended (for logs), once ``left`` is set.
    """

    def __init__(self, playout: PlayoutTrack, dialect: Dialect = Dialect.GA) -> None:
        self._playout = playout
        self._dialect = dialect
        self._inbox = Inbox()
        self._channel: RTCDataChannel | None = None
        self._room = asyncio.Event()
        self._sidebands: set[SidebandLink] = set()
        self._events = EventBuilder(dialect)
        self.left = asyncio.Event()
        self.reason = ""

    # wiring: what the call feeds in ----------------------------------------------------------------------
    def attach_channel(self, channel: RTCDataChannel) -> None:
        """Use ``channel`` (the peer's ``oai-events``) for events both ways; its closing ends the call."""
        self._channel = channel
        channel.bufferedAmountLowThreshold = LOW_WATER_BYTES
        channel.on("message", self._on_message)
        channel.on("bufferedamountlow", self._room.set)
        channel.on("close", lambda: self.end("the peer closed the data channel"))

    def _on_message(self, message: str | bytes) -> None:
        if not self._inbox.offer_event(decode_text(message, self._dialect)):
            log.warning("call peer sent events faster than its session handles them: ending the call")
            self.end("the peer flooded the data channel")

    async def deliver_audio(self, pcm16: bytes) -> None:
        """Track audio for the session (24 kHz mono PCM16); waits while the inbox holds enough audio."""
        await self._inbox.put_audio(pcm16)

    def attach_sideband(self, link: SidebandLink) -> bool:
        """Send ``link`` every event from now on; False when the call is over or has `MAX_SIDEBANDS`."""
        if self.left.is_set() or len(self._sidebands) >= MAX_SIDEBANDS:
            return False
        self._sidebands.add(link)
        return True

    def detach_sideband(self, link: SidebandLink) -> None:
        """``link``'s socket is gone: stop queueing for it."""
        self._sidebands.discard(link)

    async def from_sideband(self, message: str | bytes) -> None:
        """A client event from a sideband WebSocket; waits while the session is behind."""
        await self._inbox.put_event(decode_text(message, self._dialect))

    def end(self, reason: str) -> None:
        """The call is over (the peer left, a hangup, a flood): the session's receive loop sees the end."""
        if not self.left.is_set():
            self.reason = reason
            self.left.set()
        self._inbox.end()
        self._room.set()

    # Transport -------------------------------------------------------------------------------------------
    @property
    def playback(self) -> Playback | None:
        """The call's audio track: it plays the audio out in real time and knows what the peer heard."""
        return self._playout

    async def receive(self) -> Inbound | None:
        """The next message for the session; None once the call is over."""
        return await self._inbox.get()

    async def send_event(self, text: str) -> None:
        """Send one server event to every sideband and on the data channel (waiting while it is full).

        Raises:
            PeerGone: the call is over, or the data channel closed.
        """
        if self.left.is_set():
            raise PeerGone(self.reason)
        for link in list(self._sidebands):
            link.offer(text)
        channel = self._channel
        if channel is None:  # an audio-only call: events reach the sidebands only
            return
        try:
            channel.send(text)
        except InvalidStateError:
            raise PeerGone("the data channel is closed") from None
        except ValueError as exc:  # larger than the peer's maximum message size
            self._send_fitted(channel, text, exc)
        while channel.bufferedAmount > HIGH_WATER_BYTES and not self.left.is_set():
            self._room.clear()
            await self._room.wait()

    def _send_fitted(self, channel: RTCDataChannel, text: str, exc: ValueError) -> None:
        """Send what goes out instead of an event too large for the peer's data channel messages.

        A ``conversation.item.retrieved`` leaves out the item's audio and images, as it does on a WebSocket
        above 1 MiB (docs/PROTOCOL.md §1.6); anything else, or a retrieve still too large, becomes an
        ``error`` event that says what was not sent.
        """
        event = json.loads(text)
        kind = str(event.get("type"))
        if kind == "conversation.item.retrieved":
            for part in event["item"].get("content", []):
                part.pop("audio", None)
                part.pop("image_url", None)
            try:
                channel.send(json.dumps(event))
                return
            except ValueError:
                pass
        log.warning("a %s event of %d characters did not fit the data channel: %s", kind, len(text), exc)
        report = ErrorReport(
            SERVER_ERROR,
            CODE_EVENT_TOO_LARGE,
            f"A {kind} event of {len(text)} characters was not sent: {exc}.",
        )
        channel.send(encode(self._events.error(report)))

    async def send_audio(self, audio: OutputAudio) -> None:
        """Queue the audio on the call's track (played in real time; waits while a minute is queued).

        Raises:
            PeerGone: the call is over.
        """
        try:
            await self._playout.play(audio)
        except MediaStreamError:
            raise PeerGone("the call's audio track has ended") from None

    async def close(self, ending: Ending) -> None:
        """End the call's side of the session: sidebands close with ``ending``, the track stops.

        The peer connection itself is closed by the call (realtime/webrtc/calls.py) right after.
        """
        self.end(self.reason or f"session ended ({ending.code})")
        for link in self._sidebands:
            link.end(ending)
        self._sidebands.clear()
        self._playout.stop()
