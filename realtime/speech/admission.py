"""Who may start speaking: one admission path for every spoken answer, by memory and by real-time capacity.

Every spoken answer (a Realtime or WebRTC response, an HTTP speech request, a spoken chat answer) holds one
Token2Wav stream from its start to its end, and its listener needs one second of audio per wall second from
the shared decoder. `DecoderAdmission` lets a new one start only when both hold with it:

* **memory**: fewer than ``limit`` streams live (``--max-decoder-streams``, or ``--decoder-memory-mb`` / one
  stream's measured state);
* **real time**: the streams speaking plus the new one stay within the decoder's capacity with headroom:
  ``demand <= capacity(speaking + 1) * (1 - headroom)``, where ``capacity(n)`` is the audio seconds per wall
  second the worker serves with n streams (measured, `InferenceWorker.capacity`) and ``demand`` counts one
  audio second per second for each stream, plus ``START_EXTRA`` (1) for each stream admitted in the last
  ``START_WINDOW_S`` (the new one included). A starting stream needs more than 1x: its short first chunk
  (~0.25 s of audio) leaves its listener little slack before the second must be decoded, and answers that
  start together all want their first two chunks at once (measured: 12 sessions starting together on the
  embedded 2-core decoder underran at their first two chunks while the decoder's steady capacity was ~19
  streams). With nothing speaking a response is always admitted: one listener can always be served as well
  as this decoder can.

A response that cannot start waits in line (first come, first served) for at most ``wait_s``, then is refused
(its caller sends ``decoder_capacity_reached``). The line moves when a stream ends and, because the capacity is
re-measured on every batch, on a short re-check interval. An admitted stream is never revoked: once it speaks
its chunks keep their deadlines, because nothing is admitted that would push the decoder past its capacity.

Event loop only (the capacity function may read a thread-safe cost model). Figures go to `Metrics`: streams
live, queued, the capacity and load in audio seconds per second, queue time of admitted answers, refusals.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from realtime.metrics import Metrics

DEFAULT_HEADROOM = 0.2  # keep 20% of the measured capacity spare: the cost estimate moves with the load
RECHECK_S = 0.05  # how often a waiting answer re-reads the capacity (it is re-measured on every batch)
DECODER = "decoder"  # the admission_waiting label
START_EXTRA = 1.0  # extra audio s/s a starting stream is counted for (so a starting stream counts 2x)
START_WINDOW_S = 1.0  # how long a stream counts as starting: its first two chunks are decoded by then

Capacity = Callable[[int], float | None]
"""Audio seconds per wall second the decoder serves with N streams speaking; None before any measurement."""


class DecoderAdmission:
    """The server-wide gate for spoken answers (module docstring). Event loop only.

    Args:
        limit: streams allowed at once by memory (>= 1).
        capacity: the decoder's measured capacity by number of streams; None: no real-time bound (tests).
        headroom: share of the capacity kept spare, in [0, 1).
        start_extra: extra audio s/s a stream is counted for while it starts (`START_EXTRA`).
        metrics: where the figures go (optional).
        clock: monotonic seconds of the start-up windows (tests); waits use the event loop's clock.

    Attributes:
        limit: streams allowed at once by memory.
        live: streams admitted and not released.
        admitted: answers admitted since start.
        refused: answers refused since start.
    """

    def __init__(
        self,
        limit: int,
        capacity: Capacity | None = None,
        *,
        headroom: float = DEFAULT_HEADROOM,
        start_extra: float = START_EXTRA,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError("the decoder stream limit must be >= 1")
        if not 0.0 <= headroom < 1.0:
            raise ValueError("headroom must be in [0, 1)")
        self.limit = limit
        self.live = 0
        self.admitted = 0
        self.refused = 0
        self._capacity = capacity
        self._headroom = headroom
        self._start_extra = start_extra
        self._metrics = metrics
        self._clock = clock
        self._line: deque[asyncio.Future[None]] = deque()
        self._starts: deque[float] = deque()  # admission times within START_WINDOW_S
        if metrics is not None:
            metrics.watch_decoder(self)

    @property
    def waiting(self) -> int:
        """Answers waiting in line now."""
        return sum(1 for future in self._line if not future.done())

    @property
    def saturated(self) -> bool:
        """Answers are waiting: the decoder is full (readiness reports it)."""
        return self.waiting > 0

    def capacity_now(self) -> float | None:
        """The decoder's capacity (audio s/s) at the current number of streams (at least one)."""
        return None if self._capacity is None else self._capacity(max(self.live, 1))

    def has_room(self) -> bool:
        """One more stream fits the memory limit and the real-time budget now."""
        if self.live >= self.limit:
            return False
        if self.live == 0 or self._capacity is None:
            return True
        capacity = self._capacity(self.live + 1)
        if capacity is None:  # not measured yet (warm-up measures it): memory decides alone
            return True
        demand = self.live + 1 + self._start_extra * (self.starting + 1)
        return demand <= capacity * (1.0 - self._headroom)

    @property
    def starting(self) -> int:
        """Streams admitted within the last `START_WINDOW_S` (counted with ``start_extra`` more)."""
        horizon = self._clock() - START_WINDOW_S
        while self._starts and self._starts[0] < horizon:
            self._starts.popleft()
        return len(self._starts)

    async def acquire(self, wait_s: float) -> bool:
        """Admit one stream, waiting in line at most ``wait_s``; False when it was refused.

        Give an admitted stream back with `release`. A caller cancelled while waiting leaves the line (and
        gives back a stream handed to it meanwhile).
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        if not self._line and self.has_room():
            self.live += 1
            self.admitted += 1
            self._starts.append(self._clock())
            if self._metrics is not None:
                self._metrics.observe_decoder_queue(0.0)
            return True
        ticket: asyncio.Future[None] = loop.create_future()
        self._line.append(ticket)
        if self._metrics is not None:
            self._metrics.admission_waiting(DECODER, 1)
        try:
            deadline = started + wait_s
            while not ticket.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                await asyncio.wait({ticket}, timeout=min(remaining, RECHECK_S))
                self._serve_line()
            if ticket.done():
                if self._metrics is not None:
                    self._metrics.observe_decoder_queue(loop.time() - started)
                return True
            ticket.cancel()
            self._forget(ticket)
            self.refused += 1
            if self._metrics is not None:
                self._metrics.decoder_refused()
            return False
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled():
                self.release()  # admitted as we were cancelled: pass it on
            else:
                ticket.cancel()
                self._forget(ticket)
            raise
        finally:
            if self._metrics is not None:
                self._metrics.admission_waiting(DECODER, -1)

    def release(self) -> None:
        """Give a stream back; the line moves."""
        self.live = max(0, self.live - 1)
        self._serve_line()

    def _serve_line(self) -> None:
        """Admit from the head of the line while there is room."""
        while self._line:
            head = self._line[0]
            if head.done():  # left the line (refused or cancelled)
                self._line.popleft()
                continue
            if not self.has_room():
                return
            self._line.popleft()
            self.live += 1
            self.admitted += 1
            self._starts.append(self._clock())
            head.set_result(None)

    def _forget(self, ticket: asyncio.Future[None]) -> None:
        if ticket in self._line:
            self._line.remove(ticket)
        self._serve_line()  # the head may have been this one


def decoder_busy_message(gate: DecoderAdmission, waited_s: float) -> str:
    """The ``decoder_capacity_reached`` message every door sends (one wording for all)."""
    return (
        f"The speech decoder is at its capacity ({gate.live} answers speaking, at most {gate.limit}) and no "
        f"room came free within {waited_s:g} s; no response was started. Try again shortly."
    )
