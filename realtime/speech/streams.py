"""A first-come-first-served counting gate with a bounded wait, and the memory-sized stream limit.

`StreamSlots` admits at most ``limit`` holders; one that finds none free waits briefly and is then refused, so
a burst queues for a moment instead of exhausting memory. The transcription cap uses it
(realtime/speech/transcribe.py). Spoken answers pass `realtime.speech.admission.DecoderAdmission` instead (a
memory slot sized by `auto_stream_limit` and real-time room): every spoken response holds one Token2Wav stream
state from its start to its end (~0.8-0.9 GB at full size on the reference model, a few MB for the embedded
tiny one).
"""

from __future__ import annotations

import asyncio
from collections import deque

MIN_AUTO_STREAMS = 1


def auto_stream_limit(stream_bytes: int, budget_bytes: int, ceiling: int) -> int:
    """How many streams of ``stream_bytes`` fit ``budget_bytes``: at least 1, at most ``ceiling``."""
    fit = budget_bytes // max(stream_bytes, 1)
    return max(MIN_AUTO_STREAMS, min(fit, ceiling))


class StreamSlots:
    """A counting gate (event loop only). Waiters are served first come, first
    served; `release` hands the slot straight to the oldest waiter.

    Attributes:
        limit: streams allowed at once.
        live: streams held now.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the decoder stream limit must be >= 1")
        self.limit = limit
        self.live = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self, wait_seconds: float) -> bool:
        """Take a slot, waiting at most ``wait_seconds`` for one; False when none came free in time."""
        if self.live < self.limit and not self._waiters:
            self.live += 1
            return True
        handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(handed)
        try:
            async with asyncio.timeout(wait_seconds):
                await handed
            return True
        except TimeoutError:
            return self._keep_if_handed(handed)
        except asyncio.CancelledError:
            if self._keep_if_handed(handed):
                self.release()  # handed over as we were cancelled: give it on
            raise

    def release(self) -> None:
        """Give a slot back: to the oldest waiter if there is one."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on; `live` is unchanged
                return
        self.live -= 1

    def _keep_if_handed(self, handed: asyncio.Future[None]) -> bool:
        if handed.done() and not handed.cancelled():
            return True
        handed.cancel()
        if handed in self._waiters:
            self._waiters.remove(handed)
        return False
