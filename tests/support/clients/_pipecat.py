"""Shared bits of the pipecat client programs: a pipeline run as pipecat runs it, with no transport.

Imported by the pipecat programs only (the other programs need not load pipecat).
"""

from __future__ import annotations

import asyncio

from _common import GUARD_S
from pipecat.frames.frames import InputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.frame_processor import FrameProcessor

RATE = 24_000
FRAME_MS = 20


class PipelineRun:
    """``processors`` in a ``PipelineTask`` run by a ``PipelineRunner``; the program queues the input frames a
    transport would (``task.queue_frame``).

    Attributes:
        task: the running task.
    """

    def __init__(self, processors: list[FrameProcessor], params: PipelineParams) -> None:
        self.task = PipelineTask(
            Pipeline(processors), params=params, idle_timeout_secs=None, enable_rtvi=False
        )
        self._runner = asyncio.create_task(PipelineRunner(handle_sigint=False).run(self.task))

    async def speak(self, pcm: bytes, silence_s: float) -> None:
        """Queue speech (24 kHz PCM16) then silence as 20 ms input frames, faster than real time, in order."""
        size = RATE * FRAME_MS // 1000 * 2
        audio = pcm + bytes(int(silence_s * RATE) * 2)
        for start in range(0, len(audio), size):
            frame = InputAudioRawFrame(audio=audio[start : start + size], sample_rate=RATE, num_channels=1)
            await self.task.queue_frame(frame)
            await asyncio.sleep(FRAME_MS / 1000 / 4)

    async def stop(self) -> None:
        """Cancel the task and wait (at most `GUARD_S`) for the runner to end."""
        await self.task.cancel()
        try:
            async with asyncio.timeout(GUARD_S):
                await self._runner
        except (TimeoutError, asyncio.CancelledError):
            pass
