"""`InputTranscriptions` on its own: a failing backend gives ``.failed``, the gate holds requests back, the
busy limit, and cancellation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from realtime.audio import AudioFormat
from realtime.backends.base import BackendError, GenerationInput, TokenChunk
from realtime.backends.synthetic import SyntheticBackend
from realtime.session.items import user_audio_item
from realtime.session.outbox import EventFrame, Outbox
from realtime.session.transcription import MAX_RUNNING, FirstOutputGate, InputTranscriptions
from realtime.speech.transcribe import TranscriptionSlots
from realtime.wire.handshake import Dialect
from realtime.wire.server_events import EventBuilder
from realtime.wire.session_extensions import TranscriptionSettings

SPEECH = bytes(range(256)) * 200  # loud enough for the synthetic transcript


class Failing(SyntheticBackend):
    async def generate(self, request: GenerationInput) -> AsyncIterator[TokenChunk]:
        raise BackendError("http_503", "The LLM server is overloaded.")
        yield  # pragma: no cover


class Recording(SyntheticBackend):
    def __init__(self) -> None:
        super().__init__(tokens_per_second=50.0)
        self.started: list[str] = []

    async def generate(self, request: GenerationInput) -> AsyncIterator[TokenChunk]:
        self.started.append(request.rid)
        async for chunk in super().generate(request):
            yield chunk


def frames(outbox: Outbox) -> list[dict[str, object]]:
    out = []
    while not outbox.queue.empty():
        frame = outbox.queue.get_nowait()
        assert isinstance(frame, EventFrame)
        out.append(json.loads(frame.text))
    return out


async def test_a_backend_failure_is_a_failed_event() -> None:
    outbox = Outbox(64, put_timeout=5.0)
    jobs = InputTranscriptions(Failing(), EventBuilder(Dialect.GA), outbox, FirstOutputGate())
    item = user_audio_item(SPEECH, AudioFormat.PCM16)
    async with asyncio.TaskGroup() as tasks:
        jobs.start(tasks, item, TranscriptionSettings())
    (failed,) = frames(outbox)
    assert failed["type"] == "conversation.item.input_audio_transcription.failed"
    assert failed["item_id"] == item.id and failed["error"]["code"] == "http_503"  # type: ignore[index]
    assert item.content[0].transcript is None


async def test_the_gate_holds_the_request_until_the_response_has_output() -> None:
    backend = Recording()
    gate = FirstOutputGate()
    outbox = Outbox(64, put_timeout=5.0)
    jobs = InputTranscriptions(backend, EventBuilder(Dialect.BETA), outbox, gate)
    gate.response_started()
    async with asyncio.TaskGroup() as tasks:
        jobs.start(tasks, user_audio_item(SPEECH, AudioFormat.PCM16), TranscriptionSettings())
        await asyncio.sleep(0.05)
        assert backend.started == [] and jobs.running == 1
        gate.response_output()
    assert len(backend.started) == 1
    assert frames(outbox)[-1]["type"] == "conversation.item.input_audio_transcription.completed"


async def test_more_than_the_limit_fail_fast_and_cancel_stops_jobs() -> None:
    backend = Recording()
    outbox = Outbox(256, put_timeout=5.0)
    gate = FirstOutputGate()
    gate.response_started()  # hold them all
    jobs = InputTranscriptions(backend, EventBuilder(Dialect.GA), outbox, gate)
    items = [user_audio_item(SPEECH, AudioFormat.PCM16) for _ in range(MAX_RUNNING + 1)]
    async with asyncio.TaskGroup() as tasks:
        for item in items:
            jobs.start(tasks, item, TranscriptionSettings())
        await asyncio.sleep(0.05)
        busy = frames(outbox)
        assert [e["item_id"] for e in busy] == [items[-1].id]
        assert busy[0]["error"]["code"] == "too_many_transcriptions"  # type: ignore[index]
        jobs.cancel(items[0].id)
        jobs.cancel_all()
    assert backend.started == [] and jobs.running == 0 and frames(outbox) == []


async def test_the_server_wide_cap_waits_then_fails_with_its_code() -> None:
    """A job that finds every server-wide slot taken (HTTP or another session) waits, then fails clearly;
    one that gets a slot within the wait runs."""
    backend = Recording()
    slots = TranscriptionSlots(1, wait_seconds=0.2)
    await slots.acquire()  # another transcription holds the only slot
    outbox = Outbox(64, put_timeout=5.0)
    jobs = InputTranscriptions(backend, EventBuilder(Dialect.GA), outbox, FirstOutputGate(), slots)
    item = user_audio_item(SPEECH, AudioFormat.PCM16)
    async with asyncio.TaskGroup() as tasks:
        jobs.start(tasks, item, TranscriptionSettings())
    (failed,) = frames(outbox)
    assert failed["type"] == "conversation.item.input_audio_transcription.failed"
    assert failed["error"]["code"] == "transcription_capacity_reached"  # type: ignore[index]
    assert backend.started == [] and slots.live == 1
    async with asyncio.TaskGroup() as tasks:
        jobs.start(tasks, item, TranscriptionSettings())
        await asyncio.sleep(0.05)
        slots.release()  # the other one finished within the wait: this job gets its slot
    assert frames(outbox)[-1]["type"] == "conversation.item.input_audio_transcription.completed"
    assert slots.live == 0
