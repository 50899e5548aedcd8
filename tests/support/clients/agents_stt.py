"""The Agents SDK's voice speech-to-text (``OpenAISTTModel``, a Realtime transcription session) against the server.

Usage: ``python agents_stt.py HTTP_BASE WAV`` (``http://127.0.0.1:PORT/v1``). The model opens
``/realtime?intent=transcription``, waits for ``session.created``, sends its ``session.update`` (``type:
"transcription"``, server VAD) and waits for ``session.updated``, as it does against OpenAI. The audio is a turn
followed by silence (the server VAD commits it), then a second turn cut off by the end of the input (the SDK
commits it with an ``event_id`` of its own, then clears the buffer). The SDK turns any ``error`` event into an
exception, except ``input_audio_buffer_commit_empty`` for its own final commit; the report records one as an
error event.
"""

from __future__ import annotations

import asyncio
import sys
from importlib.metadata import version

import numpy as np
from _common import GUARD_S, Report, read_wav
from agents import set_tracing_disabled
from agents.voice import OpenAISTTModel, StreamedAudioInput, STTModelSettings
from openai import AsyncOpenAI

RATE = 24_000
CHUNK = RATE // 10  # 100 ms of samples a push
SILENCE_S = 1.2


async def feed(audio_input: StreamedAudioInput, pcm: bytes) -> None:
    """A turn and its silence, then a second turn the end of the input cuts off, at about real time x4."""
    for part in (pcm + bytes(int(SILENCE_S * RATE) * 2), pcm):
        samples = np.frombuffer(part, dtype=np.int16)
        for start in range(0, len(samples), CHUNK):
            await audio_input.add_audio(samples[start : start + CHUNK])
            await asyncio.sleep(0.025)
    await audio_input.add_audio(None)


async def main(base: str, wav_path: str) -> None:
    set_tracing_disabled(True)
    report = Report(client={"openai-agents": version("openai-agents"), "openai": version("openai")})
    pcm, rate = read_wav(wav_path)
    assert rate == RATE
    client = AsyncOpenAI(api_key="unused", base_url=base, websocket_base_url=base.replace("http", "ws", 1))
    settings = STTModelSettings(
        language="en", turn_detection={"type": "server_vad", "silence_duration_ms": 500}
    )
    audio_input = StreamedAudioInput()
    session = await OpenAISTTModel("gpt-4o-transcribe", client).create_session(
        audio_input, settings, False, False
    )
    feeding = asyncio.create_task(feed(audio_input, pcm))
    turns: list[str] = []
    try:
        async with asyncio.timeout(GUARD_S):
            async for turn in session.transcribe_turns():
                turns.append(turn)
    except Exception as exc:  # an error event, or the session broke: the SDK raises
        report.error_events.append(repr(exc)[:500])
    finally:
        await feeding
        await session.close()
    report.checks["turns"] = turns
    report.emit()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
