"""The response driver on its own, with a recording `ResponseHost`: a failing token stream ends in response.done
``failed`` with its code; G.711 output is seamless; decoder stream slots; delivery is counted as frames go out."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

from realtime.audio import AudioFormat
from realtime.backends.base import BackendError, GenerationInput
from realtime.metrics import Metrics
from realtime.session.conversation import Conversation
from realtime.session.outbox import AudioFrame, Outbox
from realtime.session.response import ResponseRun, ResponseServices
from realtime.session.response_lifecycle import ResponsePhase
from realtime.speech.admission import DecoderAdmission
from realtime.speech.reply import PipelineEvent, TranscriptDelta
from realtime.wire.handshake import Dialect
from realtime.wire.records import Item, ResponseRecord
from realtime.wire.server_events import EventBuilder
from streaming_parser import VocabLayout
from tests.support.wire_check import validate_frame


async def _failing_stream(
    request: GenerationInput, *, voice: str, meter: object = None
) -> AsyncIterator[PipelineEvent]:
    yield TranscriptDelta("partial ")
    raise BackendError("stream_cut", "The LLM stream ended early.")


PUT_TIMEOUT_S = 30.0


class RecordingHost:
    """A `ResponseHost` that records what a response tells it."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.truncated: list[tuple[str, int]] = []

    async def audio_started(self, run: ResponseRun) -> None:
        self.calls.append("audio_started")

    def first_output(self, run: ResponseRun) -> None:
        self.calls.append("first_output")

    def truncate(self, item: Item, audio_end_ms: int) -> None:
        self.truncated.append((item.id, audio_end_ms))

    def delivered(self, run: ResponseRun) -> None:
        self.calls.append("delivered")


def _services(
    respond: Any, outbox: Outbox, metrics: Metrics, streams: DecoderAdmission | None = None
) -> ResponseServices:
    """GA response services on the default vocabulary with 100 ms deltas."""
    return ResponseServices(
        reply=respond,
        events=EventBuilder(Dialect.GA),
        outbox=outbox,
        metrics=metrics,
        streams=streams or DecoderAdmission(4),
        stream_wait_s=0.2,
        vocab=VocabLayout.default(),
        max_delta_ms=100,
    )


async def _drain(outbox: Outbox, dialect: str) -> list[dict[str, Any]]:
    """Play the sender: take every frame, tell its owner it went out (audio as its delta event)."""
    events = []
    while not outbox.queue.empty():
        frame = await outbox.get()
        outbox.done()
        text = frame.audio.delta_text if isinstance(frame, AudioFrame) else frame.text
        events.append(validate_frame(text, dialect))
        if frame.owner is not None:
            frame.owner.frame_sent(frame)
    return events


async def test_backend_failure_fails_the_response_and_keeps_the_transcript() -> None:
    outbox = Outbox(256, PUT_TIMEOUT_S)
    metrics = Metrics()
    host = RecordingHost()
    ctx = _services(_failing_stream, outbox, metrics)
    record = ResponseRecord(
        id="resp_1",
        conversation_id="conv_1",
        modalities=("audio",),
        voice="default",
        output_format=AudioFormat.PCM16,
        max_output_tokens="inf",
    )
    conversation = Conversation()
    run = ResponseRun(ctx, host, record, GenerationInput(rid="resp_1", turns=[]), conversation)
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
    assert host.calls == ["first_output", "delivered"]  # no audio; delivered once response.done went out


def _tone(seconds: float) -> bytes:
    import numpy as np

    t = np.arange(int(24_000 * seconds)) / 24_000
    wave = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1300 * t)
    return (wave * 32767).astype("<i2").tobytes()


async def _spoken_audio(fmt: AudioFormat, chunks: list[bytes]) -> bytes:
    """Run one response whose pipeline yields ``chunks``; return the concatenated audio deltas (wire bytes)."""
    from realtime.backends.base import FinishReason
    from realtime.speech.reply import AudioChunk, GenerationDone, Usage

    async def stream(
        request: GenerationInput, *, voice: str, meter: object = None
    ) -> AsyncIterator[PipelineEvent]:
        for chunk in chunks:
            yield AudioChunk(chunk)
        yield GenerationDone(FinishReason.STOP, (), Usage(1, 1, 0.0))

    outbox = Outbox(4096, PUT_TIMEOUT_S)
    ctx = _services(stream, outbox, Metrics())
    record = ResponseRecord(
        id="resp_2",
        conversation_id=None,
        modalities=("audio",),
        voice="default",
        output_format=fmt,
        max_output_tokens="inf",
    )
    host = RecordingHost()
    run = ResponseRun(ctx, host, record, GenerationInput(rid="resp_2", turns=[]), None)
    await asyncio.wait_for(run.run(), 30)
    assert host.calls == ["audio_started", "first_output"]  # nothing delivered yet
    events = await _drain(outbox, "ga")
    assert host.calls[-1] == "delivered"
    item = run.record.output[0]
    assert item.audio_samples == len(b"".join(chunks)) // 2  # every piece counted once it went out
    assert item.content[0].audio == b"".join(
        base64.b64decode(e["delta"]) for e in events if "delta" in e and e["type"].endswith("audio.delta")
    )
    assert events[-1]["response"]["status"] == "completed"
    deltas = [e["delta"] for e in events if e["type"] == "response.output_audio.delta"]
    return b"".join(base64.b64decode(d) for d in deltas)


async def test_g711_output_is_seamless_across_decoder_chunks() -> None:
    from realtime.audio import encode_output

    pcm = _tone(0.5)
    # decoder chunks of uneven lengths (odd sample counts too), as Token2Wav's hops would give
    cuts = [0, 2 * 997, 2 * 5003, 2 * 5004, 2 * 9000, len(pcm)]
    chunks = [pcm[a:b] for a, b in itertools.pairwise(cuts)]
    for fmt in (AudioFormat.G711_ULAW, AudioFormat.G711_ALAW):
        whole = encode_output(pcm, fmt, 24_000)
        assert len(whole) == len(pcm) // 2 // 3  # 24 kHz -> 8 kHz, one byte per sample
        assert await _spoken_audio(fmt, chunks) == whole
        assert await _spoken_audio(fmt, [pcm]) == whole
    assert await _spoken_audio(AudioFormat.PCM16, chunks) == pcm


def _spoken_record(response_id: str) -> ResponseRecord:
    return ResponseRecord(
        id=response_id,
        conversation_id=None,
        modalities=("audio",),
        voice="default",
        output_format=AudioFormat.PCM16,
        max_output_tokens="inf",
    )


def _endless_stream(started: asyncio.Event) -> Any:
    async def stream(
        request: GenerationInput, *, voice: str, meter: object = None
    ) -> AsyncIterator[PipelineEvent]:
        started.set()
        yield TranscriptDelta("and so on ")
        await asyncio.sleep(3600)

    return stream


async def test_no_free_decoder_stream_is_an_error_and_the_slot_count_holds() -> None:
    streams = DecoderAdmission(1)
    assert await streams.acquire(0.1)  # another response holds the only stream
    outbox = Outbox(256, PUT_TIMEOUT_S)
    metrics = Metrics()
    run = ResponseRun(
        _services(_failing_stream, outbox, metrics, streams),
        RecordingHost(),
        _spoken_record("resp_3"),
        GenerationInput(rid="resp_3", turns=[]),
        None,
    )
    run.event_id = "evt_busy"
    await asyncio.wait_for(run.run(), timeout=30)
    events = await _drain(outbox, "ga")
    assert [e["type"] for e in events] == ["error"]  # no response.created: nothing was started
    assert events[0]["error"]["code"] == "decoder_capacity_reached"
    assert events[0]["error"]["event_id"] == "evt_busy"
    assert streams.live == 1
    streams.release()
    assert streams.live == 0


async def test_a_response_gives_its_decoder_stream_back_however_it_ends() -> None:
    streams = DecoderAdmission(1)
    outbox = Outbox(256, PUT_TIMEOUT_S)
    ctx = _services(_failing_stream, outbox, Metrics(), streams)
    host = RecordingHost()
    await ResponseRun(
        ctx, host, _spoken_record("resp_4"), GenerationInput(rid="resp_4", turns=[]), None
    ).run()
    assert streams.live == 0
    started = asyncio.Event()
    streaming = ResponseRun(
        _services(_endless_stream(started), outbox, Metrics(), streams),
        host,
        _spoken_record("resp_5"),
        GenerationInput(rid="resp_5", turns=[]),
        None,
    )
    task = asyncio.create_task(streaming.run())
    await asyncio.wait_for(started.wait(), 10)
    assert streams.live == 1 and streaming.phase is ResponsePhase.STREAMING
    task.cancel()  # the connection closing
    await asyncio.gather(task, return_exceptions=True)
    assert streams.live == 0


async def test_a_waiting_response_gets_the_stream_that_is_released() -> None:
    streams = DecoderAdmission(1)
    assert await streams.acquire(0.1)
    waiter = asyncio.create_task(streams.acquire(5.0))
    await asyncio.sleep(0.01)
    streams.release()
    assert await waiter
    assert streams.live == 1
