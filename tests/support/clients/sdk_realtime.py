"""The official ``openai`` SDK (newest) against the server: a text turn and a transcribed audio turn.

Usage: ``python sdk_realtime.py HTTP_BASE WAV DIALECT`` with ``HTTP_BASE`` like ``http://127.0.0.1:8000/v1`` and
``DIALECT`` ``ga`` or ``beta``. Every server frame is validated with the SDK's own server-event union of that
dialect; the report (one JSON line) lists validation failures, error events and what was observed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from importlib.metadata import version
from typing import Any

from _common import Report, chunks_b64, read_wav, server_event_adapter
from openai import AsyncOpenAI

MODEL = "step-audio-2-mini"
GUARD_S = 60.0


class Reader:
    """Receives raw frames, validates each, keeps them."""

    def __init__(self, connection: Any, dialect: str, report: Report) -> None:
        self.connection, self.report = connection, report
        self.adapter = server_event_adapter(dialect)
        self.events: list[dict[str, Any]] = []

    async def next(self) -> dict[str, Any]:
        async with asyncio.timeout(GUARD_S):
            raw = await self.connection.recv_bytes()
        event: dict[str, Any] = json.loads(raw)
        try:
            self.adapter.validate_python(event)
        except Exception as exc:
            self.report.validation_errors.append(f"{event.get('type')}: {exc}"[:500])
        if event.get("type") == "error":
            self.report.error_events.append(event.get("error"))
        self.events.append(event)
        return event

    async def until_all(self, *kinds: str) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        missing = set(kinds)
        while missing:
            event = await self.next()
            seen.append(event)
            missing.discard(event["type"])
        return seen


async def main(base: str, wav_path: str, dialect: str) -> None:
    report = Report(client={"openai": version("openai")})
    pcm, rate = read_wav(wav_path)
    client = AsyncOpenAI(api_key="unused", base_url=base, websocket_base_url=base.replace("http", "ws", 1))
    realtime = client.realtime if dialect == "ga" else client.beta.realtime
    async with realtime.connect(model=MODEL) as connection:
        reader = Reader(connection, dialect, report)
        created = await reader.next()
        report.checks["first_event"] = created["type"]
        transcription = {"model": MODEL, "language": "en"}
        if dialect == "ga":
            session: dict[str, Any] = {
                "type": "realtime",
                "audio": {"input": {"turn_detection": None, "transcription": transcription}},
            }
        else:
            session = {"turn_detection": None, "input_audio_transcription": transcription}
        await connection.session.update(session=session)  # type: ignore[arg-type]
        updated = (await reader.until_all("session.updated"))[-1]["session"]
        echo = (
            updated["audio"]["input"]["transcription"]
            if dialect == "ga"
            else updated["input_audio_transcription"]
        )
        report.checks["transcription_echo"] = echo
        # a text turn
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello there"}]}
        await connection.conversation.item.create(item=item)  # type: ignore[arg-type]
        await connection.response.create()
        done = (await reader.until_all("response.done"))[-1]
        report.checks["text_turn_status"] = done["response"]["status"]
        # an audio turn: committed audio, its transcript, the response beside it
        for piece in chunks_b64(pcm, rate):
            await connection.input_audio_buffer.append(audio=piece)
        await connection.input_audio_buffer.commit()
        committed = (await reader.until_all("input_audio_buffer.committed"))[-1]
        await connection.response.create()
        events = await reader.until_all(
            "response.done", "conversation.item.input_audio_transcription.completed"
        )
        completed = next(
            e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"
        )
        deltas = [
            e["delta"] for e in events if e["type"] == "conversation.item.input_audio_transcription.delta"
        ]
        report.checks["transcript"] = completed["transcript"]
        report.checks["transcript_item_is_committed_item"] = completed["item_id"] == committed["item_id"]
        report.checks["deltas_join"] = "".join(deltas).strip()
        report.checks["audio_turn_status"] = next(e for e in events if e["type"] == "response.done")[
            "response"
        ]["status"]
        await connection.conversation.item.retrieve(item_id=committed["item_id"])
        retrieved = (await reader.until_all("conversation.item.retrieved"))[-1]["item"]
        report.checks["retrieved_transcript"] = retrieved["content"][0]["transcript"]
    report.emit()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
