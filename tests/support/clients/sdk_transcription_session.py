"""The official ``openai`` SDK (newest) in a Realtime transcription session: GA and beta.

Usage: ``python sdk_transcription_session.py HTTP_BASE WAV DIALECT`` (``http://127.0.0.1:PORT/v1``; ``DIALECT``
``ga`` or ``beta``). The session is opened the SDK's way for each dialect:

- GA: ``client.realtime.connect(extra_query={"intent": "transcription"})`` (no model: OpenAI refuses one for a
  transcription session), configured with ``connection.session.update(session={"type": "transcription", ...})``;
- beta: ``client.beta.realtime.connect(model=..., extra_query={"intent": "transcription"})`` (the beta helper
  always sends a model; the server ignores it for a transcription session), configured with
  ``connection.transcription_session.update(...)``.

Then: audio the client commits, audio the server VAD commits, and a ``response.create`` (OpenAI refuses it in a
transcription session: the one provoked error). Every frame is read with the SDK's own parser
(``connection.recv()``, the models a user of the SDK gets) and validated against the SDK's server-event union
of the dialect; beta's ``transcription_session.created`` is the one event that union lacks, so it is checked
by the parser alone, as an SDK user meets it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from importlib.metadata import version
from typing import Any

from _common import GUARD_S, Report, chunks_b64, read_wav, server_event_adapter
from openai import AsyncOpenAI

MODEL = "step-audio-2-mini"
TRANSCRIBER = "gpt-4o-transcribe"  # a name beta's models list too
COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"
RESPONSE_EVENT_ID = "evt_response_in_transcription"
SILENCE_S = 1.2
RATE = 24_000


class Reader:
    """Reads events through the SDK's parser, validates each raw frame, keeps them."""

    def __init__(self, connection: Any, dialect: str, report: Report) -> None:
        self.connection, self.dialect, self.report = connection, dialect, report
        self.adapter = server_event_adapter(dialect)
        self.events: list[dict[str, Any]] = []

    async def next(self) -> dict[str, Any]:
        async with asyncio.timeout(GUARD_S):
            raw = await self.connection.recv_bytes()
        parsed = self.connection.parse_event(raw)  # what `connection.recv()` hands an SDK user
        event: dict[str, Any] = json.loads(raw)
        assert parsed.type == event["type"]
        if event["type"] != "transcription_session.created":  # the beta union lacks it (module docstring)
            try:
                self.adapter.validate_python(self._for_union(event))
            except Exception as exc:
                self.report.validation_errors.append(f"{event.get('type')}: {exc}"[:500])
        if event["type"] == "error":
            error = event["error"]
            if error.get("event_id") == RESPONSE_EVENT_ID:
                self.report.checks.setdefault("provoked_errors", []).append(error)
            else:
                self.report.error_events.append(error)
        self.events.append(event)
        return event

    def _for_union(self, event: dict[str, Any]) -> dict[str, Any]:
        if event["type"] != "transcription_session.updated":
            return event
        # beta's model requires the client_secret OpenAI leaves out of a WebSocket update (the model's own
        # docstring); the other fields must pass it
        return {**event, "session": {**event["session"], "client_secret": {"value": "", "expires_at": 0}}}

    async def until(self, kind: str) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        while True:
            event = await self.next()
            seen.append(event)
            if event["type"] == kind:
                return seen


def turn_summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The order of one transcribed turn, its transcript, and whether the deltas spell it."""
    deltas = [e["delta"] for e in events if e["type"] == DELTA]
    completed = events[-1]
    committed = next(e for e in events if e["type"] == "input_audio_buffer.committed")
    return {
        "order": [e["type"] for e in events if e["type"] != DELTA],
        "deltas": len(deltas),
        "deltas_join": "".join(deltas).strip(),
        "transcript": completed["transcript"],
        "same_item": all(
            e.get("item_id", committed["item_id"]) == committed["item_id"]
            for e in events
            if e["type"].startswith(("conversation.item.input", "input_audio_buffer.committed"))
        ),
        "usage_type": completed["usage"]["type"],
    }


async def configure(
    connection: Any, reader: Reader, dialect: str, turn_detection: dict[str, Any] | None
) -> Any:
    transcription = {"model": TRANSCRIBER, "language": "en"}
    if dialect == "ga":
        audio_input = {"format": {"type": "audio/pcm", "rate": RATE}, "transcription": transcription}
        audio_input["turn_detection"] = turn_detection
        await connection.session.update(session={"type": "transcription", "audio": {"input": audio_input}})
        return (await reader.until("session.updated"))[-1]["session"]
    session = {"input_audio_format": "pcm16", "input_audio_transcription": transcription}
    session["turn_detection"] = turn_detection
    await connection.transcription_session.update(session=session)
    return (await reader.until("transcription_session.updated"))[-1]["session"]


async def main(base: str, wav_path: str, dialect: str) -> None:
    report = Report(client={"openai": version("openai")})
    pcm, rate = read_wav(wav_path)
    assert rate == RATE
    client = AsyncOpenAI(api_key="unused", base_url=base, websocket_base_url=base.replace("http", "ws", 1))
    query = {"intent": "transcription"}
    if dialect == "ga":
        manager = client.realtime.connect(extra_query=query)
    else:
        manager = client.beta.realtime.connect(model=MODEL, extra_query=query)
    async with manager as connection:
        reader = Reader(connection, dialect, report)
        created = await reader.next()
        report.checks["first_event"] = created["type"]
        report.checks["created_session"] = created["session"]
        report.checks["updated_session"] = await configure(connection, reader, dialect, None)
        # audio the client commits
        for piece in chunks_b64(pcm, rate):
            await connection.input_audio_buffer.append(audio=piece)
        await connection.input_audio_buffer.commit()
        report.checks["client_commit"] = turn_summary(await reader.until(COMPLETED))
        # audio the server VAD commits
        await configure(connection, reader, dialect, {"type": "server_vad", "silence_duration_ms": 500})
        for piece in chunks_b64(pcm + bytes(int(SILENCE_S * RATE) * 2), rate):
            await connection.input_audio_buffer.append(audio=piece)
        report.checks["vad_commit"] = turn_summary(await reader.until(COMPLETED))
        # no responses in a transcription session
        await connection.response.create(event_id=RESPONSE_EVENT_ID)
        refused = (await reader.until("error"))[-1]["error"]
        report.checks["response_refused"] = refused["code"]
        await connection.input_audio_buffer.clear()
        after = await reader.until("input_audio_buffer.cleared")
        report.checks["after_refusal"] = [e["type"] for e in after]
    report.emit()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
