"""The server's audio track of a call: output audio played out in real time, 20 ms at a time, at 48 kHz.

`PlayoutTrack` is an aiortc ``MediaStreamTrack``: aiortc's RTP sender awaits `PlayoutTrack.recv` for each next
frame and encodes it with Opus. Responses hand their audio over as fast as it is decoded (`play`); the track
resamples it to 48 kHz (the project's `StreamResampler`, FFmpeg's libswresample), queues it, and releases one
20 ms frame per 20 ms of wall clock, silence when nothing is queued. So the server knows what the peer has
heard at every moment (within the peer's jitter buffer): it is the session's `Playback`
(realtime/session/transport.py):

- `played_ms`: milliseconds of an item's audio handed to the encoder so far;
- `pending_ms`: what is queued and not yet played;
- `clear`: drop everything queued (barge-in, ``output_audio_buffer.clear``);
- `drained`: returns once nothing is queued (``output_audio_buffer.stopped``).

A response's first audio waits `START_CUSHION_MS` before it plays, as the demo page's player and the bench's
simulated player do: the decoder delivers a response's first chunk and then the next ones at real time with
little slack, and a player that starts at once goes silent whenever one chunk comes a little late; 100 ms
later, the same audio plays without a break (an underrun is worse than the wait, issue 27).

Memory is bounded: `play` waits while more than ``max_pending_ms`` are queued (the queue drains at 1x, so the
wait is at most one piece's length). Event loop only; aiortc runs the Opus encoder in its executor.
"""

from __future__ import annotations

import asyncio
import fractions
from collections import OrderedDict, deque
from dataclasses import dataclass

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from realtime.audio import PCM16_WIDTH, StreamResampler, float_to_pcm16, pcm16_to_float, wire_to_pcm16
from realtime.session.transport import OutputAudio

PLAYOUT_RATE = 48_000  # Opus' native rate: aiortc's encoder takes it without resampling again
FRAME_MS = 20
FRAME_SAMPLES = PLAYOUT_RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * PCM16_WIDTH
BYTES_PER_MS = PLAYOUT_RATE * PCM16_WIDTH // 1000
START_CUSHION_MS = 100  # a new item's audio waits this long after it arrives before it plays
MAX_PENDING_MS = 60_000  # queued audio before `play` waits: a minute of a long answer, ~2.9 MB
MAX_LAG_S = 0.2  # a sender this far behind the clock (a stalled loop) restarts the clock instead of bursting
REMEMBERED_ITEMS = 8  # items whose played time is kept (the session asks about the last one)
_TIME_BASE = fractions.Fraction(1, PLAYOUT_RATE)


@dataclass
class _Segment:
    """Queued bytes of one item, in queue order."""

    item_id: str
    size: int


class PlayoutTrack(MediaStreamTrack):
    """The call's outgoing audio track and the session's `Playback` of it (event loop only).

    Args:
        max_pending_ms: queued audio above which `play` waits for the clock to drain it.
        start_cushion_ms: how long a new item's first audio waits before it plays (module docstring).
    """

    kind = "audio"

    def __init__(
        self, max_pending_ms: int = MAX_PENDING_MS, start_cushion_ms: int = START_CUSHION_MS
    ) -> None:
        super().__init__()
        self._max_pending = max_pending_ms * BYTES_PER_MS
        self._cushion_s = start_cushion_ms / 1000
        self._hold_until = 0.0  # loop time before which a new item's queued audio is not played
        self._queue = bytearray()
        self._segments: deque[_Segment] = deque()
        self._played: OrderedDict[str, int] = OrderedDict()  # item id -> bytes at 48 kHz handed out
        self._resampler: StreamResampler | None = None
        self._drained = asyncio.Event()
        self._drained.set()
        self._room = asyncio.Event()
        self._room.set()
        self._clock: float | None = None  # loop time of frame 0
        self._frames = 0  # frames returned so far
        self.frames_with_audio = 0  # frames that carried queued audio (for tests and logs)

    # what the session hands over ---------------------------------------------------------------------------
    async def play(self, audio: OutputAudio) -> None:
        """Queue one piece of output audio; waits while the queue is full.

        Raises:
            MediaStreamError: the track was stopped (the call ended).
        """
        while len(self._queue) >= self._max_pending and self.readyState == "live":
            self._room.clear()
            await self._room.wait()
        if self.readyState != "live":
            raise MediaStreamError
        pcm = self._to_playout_rate(wire_to_pcm16(audio.wire, audio.fmt, "audio"), audio.fmt.sample_rate)
        if not pcm:
            return
        item_id = audio.ids.item_id
        if self._segments and self._segments[-1].item_id == item_id:
            self._segments[-1].size += len(pcm)
        else:
            if not self._queue and item_id not in self._played:  # a new item starts on an idle track
                self._hold_until = asyncio.get_running_loop().time() + self._cushion_s
            self._segments.append(_Segment(item_id, len(pcm)))
        self._queue += pcm
        self._drained.clear()

    def _to_playout_rate(self, pcm: bytes, rate: int) -> bytes:
        if self._resampler is None or self._resampler.src_rate != rate:
            self._resampler = StreamResampler(rate, PLAYOUT_RATE)
        return float_to_pcm16(self._resampler.process(pcm16_to_float(pcm)))

    # Playback ----------------------------------------------------------------------------------------------
    def played_ms(self, item_id: str) -> int:
        """Milliseconds of ``item_id``'s audio handed to the encoder (0 if none, or forgotten)."""
        return self._played.get(item_id, 0) // BYTES_PER_MS

    def pending_ms(self) -> int:
        """Milliseconds of audio queued and not yet played."""
        return len(self._queue) // BYTES_PER_MS

    def clear(self) -> None:
        """Drop every queued piece (and the resampler's tail of it); the clock keeps running with silence."""
        self._hold_until = 0.0
        self._queue.clear()
        self._segments.clear()
        self._resampler = None
        self._drained.set()
        self._room.set()

    async def drained(self) -> None:
        """Return once nothing is queued (at once after `clear`, or once the track is stopped)."""
        await self._drained.wait()

    # aiortc's side -----------------------------------------------------------------------------------------
    async def recv(self) -> av.AudioFrame:
        """The next 20 ms frame, due one frame after the previous one: queued audio, else silence.

        Raises:
            MediaStreamError: the track was stopped.
        """
        if self.readyState != "live":
            raise MediaStreamError
        now = asyncio.get_running_loop().time()
        if self._clock is None:
            self._clock = now
        due = self._clock + self._frames * FRAME_MS / 1000
        if due > now:
            await asyncio.sleep(due - now)
            if self.readyState != "live":
                raise MediaStreamError
        elif now - due > MAX_LAG_S:
            self._clock = now - self._frames * FRAME_MS / 1000
        return self._next_frame(holding=asyncio.get_running_loop().time() < self._hold_until)

    def _next_frame(self, holding: bool = False) -> av.AudioFrame:
        chunk = b"" if holding else bytes(self._queue[:FRAME_BYTES])
        del self._queue[: len(chunk)]
        self._account(len(chunk))
        if chunk:
            self.frames_with_audio += 1
        if not self._queue:
            self._drained.set()
        if len(self._queue) < self._max_pending:
            self._room.set()
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(chunk + bytes(FRAME_BYTES - len(chunk)))
        frame.sample_rate = PLAYOUT_RATE
        frame.time_base = _TIME_BASE
        frame.pts = self._frames * FRAME_SAMPLES
        self._frames += 1
        return frame

    def _account(self, size: int) -> None:
        """Count ``size`` bytes from the head of the queue as played, item by item."""
        while size > 0 and self._segments:
            head = self._segments[0]
            step = min(size, head.size)
            self._played[head.item_id] = self._played.get(head.item_id, 0) + step
            self._played.move_to_end(head.item_id)
            head.size -= step
            size -= step
            if head.size == 0:
                self._segments.popleft()
        while len(self._played) > REMEMBERED_ITEMS:
            self._played.popitem(last=False)

    def stop(self) -> None:
        """End the track: aiortc's sender stops; nobody waits for playback any more."""
        super().stop()
        self.clear()
