"""The session core's one seam to its connection: the `Transport` protocol and the data that crosses it.

A session (realtime/session/session.py) and its connection loops (realtime/session/connection.py) never touch a
socket. They talk to a `Transport`, which turns its own bytes into typed `Inbound` messages and typed outbound
data into its own bytes, as the sans-I/O split of websockets' ``protocol.py`` does (events in, data out) and as
unmute splits its transport loops from its conversation handler. What crosses the seam:

- in: a decoded client event, a frame that could not be decoded (`Undecodable`: the session reports it and goes
  on), or input audio a transport took off a media track (`PeerAudio`); ``None`` once the peer has left;
- out: one encoded server event (`Transport.send_event`), or one piece of a response's output audio
  (`Transport.send_audio`, an `OutputAudio`): a WebSocket writes it as its ``response.output_audio.delta``
  event; a WebRTC transport plays it on its media track instead and never sends the delta;
- the end: `Transport.close` with an `Ending` (code and reason);
- where the peer is in the output audio: `Transport.playback`. A transport that plays the audio out itself, in
  real time (WebRTC), knows what the peer has heard and can drop what it has not (`Playback`); a WebSocket
  cannot (the client plays what it was sent, when it likes) and has none: the session then counts what was
  written as delivered and estimates when it has been played.

Implementations: realtime/http/ws_transport.py (WebSocket), tests/support/fake_transport.py (in memory). A new
transport needs no change here or anywhere else in realtime/session/.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol, TypeAlias

from realtime.audio import PCM_RATE, AudioFormat
from realtime.wire.client_events import ClientEvent
from realtime.wire.server_events import EventBuilder, PartIds, encode

# JSON around the base64 audio of one response.output_audio.delta (type, ids, event_id), rounded up
AUDIO_DELTA_ENVELOPE_CHARS = 256


@dataclass(frozen=True)
class Undecodable:
    """A frame the transport received but could not turn into a client event.

    Attributes:
        error: why: a `realtime.errors.ProtocolViolation` (the client sees its code), or any other exception
            (a bug in decoding: reported as a generic ``server_error``, the session goes on).
    """

    error: Exception


@dataclass(frozen=True)
class PeerAudio:
    """Input audio a transport took off the peer's media track (WebRTC), as if appended by the client.

    Attributes:
        pcm16: mono PCM16 little-endian at `realtime.audio.PCM_RATE` (24 kHz), any length of whole samples.
    """

    pcm16: bytes


Inbound: TypeAlias = ClientEvent | Undecodable | PeerAudio


@dataclass(frozen=True)
class Ending:
    """How a session ended: the close code and reason to send (if the transport can still take them)."""

    code: int
    reason: str = ""


@dataclass(frozen=True)
class OutputAudio:
    """One piece of a response's output audio, ready for the peer (at most ``--max-delta-ms`` long).

    Attributes:
        ids: response, item, output and content index the audio belongs to.
        wire: the audio in ``fmt`` (the response's output format).
        fmt: its format.
        events: the connection's event builder (for `delta_text`).
    """

    ids: PartIds
    wire: bytes
    fmt: AudioFormat
    events: EventBuilder

    @property
    def samples(self) -> int:
        """Length in samples at 24 kHz (the unit of ``Item.audio_samples``)."""
        return len(self.wire) // self.fmt.bytes_per_sample * PCM_RATE // self.fmt.sample_rate

    @property
    def size_chars(self) -> int:
        """Characters of `delta_text`, known without encoding it (the outbox counts them)."""
        return 4 * math.ceil(len(self.wire) / 3) + AUDIO_DELTA_ENVELOPE_CHARS

    @cached_property
    def delta_text(self) -> str:
        """The ``response.output_audio.delta`` frame that carries this audio over an event-only transport.

        Built on first use: a transport that plays the audio itself never pays for it.
        """
        delta = base64.b64encode(self.wire).decode("ascii")
        return encode(self.events.audio_delta(self.ids, delta))


class Playback(Protocol):
    """Output audio that a transport plays out to the peer itself, in real time (WebRTC's media track).

    Event loop only. Audio counts from `Transport.send_audio`, in order.
    """

    def played_ms(self, item_id: str) -> int:
        """Milliseconds of ``item_id``'s audio the peer has heard so far (0 if none).

        Reliable for the item whose audio was handed over last; a transport may forget older items.
        """
        ...

    def pending_ms(self) -> int:
        """Milliseconds of audio handed to the transport and not yet played (0 once it has all played)."""
        ...

    def clear(self) -> None:
        """Drop every piece of audio not yet played (barge-in, ``output_audio_buffer.clear``)."""
        ...

    async def drained(self) -> None:
        """Return once nothing handed to the transport is left to play (at once after `clear`)."""
        ...


class Transport(Protocol):
    """One connection's I/O as the session core sees it (event loop only).

    ``send_event`` and ``send_audio`` are awaited one at a time by the connection's sender, in outbox order;
    the sender bounds each with ``--send-timeout``. ``receive`` is awaited by the receive loop only.
    """

    @property
    def playback(self) -> Playback | None:
        """Where the peer is in the output audio, when this transport plays it out itself; else None."""
        ...

    async def receive(self) -> Inbound | None:
        """The next message from the peer, or None once the peer has left (or the transport closed)."""
        ...

    async def send_event(self, text: str) -> None:
        """Send one encoded server event.

        Raises:
            PeerGone: the peer has left (or the transport broke).
        """
        ...

    async def send_audio(self, audio: OutputAudio) -> None:
        """Deliver one piece of output audio: waits while the transport has no room for it.

        Raises:
            PeerGone: the peer has left (or the transport broke).
        """
        ...

    async def close(self, ending: Ending) -> None:
        """End the connection with ``ending`` if the peer can still be told; never waits long, never raises."""
        ...
