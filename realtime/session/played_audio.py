"""What the peer heard, on a transport that plays the output audio itself (WebRTC): ``output_audio_buffer.*``.

A WebSocket client plays the audio it is sent whenever it likes, so the server can only count what it wrote;
a transport with a `Playback` (a media track paced in real time) knows what the peer has heard. `PlayedAudio`
follows the response whose audio is playing and tells the client, in OpenAI's WebRTC events:

- ``output_audio_buffer.started`` when a response's first audio is queued (right before it, in the outbox);
- ``output_audio_buffer.stopped`` once its ``response.done`` is out and the transport has played everything;
- `clear` drops what was not heard (barge-in, or the client's ``output_audio_buffer.clear``): the session
  then truncates the item at the played position and sends ``output_audio_buffer.cleared``.

Event loop only; the ``stopped`` waits are tasks of the connection's task group, cancelled by `close`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from realtime.session.outbox import Outbox
from realtime.session.response import ResponseRun
from realtime.session.transport import Playback
from realtime.wire.server_events import EventBuilder

MS_PER_SECOND = 1000


@dataclass(frozen=True)
class Cut:
    """Audio of ``run`` that was cleared before the peer heard it.

    Attributes:
        run: the response whose audio was playing.
        played_ms: milliseconds of its item's audio the peer heard.
    """

    run: ResponseRun
    played_ms: int


class PlayedAudio:
    """The session's view of a `Playback` (one per session).

    Args:
        playback: the transport's playback.
        events: the connection's event builder.
        outbox: the connection's outbox.
    """

    def __init__(self, playback: Playback, events: EventBuilder, outbox: Outbox) -> None:
        self._playback = playback
        self._events = events
        self._outbox = outbox
        self._playing: ResponseRun | None = None
        self._waits: set[asyncio.Task[None]] = set()

    @property
    def playing(self) -> ResponseRun | None:
        """The response whose audio the peer may still be hearing (None once stopped or cleared)."""
        return self._playing

    @property
    def pending_s(self) -> float:
        """Seconds of audio handed to the transport and not yet played."""
        return self._playback.pending_ms() / MS_PER_SECOND

    async def started(self, run: ResponseRun) -> None:
        """``run`` queues its first audio: ``output_audio_buffer.started`` goes out just before it."""
        self._playing = run
        await self._outbox.put(self._events.output_audio_buffer("started", run.record.id))

    def delivered(self, run: ResponseRun, tasks: asyncio.TaskGroup) -> None:
        """``run``'s ``response.done`` is out: ``stopped`` follows once the transport has played it all."""
        if self._playing is not run:
            return
        wait = tasks.create_task(self._stop_when_played(run), name=f"played {run.record.id}")
        self._waits.add(wait)
        wait.add_done_callback(self._waits.discard)

    async def _stop_when_played(self, run: ResponseRun) -> None:
        await self._playback.drained()
        if self._playing is run:  # not cleared, and no later response took over the track meanwhile
            self._playing = None
            await self._outbox.put(self._events.output_audio_buffer("stopped", run.record.id))

    def clear(self) -> Cut | None:
        """Drop the audio not yet heard: what is queued for the transport, and what the transport holds.

        Returns:
            what was playing and how much of it was heard; None when nothing was playing.
        """
        run, self._playing = self._playing, None
        played_ms = 0
        if run is not None and run.record.output:
            run.drop_audio()
            played_ms = self._playback.played_ms(run.record.output[0].id)  # before the transport forgets it
        self._playback.clear()
        return None if run is None or not run.record.output else Cut(run, played_ms)

    def close(self) -> None:
        """The session ends: stop waiting for playback to finish."""
        for wait in list(self._waits):
            wait.cancel()
