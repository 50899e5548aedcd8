"""livekit-agents' OpenAI ``STT`` in its realtime mode (a Realtime transcription session) against the server.

Usage: ``python livekit_stt.py HTTP_BASE WAV`` (``http://127.0.0.1:PORT/v1``). ``STT(use_realtime=True)`` streams
through ``/realtime?intent=transcription&model=...`` (LiveKit puts the model in the URL for hosts other than
OpenAI's, for gateways to route on), configures the session with ``session.update`` (``type:
"transcription"``, its server VAD settings) and turns the server's VAD and transcription events into speech
events. The audio is one turn and its silence, pushed as 20 ms frames. LiveKit raises on any ``error`` event
(its stream then reconnects); the report records one as an error event.
"""

from __future__ import annotations

import asyncio
import sys
from importlib.metadata import version

from _common import GUARD_S, Report, read_wav
from livekit import rtc
from livekit.agents import stt, utils
from livekit.plugins.openai import STT

RATE = 24_000
FRAME_BYTES = RATE * 20 // 1000 * 2
SILENCE_S = 1.5


async def main(base: str, wav_path: str) -> None:
    report = Report(client={"livekit-agents": version("livekit-agents"), "openai": version("openai")})
    pcm, rate = read_wav(wav_path)
    assert rate == RATE
    events: list[stt.SpeechEvent] = []
    async with utils.http_context.open():
        plugin = STT(
            model="gpt-4o-transcribe", use_realtime=True, base_url=base, api_key="unused", language="en"
        )
        stream = plugin.stream()
        audio = pcm + bytes(int(SILENCE_S * RATE) * 2)
        for start in range(0, len(audio), FRAME_BYTES):
            chunk = audio[start : start + FRAME_BYTES]
            stream.push_frame(rtc.AudioFrame(chunk, RATE, 1, len(chunk) // 2))
        stream.end_input()
        try:
            async with asyncio.timeout(GUARD_S):
                async for event in stream:
                    events.append(event)
                    if event.type is stt.SpeechEventType.RECOGNITION_USAGE:
                        break  # the last event of a transcribed turn
        except Exception as exc:  # an error event makes the plugin raise
            report.error_events.append(repr(exc)[:500])
        finally:
            await stream.aclose()
            await plugin.aclose()
    report.checks["events"] = [event.type.name for event in events]
    report.checks["finals"] = [
        event.alternatives[0].text for event in events if event.type is stt.SpeechEventType.FINAL_TRANSCRIPT
    ]
    report.emit()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
