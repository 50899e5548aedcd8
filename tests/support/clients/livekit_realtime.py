"""livekit-agents' OpenAI ``RealtimeModel`` session against the server.

Usage: ``python livekit_realtime.py HTTP_BASE TOOLS_HTTP_BASE SLOW_HTTP_BASE WAV`` (``http://127.0.0.1:PORT/v1`` of
the main app, of the app whose replies end with a ``get_weather`` call, and of a slowly streaming server). The
plugin's ``RealtimeModel.session()`` is driven directly, as an ``AgentSession`` drives it (``generate_reply``,
``push_audio``, ``push_video``, ``update_tools``, ``truncate``), without a LiveKit room. Scenes, each its own
session:

- ``main``: a text reply (``generate_reply``) streamed as audio; a camera frame (``push_video``, an
  ``input_image`` item); a ``conversation.item.delete`` and ``.retrieve`` of ids that do not exist (OpenAI's
  ``item_*_invalid_item_id``: LiveKit reports them as recoverable); then speech through server VAD, answered,
  with the user's transcript;
- ``tool``: the model calls ``get_weather`` (the plugin's ``function_stream``);
- ``barge_in``: speech while a slow reply plays: the server cancels it (``turn_detected``).

Every server event the plugin receives (its ``openai_server_event_received``) is recorded; the report counts
``error`` events other than the two provoked ones, and the plugin's own ``error`` emissions.
"""

from __future__ import annotations

import asyncio
import sys
from importlib.metadata import version
from typing import Any

from _common import GUARD_S, EventLog, Report, read_wav
from livekit import rtc
from livekit.agents import llm
from livekit.plugins.openai.realtime import RealtimeModel
from openai.types.realtime import AudioTranscription

MODEL = "step-audio-2-mini"
RATE = 24_000
FRAME_MS = 20
PROVOKED_EVENT_IDS = ("lk_delete_missing", "lk_retrieve_missing")


@llm.function_tool
async def get_weather(city: str, unit: str = "celsius") -> str:
    """The weather in a city."""
    return f"It is sunny in {city}, 21 degrees {unit}."


class Scene:
    """One plugin session and the server events it received."""

    def __init__(self, base: str, report: Report, name: str) -> None:
        self.report, self.name = report, name
        self.log = EventLog(report, name, provoked=PROVOKED_EVENT_IDS)
        self.events = self.log.events
        self.until, self.count = self.log.until, self.log.count
        self.generations: list[llm.GenerationCreatedEvent] = []
        self._recording: set[asyncio.Task[None]] = set()
        self.model = RealtimeModel(
            model=MODEL,
            voice="marin",
            base_url=base,
            api_key="unused",
            input_audio_transcription=AudioTranscription(model=MODEL),
        )
        self.session = self.model.session()
        self.session.on("openai_server_event_received", self._received)
        self.session.on("error", self._error)
        self.session.on("generation_created", self.generations.append)

    def _received(self, event: dict[str, Any]) -> None:
        # the plugin emits from its receive loop (not a coroutine): record in order, on the loop
        task = asyncio.get_running_loop().create_task(self.log.record(event))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    def _error(self, error: llm.RealtimeModelError) -> None:
        self.report.checks.setdefault("plugin_errors", []).append(
            {"scene": self.name, "recoverable": error.recoverable, "error": str(error.error)[:300]}
        )

    async def speak(self, pcm: bytes, silence_s: float = 1.0) -> None:
        samples = RATE * FRAME_MS // 1000
        audio = pcm + bytes(int(silence_s * RATE) * 2)
        for start in range(0, len(audio) - samples * 2 + 1, samples * 2):
            chunk = audio[start : start + samples * 2]
            self.session.push_audio(rtc.AudioFrame(chunk, RATE, 1, samples))
            await asyncio.sleep(FRAME_MS / 1000 / 4)

    async def close(self) -> None:
        await self.session.aclose()
        await self.model.aclose()


def _done(event: dict[str, Any]) -> bool:
    return event["type"] == "response.done"


async def _drain(generation: llm.GenerationCreatedEvent) -> tuple[int, str]:
    """Bytes of audio and the text of a generation's messages, as an agent's playout would consume them."""
    audio, text = 0, ""
    async for message in generation.message_stream:

        async def frames(stream: Any = message.audio_stream) -> int:
            return sum([len(frame.data.tobytes()) async for frame in stream])

        async def words(stream: Any = message.text_stream) -> str:
            return "".join([str(piece) async for piece in stream])

        counted, said = await asyncio.gather(frames(), words())
        audio, text = audio + counted, text + said
    return audio, text


async def main_scene(base: str, pcm: bytes, report: Report) -> None:
    scene = Scene(base, report, "main")
    try:
        await scene.session.update_instructions("Be brief.")
        generation = await asyncio.wait_for(scene.session.generate_reply(instructions="Say hello."), GUARD_S)
        audio, text = await asyncio.wait_for(_drain(generation), GUARD_S)
        report.checks["text_audio_bytes"], report.checks["text_transcript"] = audio, text
        first = await scene.until(_done)
        report.checks["text_status"] = first["response"]["status"]
        report.checks["text_voice"] = first["response"]["audio"]["output"]["voice"]
        mark = len(scene.events)
        scene.session.push_video(rtc.VideoFrame(64, 48, rtc.VideoBufferType.RGBA, bytes(64 * 48 * 4)))
        image = await scene.until(lambda e: e["type"] == "conversation.item.added", mark)
        report.checks["video_frame_item"] = image["item"]["content"]
        for kind, event_id in zip(("delete", "retrieve"), PROVOKED_EVENT_IDS, strict=True):
            scene.session.send_event(
                {"type": f"conversation.item.{kind}", "item_id": "item_missing", "event_id": event_id}
            )
        await scene.until(
            lambda e: e["type"] == "error" and e["error"].get("event_id") == PROVOKED_EVENT_IDS[1]
        )
        mark = len(scene.events)
        await scene.speak(pcm)
        done = await scene.until(_done, mark)
        report.checks["audio_status"] = done["response"]["status"]
        completed = await scene.until(
            lambda e: e["type"] == "conversation.item.input_audio_transcription.completed", mark
        )
        report.checks["audio_transcript"] = completed["transcript"]
        report.checks["server_generations"] = sum(1 for g in scene.generations if not g.user_initiated)
    finally:
        await scene.close()


async def tool_scene(base: str, report: Report) -> None:
    scene = Scene(base, report, "tool")
    try:
        await scene.session.update_tools([get_weather])
        generation = await asyncio.wait_for(scene.session.generate_reply(instructions="Weather?"), GUARD_S)

        async def calls() -> list[str]:
            return [call.name async for call in generation.function_stream]

        drained, names = await asyncio.wait_for(asyncio.gather(_drain(generation), calls()), GUARD_S)
        report.checks["tool_calls"] = names
        arguments = await scene.until(lambda e: e["type"] == "response.function_call_arguments.done")
        report.checks["tool_arguments"] = arguments["arguments"]
        report.checks["tool_audio_bytes"] = drained[0]
    finally:
        await scene.close()


async def barge_in_scene(base: str, pcm: bytes, report: Report) -> None:
    scene = Scene(base, report, "barge_in")
    try:
        generation = await asyncio.wait_for(scene.session.generate_reply(instructions="Talk."), GUARD_S)
        playout = asyncio.create_task(_drain(generation))
        await scene.until(lambda e: e["type"] == "response.output_audio.delta")
        await scene.speak(pcm)
        cancelled = await scene.until(_done)
        report.checks["barge_in_status"] = cancelled["response"]["status"]
        report.checks["barge_in_reason"] = (cancelled["response"].get("status_details") or {}).get("reason")
        await asyncio.wait_for(playout, GUARD_S)
        await scene.until(_done, scene.events.index(cancelled) + 1)  # the reply to what the user said
    finally:
        await scene.close()


async def main(base: str, tools_base: str, slow_base: str, wav_path: str) -> None:
    report = Report(client={"livekit-agents": version("livekit-agents"), "openai": version("openai")})
    pcm, rate = read_wav(wav_path)
    assert rate == RATE, "the speech file must be 24 kHz"
    await main_scene(base, pcm, report)
    await tool_scene(tools_base, report)
    await barge_in_scene(slow_base, pcm, report)
    report.emit()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
