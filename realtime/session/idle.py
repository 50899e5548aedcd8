"""The server VAD's idle timeout (``turn_detection.idle_timeout_ms``): a one-shot timer per session.

GA semantics: the timer starts when the last response's audio has finished playing on the client (known where
the transport plays the audio itself; else estimated by `estimated_playback_left_s` as the time its first audio
was written plus the duration of the audio sent: clients play audio as it arrives), and fires ``idle_timeout_ms`` later unless the user starts speaking or another response starts
first. Firing is the session's business (``input_audio_buffer.timeout_triggered``, a commit of the silent
buffer, a response); this module only owns the timer task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from realtime.audio import PCM_RATE


class IdleTimer:
    """One pending timeout at a time, run as a task of the connection's task group (event loop only).

    Args:
        fire: awaited when the timeout expires; it must not raise (it runs in the connection's task group).
    """

    def __init__(self, fire: Callable[[], Awaitable[None]]) -> None:
        self._fire = fire
        self._task: asyncio.Task[None] | None = None

    @property
    def armed(self) -> bool:
        """True while a timeout is pending."""
        return self._task is not None

    def arm(self, tasks: asyncio.TaskGroup, delay_s: float) -> None:
        """(Re)start the timer: ``fire`` runs after ``delay_s`` seconds unless `disarm` comes first."""
        self.disarm()
        self._task = tasks.create_task(self._wait(max(delay_s, 0.0)), name="idle timeout")

    def disarm(self) -> None:
        """Cancel a pending timeout (speech started, a response started, the session ends)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _wait(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self._task = None  # from here on, a disarm from inside `fire` must not cancel this task
        await self._fire()


def estimated_playback_left_s(first_sent_at: float | None, samples: int, now: float) -> float:
    """Seconds until a client has played audio it is sent as it arrives: from the first piece written
    (``first_sent_at``, `time.perf_counter()`; None: nothing written) on, ``samples`` at 24 kHz."""
    if first_sent_at is None:
        return 0.0
    return max(first_sent_at + samples / PCM_RATE - now, 0.0)
