"""pipecat's ``OpenAIRealtimeLLMService`` in a pipecat pipeline against the server.

Usage: ``python pipecat_realtime.py MAIN_WS TOOLS_WS SLOW_WS WAV`` (WebSocket URLs of ``/v1/realtime``: the main
app, the app whose replies end with a ``get_weather`` call, and a slowly streaming server). The service runs as
pipecat runs it: ``LLMContextAggregatorPair`` around the service in a ``PipelineTask`` (no transport: frames
are queued into the task and collected after the service). Scenes:

- ``main``: the context's user message, answered in audio; then ``retrieve_conversation_item`` of an id that
  does not exist (pipecat fails only that call on OpenAI's ``item_retrieve_invalid_item_id``; any other code
  stops its receive loop); then a camera frame (``InputImageRawFrame``, sent as an ``input_image`` part); then
  speech frames through server VAD, answered with the user's transcript: the session lived through both;
- ``tool``: the model calls ``get_weather``; pipecat runs the handler and sends the output back;
- ``barge_in``: speech while a slow response plays: the server cancels it (``turn_detected``) and pipecat
  truncates what was heard.

Every server frame is recorded off pipecat's own socket; the report counts ``error`` events, events pipecat's
models could not parse, and whether its receive loop is still running at the end of each scene.
"""

from __future__ import annotations

import asyncio
import json
import sys
from importlib.metadata import version
from typing import Any

from _common import GUARD_S, EventLog, Report, read_wav, recorded
from _pipecat import RATE, PipelineRun
from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InputImageRawFrame,
    LLMRunFrame,
    TTSAudioRawFrame,
)
from pipecat.pipeline.task import PipelineParams
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import FunctionCallParams
from pipecat.services.openai.realtime import events
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService

MODEL = "step-audio-2-mini"
TOOL_CALLS: list[str] = []
MISSING_ITEM = "item_missing"
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}},
}


class Service(OpenAIRealtimeLLMService):
    """The pipecat service with its socket recorded."""

    scene: Scene

    async def _connect(self) -> None:
        await super()._connect()
        self._websocket = recorded(self._websocket, self.scene.received)

    def receive_loop_alive(self) -> bool:
        return self._receive_task is not None and not self._receive_task.done()


class Collector(FrameProcessor):
    """Counts the audio pipecat pushes downstream (what a transport would play)."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_bytes = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            self.audio_bytes += len(frame.audio)
        await self.push_frame(frame, direction)


class Scene:
    """One pipeline and its service, with the server events it received."""

    def __init__(self, url: str, report: Report, name: str, *, tools: bool = False) -> None:
        self.report, self.name = report, name
        # pipecat's retrieve of a missing id (it sends event_id "rci_<id>")
        self.log = EventLog(report, name, provoked=(f"rci_{MISSING_ITEM}",))
        self.events = self.log.events
        self.until, self.count = self.log.until, self.log.count
        properties = events.SessionProperties(
            instructions="Be brief.",
            audio=events.AudioConfiguration(
                input=events.AudioInput(transcription=events.InputAudioTranscription(model=MODEL)),
                output=events.AudioOutput(voice="marin"),
            ),
            tools=[WEATHER_TOOL] if tools else None,
        )
        settings = OpenAIRealtimeLLMService.Settings(model=MODEL, session_properties=properties)
        self.service = Service(api_key="unused", base_url=url, settings=settings)
        self.service.scene = self
        if tools:
            self.service.register_function("get_weather", _get_weather)
        self.context = LLMContext(messages=[{"role": "user", "content": "Say hello."}])
        pair = LLMContextAggregatorPair(self.context)
        self.collector = Collector()
        params = PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE)
        self.run = PipelineRun([pair.user(), self.service, self.collector, pair.assistant()], params)
        self.task = self.run.task

    async def received(self, event: dict[str, Any]) -> None:
        if event.get("type") in _PARSED and events.parse_server_event(json.dumps(event)) is None:
            self.report.validation_errors.append(f"{self.name}: {event.get('type')}")
        await self.log.record(event)

    async def speak(self, pcm: bytes, silence_s: float = 1.0) -> None:
        """Queue speech then silence as 20 ms input frames, faster than real time, in order."""
        await self.run.speak(pcm, silence_s)

    async def close(self) -> None:
        self.report.checks[f"{self.name}_receive_loop_alive"] = self.service.receive_loop_alive()
        await self.run.stop()


# pipecat 1.14 parses these into its own models (others it skips on purpose)
_PARSED = frozenset(
    {
        "session.created",
        "session.updated",
        "response.created",
        "response.done",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.retrieved",
        "error",
    }
)


async def _get_weather(params: FunctionCallParams) -> None:
    TOOL_CALLS.append(params.arguments.get("city", ""))
    await params.result_callback({"weather": "sunny", "degrees": 21})


def _done(event: dict[str, Any]) -> bool:
    return event["type"] == "response.done"


async def main_scene(url: str, pcm: bytes, report: Report) -> None:
    scene = Scene(url, report, "main")
    try:
        await scene.task.queue_frame(LLMRunFrame())
        first = await scene.until(_done)
        report.checks["text_status"] = first["response"]["status"]
        report.checks["text_voice"] = first["response"]["audio"]["output"]["voice"]
        report.checks["text_audio_bytes"] = scene.collector.audio_bytes
        try:
            await asyncio.wait_for(scene.service.retrieve_conversation_item(MISSING_ITEM), GUARD_S)
            report.checks["retrieve_missing"] = "answered"
        except Exception as exc:  # pipecat fails the future with the server's message
            report.checks["retrieve_missing"] = f"raised: {exc}"
        report.checks["retrieve_missing_loop_alive"] = scene.service.receive_loop_alive()
        image = bytes(64 * 48 * 3)
        mark = len(scene.events)
        await scene.task.queue_frame(InputImageRawFrame(image=image, size=(64, 48), format="RGB"))
        added = await scene.until(
            lambda e: (
                e["type"] == "conversation.item.added"
                and any(p.get("type") == "input_image" for p in e["item"].get("content", []))
            ),
            mark,
        )
        report.checks["video_frame_item"] = added["item"]["content"]
        mark = len(scene.events)  # the session still answers: a spoken turn through server VAD
        await scene.speak(pcm)
        done = await scene.until(_done, mark)
        report.checks["audio_status"] = done["response"]["status"]
        completed = await scene.until(
            lambda e: e["type"] == "conversation.item.input_audio_transcription.completed", mark
        )
        report.checks["audio_transcript"] = completed["transcript"]
        report.checks["audio_speech_started"] = scene.count("input_audio_buffer.speech_started")
    finally:
        await scene.close()


async def tool_scene(url: str, report: Report) -> None:
    scene = Scene(url, report, "tool", tools=True)
    try:
        await scene.task.queue_frame(LLMRunFrame())
        await scene.until(lambda e: e["type"] == "response.function_call_arguments.done")
        output = await scene.until(
            lambda e: e["type"] == "conversation.item.added" and e["item"]["type"] == "function_call_output"
        )
        report.checks["tool_calls"] = list(TOOL_CALLS)
        report.checks["tool_output"] = output["item"]["output"]
    finally:
        await scene.close()


async def barge_in_scene(url: str, pcm: bytes, report: Report) -> None:
    scene = Scene(url, report, "barge_in")
    try:
        await scene.task.queue_frame(LLMRunFrame())
        await scene.until(lambda e: e["type"] == "response.output_audio.delta")
        await scene.speak(pcm)
        cancelled = await scene.until(_done)
        report.checks["barge_in_status"] = cancelled["response"]["status"]
        report.checks["barge_in_reason"] = (cancelled["response"].get("status_details") or {}).get("reason")
        await scene.until(_done, scene.events.index(cancelled) + 1)  # the reply to what the user said
        report.checks["barge_in_truncated"] = scene.count("conversation.item.truncated")
    finally:
        await scene.close()


async def main(main_ws: str, tools_ws: str, slow_ws: str, wav_path: str) -> None:
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    report = Report(client={"pipecat-ai": version("pipecat-ai"), "openai": version("openai")})
    pcm, rate = read_wav(wav_path)
    assert rate == RATE, "the speech file must be 24 kHz"
    await main_scene(main_ws, pcm, report)
    await tool_scene(tools_ws, report)
    await barge_in_scene(slow_ws, pcm, report)
    report.emit()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
