"""pipecat's ``OpenAIRealtimeSTTService`` in a pipecat pipeline, transcribing a WAV file end to end.

Usage: ``python pipecat_stt.py MAIN_WS WAV`` (the WebSocket URL of ``/v1/realtime``). The service runs as pipecat
runs it: in a ``PipelineTask``, fed ``InputAudioRawFrame``s (no transport: frames are queued into the task), its
``TranscriptionFrame``s and ``InterimTranscriptionFrame``s collected after it. It connects with
``?intent=transcription``, waits for ``session.created``, sends its ``session.update`` (``type:
"transcription"``) and streams ``input_audio_buffer.append``. Scenes, each its own session:

- ``local_vad``: pipecat's default (``turn_detection: null``): a local VAD in the pipeline says when the user
  stopped speaking (here its ``VADUserStartedSpeakingFrame`` / ``VADUserStoppedSpeakingFrame`` are queued around
  the speech), and the service commits the buffer on the stop;
- ``server_vad``: ``turn_detection: {"type": "server_vad"}``: the server detects the turn and commits it.

Every server frame is recorded off pipecat's own socket; the report lists ``error`` events (pipecat treats every
one as fatal and reconnects) and what each scene transcribed.
"""

from __future__ import annotations

import asyncio
import sys
from importlib.metadata import version
from typing import Any

from _common import GUARD_S, EventLog, Report, read_wav, recorded
from _pipecat import RATE, PipelineRun
from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.task import PipelineParams
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.stt import OpenAIRealtimeSTTService

COMPLETED = "conversation.item.input_audio_transcription.completed"


class Service(OpenAIRealtimeSTTService):
    """The pipecat service with its socket recorded."""

    log: EventLog

    async def _connect_websocket(self) -> None:
        await super()._connect_websocket()
        self._websocket = recorded(self._websocket, self.log.record)


class Collector(FrameProcessor):
    """Keeps the transcription frames pipecat pushes downstream (what an LLM aggregator would read)."""

    def __init__(self) -> None:
        super().__init__()
        self.finals: list[str] = []
        self.interims: list[str] = []
        self.got_final = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            self.finals.append(frame.text)
            self.got_final.set()
        elif isinstance(frame, InterimTranscriptionFrame):
            self.interims.append(frame.text)
        await self.push_frame(frame, direction)


class Scene:
    """One pipeline around one service, with the server events its socket received."""

    def __init__(self, url: str, report: Report, name: str, turn_detection: dict[str, Any] | bool) -> None:
        self.report, self.name = report, name
        self.log = EventLog(report, name)
        settings = OpenAIRealtimeSTTService.Settings(noise_reduction="near_field")
        self.service = Service(
            api_key="unused", base_url=url, settings=settings, turn_detection=turn_detection
        )
        self.service.log = self.log
        self.collector = Collector()
        self.run = PipelineRun([self.service, self.collector], PipelineParams(audio_in_sample_rate=RATE))
        self.task = self.run.task

    async def transcribed(self) -> dict[str, Any]:
        """Wait for the turn's ``completed`` and for pipecat's ``TranscriptionFrame`` of it."""
        completed = await self.log.until(lambda e: e["type"] == COMPLETED)
        async with asyncio.timeout(GUARD_S):
            await self.collector.got_final.wait()
        return completed

    async def close(self) -> None:
        receive = self.service._receive_task
        self.report.checks[f"{self.name}_receive_loop_alive"] = receive is not None and not receive.done()
        self.report.checks[f"{self.name}_events"] = [
            e["type"] for e in self.log.events if "delta" not in e["type"]
        ]
        await self.run.stop()


async def local_vad_scene(url: str, pcm: bytes, report: Report) -> None:
    scene = Scene(url, report, "local_vad", turn_detection=False)
    try:
        updated = await scene.log.until(lambda e: e["type"] == "session.updated")
        report.checks["local_vad_session"] = updated["session"]
        await scene.task.queue_frame(VADUserStartedSpeakingFrame())
        await scene.run.speak(pcm, silence_s=0.3)
        await scene.task.queue_frame(VADUserStoppedSpeakingFrame(stop_secs=0.3))
        completed = await scene.transcribed()
        report.checks["local_vad_transcript"] = completed["transcript"]
        report.checks["local_vad_frames"] = list(scene.collector.finals)
        report.checks["local_vad_interims"] = len(scene.collector.interims)
    finally:
        await scene.close()


async def server_vad_scene(url: str, pcm: bytes, report: Report) -> None:
    scene = Scene(
        url, report, "server_vad", turn_detection={"type": "server_vad", "silence_duration_ms": 500}
    )
    try:
        await scene.log.until(lambda e: e["type"] == "session.updated")
        await scene.run.speak(pcm, silence_s=1.2)
        completed = await scene.transcribed()
        report.checks["server_vad_transcript"] = completed["transcript"]
        report.checks["server_vad_frames"] = list(scene.collector.finals)
        report.checks["server_vad_speech_started"] = scene.log.count("input_audio_buffer.speech_started")
    finally:
        await scene.close()


async def main(url: str, wav_path: str) -> None:
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    report = Report(client={"pipecat-ai": version("pipecat-ai")})
    pcm, rate = read_wav(wav_path)
    assert rate == RATE, "the speech file must be 24 kHz"
    await local_vad_scene(url, pcm, report)
    await server_vad_scene(url, pcm, report)
    report.emit()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:3]))
