"""The response driver on its own: a failing token stream ends in response.done ``failed`` with its code."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from realtime.backends.base import BackendError, GenerationInput
from realtime.conversation import Conversation, ResponseRecord
from realtime.events import EventBuilder
from realtime.metrics import Metrics
from realtime.pipeline import PipelineEvent, TranscriptDelta
from realtime.protocol import Dialect
from realtime.response import Outbox, ResponseContext, ResponseRun
from realtime.session_config import AudioFormat
from streaming_parser import VocabLayout
from tests.realtime.wire_check import validate_frame


async def _failing_stream(request: GenerationInput, *, voice: str) -> AsyncIterator[PipelineEvent]:
    yield TranscriptDelta("partial ")
    raise BackendError("stream_cut", "The LLM stream ended early.")


async def _drain(outbox: Outbox, dialect: str) -> list[dict[str, Any]]:
    events = []
    while not outbox.queue.empty():
        frame = outbox.queue.get_nowait()
        events.append(validate_frame(frame.text, dialect))
        if frame.on_sent is not None:
            frame.on_sent()
    return events


async def test_backend_failure_fails_the_response_and_keeps_the_transcript() -> None:
    outbox = Outbox(256)
    metrics = Metrics()
    ctx = ResponseContext(
        respond=_failing_stream,
        events=EventBuilder(Dialect.GA),
        outbox=outbox,
        vocab=VocabLayout.default(),
        max_delta_ms=100,
        on_audio=lambda: None,
        observe=metrics,
    )
    record = ResponseRecord(
        id="resp_1",
        conversation_id="conv_1",
        modalities=("audio",),
        voice="default",
        output_format=AudioFormat.PCM16,
        max_output_tokens="inf",
    )
    conversation = Conversation()
    run = ResponseRun(ctx, record, GenerationInput(rid="resp_1", turns=[]), conversation)
    await asyncio.wait_for(run.run(), timeout=30)
    events = await _drain(outbox, "ga")
    done = events[-1]["response"]
    assert done["status"] == "failed"
    assert done["status_details"] == {
        "type": "failed",
        "error": {"type": "server_error", "code": "stream_cut", "message": "The LLM stream ended early."},
    }
    transcript = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
    assert transcript["transcript"] == "partial "
    assert len(conversation) == 1 and next(iter(conversation)).status == "incomplete"
    assert 'streamvoice_errors_total{code="stream_cut"} 1.0' in metrics.render()[0].decode()
    assert json.dumps(done)  # plain JSON all the way down
