"""An openai-agents ``RealtimeAgent`` session through ``RealtimeRunner`` against the server.

Usage: ``python agents_session.py MAIN_WS TOOLS_WS SLOW_WS WAV`` (WebSocket URLs of ``/v1/realtime``: the main
app, the app whose replies end with a ``get_weather`` call, and a slowly streaming server). Five scenes, each
its own session: a text turn; an audio turn through server VAD (transcription events, and ``history_updated``
holding the user's transcript); a function tool round trip; an interruption (the SDK sends truncate then
cancel); a retrieve and a delete of ids that do not exist (raw client events through the SDK's model: OpenAI's
``item_*_invalid_item_id`` arrive as the SDK's error events, and the session answers the next turn). The report
(one JSON line) counts SDK validation failures and error events of every scene; the two provoked errors are
reported apart, in ``checks``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from _common import Report, read_wav
from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner, RealtimeSession
from agents.realtime.model_inputs import RealtimeModelSendRawMessage

GUARD_S = 60.0
TOOL_CALLS: list[str] = []


@function_tool
def get_weather(city: str, unit: str = "celsius") -> str:
    """The weather in a city."""
    TOOL_CALLS.append(city)
    return f"It is sunny in {city}, 21 degrees {unit}."


class ValidationLog(logging.Handler):
    """Counts the SDK's "Failed to validate server event" log lines."""

    def __init__(self, report: Report) -> None:
        super().__init__(logging.ERROR)
        self.report = report

    def emit(self, record: logging.LogRecord) -> None:
        if "validate" in record.getMessage():
            self.report.validation_errors.append(record.getMessage()[:500])


class Scene:
    """One session, its events pumped into a list, with waits on predicates."""

    def __init__(self, session: RealtimeSession, report: Report, name: str) -> None:
        self.session, self.report, self.name = session, report, name
        self.events: list[Any] = []
        self._changed = asyncio.Condition()
        self._pump = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self.session:
            if event.type == "error" and self.name == "missing" and "invalid_item_id" in str(event.error):
                self.report.checks.setdefault("provoked_errors", []).append(str(event.error)[:300])
            elif event.type == "error":
                self.report.error_events.append(f"{self.name}: {event.error}")
            self.events.append(event)
            async with self._changed:
                self._changed.notify_all()

    def raw(self, kind: str) -> list[dict[str, Any]]:
        """Raw server events of type ``kind`` seen so far."""
        out = []
        for event in self.events:
            if event.type == "raw_model_event" and event.data.type == "raw_server_event":
                if event.data.data.get("type") == kind:
                    out.append(event.data.data)
        return out

    async def wait(self, ready: Callable[[], bool]) -> None:
        async with asyncio.timeout(GUARD_S):
            async with self._changed:
                await self._changed.wait_for(ready)

    async def close(self) -> None:
        self._pump.cancel()
        await asyncio.gather(self._pump, return_exceptions=True)


async def scene(url: str, report: Report, name: str, agent: RealtimeAgent, settings: dict[str, Any]) -> Scene:
    runner = RealtimeRunner(agent)
    config: dict[str, Any] = {"url": url, "api_key": "unused", "initial_model_settings": settings}
    session = await runner.run(model_config=config)  # type: ignore[arg-type]
    await session.enter()
    return Scene(session, report, name)


def user_transcripts(scene: Scene) -> list[str]:
    """User audio transcripts in the latest ``history_updated``."""
    updates = [e for e in scene.events if e.type == "history_updated"]
    if not updates:
        return []
    found = []
    for item in updates[-1].history:
        if getattr(item, "role", None) == "user":
            for part in item.content:
                transcript = getattr(part, "transcript", None)
                if transcript:
                    found.append(transcript)
    return found


async def main(main_ws: str, tools_ws: str, slow_ws: str, wav_path: str) -> None:
    report = Report(client={"openai": version("openai"), "openai-agents": version("openai-agents")})
    logging.getLogger("openai.agents").addHandler(ValidationLog(report))
    pcm, rate = read_wav(wav_path)
    agent = RealtimeAgent(name="assistant", instructions="You are a helpful voice assistant.")
    push_to_talk = {"turn_detection": None}

    # 1. a text turn (the SDK's defaults: transcription on, semantic VAD, voice "ash")
    one = await scene(main_ws, report, "text", agent, {})
    await one.session.send_message("Hello there, how are you?")
    await one.wait(lambda: bool(one.raw("response.done")))
    report.checks["text_status"] = one.raw("response.done")[-1]["response"]["status"]
    report.checks["text_audio_events"] = sum(1 for e in one.events if e.type == "audio")
    await one.session.close()
    await one.close()

    # 2. an audio turn through server VAD: silence, speech, silence
    two = await scene(main_ws, report, "audio", agent, {"turn_detection": {"type": "server_vad"}})
    silence = b"\x00\x00" * (rate * 2 // 5)
    audio = silence + pcm + silence * 3
    step = rate // 10 * 2
    for i in range(0, len(audio), step):
        await two.session.send_audio(audio[i : i + step])
    await two.wait(
        lambda: (
            bool(two.raw("conversation.item.input_audio_transcription.completed"))
            and bool(two.raw("response.done"))
            and bool(user_transcripts(two))
        )
    )
    completed = two.raw("conversation.item.input_audio_transcription.completed")[-1]
    report.checks["audio_transcript"] = completed["transcript"]
    report.checks["audio_transcription_deltas"] = len(
        two.raw("conversation.item.input_audio_transcription.delta")
    )
    report.checks["history_user_transcripts"] = user_transcripts(two)
    report.checks["audio_status"] = two.raw("response.done")[-1]["response"]["status"]
    await two.session.close()
    await two.close()

    # 3. a function tool: the tools app's replies end with a get_weather call
    tools_agent = RealtimeAgent(name="weather", instructions="Use the tools.", tools=[get_weather])
    three = await scene(tools_ws, report, "tools", tools_agent, push_to_talk)
    await three.session.send_message("What is the weather in Paris?")
    await three.wait(lambda: any(e.type == "tool_end" for e in three.events))
    await three.wait(lambda: len(three.raw("response.done")) >= 2)  # the answer after the tool output
    report.checks["tool_calls"] = list(TOOL_CALLS)
    report.checks["tool_session_tools"] = [
        t.get("name") for t in three.raw("session.updated")[-1]["session"]["tools"]
    ]
    await three.session.close()
    await three.close()

    # 4. an interruption while the answer streams (slow server): truncate, then cancel
    four = await scene(slow_ws, report, "interrupt", agent, push_to_talk)
    await four.session.send_message("Please tell me a very long story about the sea and the wind. " * 3)
    await four.wait(lambda: sum(1 for e in four.events if e.type == "audio") >= 3)
    await four.session.interrupt()
    await four.wait(lambda: bool(four.raw("response.done")))
    await asyncio.sleep(0.5)  # room for a late error event to arrive and be counted
    report.checks["interrupt_truncated"] = len(four.raw("conversation.item.truncated"))
    report.checks["interrupt_status"] = four.raw("response.done")[-1]["response"]["status"]
    await four.session.close()
    await four.close()

    # 5. items that do not exist: OpenAI's errors, and the session goes on
    five = await scene(main_ws, report, "missing", agent, push_to_talk)
    for kind in ("retrieve", "delete"):
        message: Any = {"type": f"conversation.item.{kind}", "other_data": {"item_id": "item_missing"}}
        await five.session.model.send_event(RealtimeModelSendRawMessage(message=message))
    await five.wait(lambda: len(five.raw("error")) >= 2)
    report.checks["missing_codes"] = [e["error"]["code"] for e in five.raw("error")]
    await five.session.send_message("Are you still there?")
    await five.wait(lambda: bool(five.raw("response.done")))
    report.checks["missing_then_status"] = five.raw("response.done")[-1]["response"]["status"]
    await five.session.close()
    await five.close()
    report.emit()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
