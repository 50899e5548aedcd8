"""The input audio buffer of one session and its server-VAD turn detector (event loop side).

Appended wire audio (session input format) accumulates here until it is committed (by the client, or by the
VAD at the end of a turn). With server VAD on, audio outside speech is trimmed to the prefix padding, so an
idle session holds bounded audio; the buffer never grows past `MAX_BUFFER_SECONDS`.
"""

from __future__ import annotations

import asyncio

from realtime.audio import PCM_RATE, AudioFormat, encode_output, wire_to_pcm16
from realtime.errors import CODE_BUFFER_FULL, ProtocolViolation
from realtime.session.vad import TurnDetector, VadEvent
from realtime.wire.session_config import TurnDetection

MAX_BUFFER_SECONDS = 600  # push-to-talk buffer cap; beyond it appends are refused
MS_PER_SECOND = 1000


class InputAudioBuffer:
    """Buffered input audio plus the VAD that watches it. Event loop only.

    Attributes:
        speech_item_id: the item id announced by ``speech_started``, used by the commit that ends the turn.
    """

    def __init__(self, fmt: AudioFormat) -> None:
        self._fmt = fmt
        self._buffer = bytearray()
        self._total_ms = 0.0  # session audio time appended so far
        self._detector: TurnDetector | None = None
        self._settings: TurnDetection | None = None
        self.speech_item_id: str | None = None

    def configure(self, settings: TurnDetection | None, fmt: AudioFormat) -> None:
        """Apply the session's turn detection and input format (a new detector; the buffer is kept)."""
        self._fmt, self._settings = fmt, settings
        start_ms = round(self._total_ms)
        self._detector = None if settings is None else TurnDetector(settings, fmt, start_ms=start_ms)
        self.speech_item_id = None

    @property
    def total_ms(self) -> float:
        """Session audio time: milliseconds of audio appended since the session started."""
        return self._total_ms

    @property
    def buffered_ms(self) -> float:
        """Milliseconds of audio in the buffer."""
        return self._ms(len(self._buffer))

    async def append(self, wire: bytes) -> list[VadEvent]:
        """Add wire audio; return the VAD's speech start/stop events (none without server VAD).

        Raises:
            ProtocolViolation: not whole samples, or the buffer is full.
        """
        wire_to_pcm16(wire, self._fmt, "audio")  # validates whole samples
        after_ms = self._ms(len(self._buffer) + len(wire))
        if after_ms > MAX_BUFFER_SECONDS * MS_PER_SECOND:  # checked with the new audio included
            raise ProtocolViolation(
                CODE_BUFFER_FULL,
                f"This append would bring the input audio buffer to {after_ms / MS_PER_SECOND:.1f} s; the "
                f"maximum is {MAX_BUFFER_SECONDS} s: commit or clear it first.",
                "audio",
            )
        self._buffer.extend(wire)
        self._total_ms += self._ms(len(wire))
        if self._detector is None:
            return []
        events = await self._detector.feed(wire)
        # outside speech only the prefix padding is kept; a turn that just ended keeps its audio for the
        # commit that follows (trimming it here would commit the last padding of silence instead)
        if not self._detector.speaking and not any(event.kind == "stop" for event in events):
            self._trim_to_padding()
        return events

    async def from_track(self, pcm16: bytes) -> bytes:
        """Audio from a media track (24 kHz PCM16, realtime/session/transport.py `PeerAudio`) in this buffer's
        format, ready for `append` (G.711 is resampled off the event loop)."""
        if self._fmt is AudioFormat.PCM16:
            return pcm16
        return await asyncio.to_thread(encode_output, pcm16, self._fmt, PCM_RATE)

    def take(self) -> bytes:
        """The buffered audio, leaving the buffer empty (a commit)."""
        audio = bytes(self._buffer)
        self._buffer.clear()
        return audio

    def peek(self) -> bytes:
        """A copy of the buffered audio; the buffer is unchanged (a commit that may still be refused)."""
        return bytes(self._buffer)

    def clear(self) -> None:
        """Drop the buffered audio (``input_audio_buffer.clear``)."""
        self._buffer.clear()

    def _ms(self, size: int) -> float:
        return size / self._fmt.bytes_per_sample * MS_PER_SECOND / self._fmt.sample_rate

    def _trim_to_padding(self) -> None:
        pad_ms = self._settings.prefix_padding_ms if self._settings is not None else 0
        keep = pad_ms * self._fmt.sample_rate // MS_PER_SECOND * self._fmt.bytes_per_sample
        excess = len(self._buffer) - keep
        if excess > 0:
            del self._buffer[:excess]
