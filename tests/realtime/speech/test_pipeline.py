"""The response pipeline end to end on the synthetic backend and the schedule-exact decoder double."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from realtime.backends.base import (
    BackendError,
    FinishReason,
    GenerationInput,
    PromptTurn,
    SamplingParams,
    TokenChunk,
)
from realtime.backends.synthetic import SyntheticBackend
from realtime.errors import SpeechError
from realtime.metrics import Metrics
from realtime.speech.admission import DecoderAdmission
from realtime.speech.decoder import ReplyDecoder, SpeechSetup
from realtime.speech.pipeline import stream_reply
from realtime.speech.reply import (
    AudioChunk,
    GenerationDone,
    PipelineEvent,
    TextDelta,
    TranscriptDelta,
)
from realtime.speech.worker import InferenceWorker
from streaming_parser import AudioCodes, AudioTokenParser, TextTokens
from tests.support.speech_double import SAMPLES_PER_CODE, Schedule, ScheduleDecoder, level_of

FAST = 50_000.0  # tokens/s: tests do not wait on the synthetic clock


def _request(
    text: str = "tell me something nice about streaming", *, speak: bool = True, **kw: Any
) -> GenerationInput:
    return GenerationInput(
        rid=kw.pop("rid", "resp_test"), turns=[PromptTurn("user", text)], speak=speak, **kw
    )


def _expected(backend: SyntheticBackend, request: GenerationInput) -> tuple[str, str, list[int]]:
    """Transcript, plain text and audio codes the synthetic reply carries (via the parser itself)."""
    parser = AudioTokenParser(backend.vocab, starts_in_speech=request.speak)
    events = parser.feed(backend.reply_ids(request)) + parser.flush()
    spoken = [i for e in events if isinstance(e, TextTokens) and e.spoken for i in e.ids]
    plain = [i for e in events if isinstance(e, TextTokens) and not e.spoken for i in e.ids]
    codes = [c for e in events if isinstance(e, AudioCodes) for c in e.codes]
    codec = backend.text_codec
    return codec.decode(spoken), codec.decode(plain), codes


@pytest.fixture
async def decoder_worker() -> AsyncIterator[tuple[ScheduleDecoder, InferenceWorker[Any]]]:
    decoder = ScheduleDecoder()
    worker: InferenceWorker[Any] = InferenceWorker(lambda: decoder, name="t2w-test")
    await worker.start()
    yield decoder, worker
    await worker.aclose()


def _speech(worker: InferenceWorker[Any]) -> SpeechSetup:
    return SpeechSetup(worker, voice="voice-state")


async def _collect(stream: AsyncIterator[PipelineEvent]) -> list[PipelineEvent]:
    return [event async for event in stream]


async def test_spoken_reply_streams_transcript_audio_and_done(
    decoder_worker: tuple[ScheduleDecoder, InferenceWorker[Any]],
) -> None:
    decoder, worker = decoder_worker
    backend = SyntheticBackend(tokens_per_second=FAST, prefill_seconds=0)
    request = _request()
    metrics = Metrics()
    events = await _collect(stream_reply(backend, _speech(worker), request, metrics))

    transcript, plain, codes = _expected(backend, request)
    assert codes and transcript
    assert isinstance(events[-1], GenerationDone)
    done = events[-1]
    assert done.finish is FinishReason.STOP
    assert list(done.output_ids) == backend.reply_ids(request)
    assert "".join(e.text for e in events if isinstance(e, TranscriptDelta)) == transcript
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == plain
    pcm = b"".join(e.pcm16 for e in events if isinstance(e, AudioChunk))
    samples = np.frombuffer(pcm, dtype="<i2")
    # 960 samples per code in total, rendered in code order: nothing lost, duplicated or reordered
    assert samples.size == SAMPLES_PER_CODE * len(codes)
    assert samples.tolist() == [level_of(c) for c in codes for _ in range(SAMPLES_PER_CODE)]
    assert done.usage.output_audio_seconds == pytest.approx(samples.size / 24_000)
    assert done.usage.output_tokens == len(done.output_ids)
    assert done.usage.input_tokens > 0
    # every decoder call ran on the worker thread, one stream started and finished
    assert decoder.threads == {"t2w-test"}
    assert decoder.starts == 1 and decoder.finishes == 1
    body = metrics.render()[0].decode()
    assert "streamvoice_time_to_first_audio_seconds_count 1.0" in body
    assert "streamvoice_audio_chunk_overhead_seconds_count" in body


async def test_first_chunk_follows_the_short_first_hop(
    decoder_worker: tuple[ScheduleDecoder, InferenceWorker[Any]],
) -> None:
    _, worker = decoder_worker
    backend = SyntheticBackend(tokens_per_second=FAST, prefill_seconds=0)
    events = await _collect(stream_reply(backend, _speech(worker), _request(), Metrics()))
    chunks = [len(e.pcm16) // 2 for e in events if isinstance(e, AudioChunk)]
    assert chunks[0] == 960 * 10 - 3840  # 240 ms (docs/TOKEN2WAV.md §5.3)
    assert all(c == 960 * 25 for c in chunks[1:-1])


async def test_a_loaded_decoder_holds_the_first_chunk_until_the_second(
    decoder_worker: tuple[ScheduleDecoder, InferenceWorker[Any]],
) -> None:
    _, worker = decoder_worker
    gate = DecoderAdmission(8, capacity=lambda streams: 4.0)  # serves 4 audio s/s at any load
    for _ in range(2):  # two answers speaking: 2 / 4 = half of the capacity
        assert await gate.acquire(1.0)
    first_window = list(range(10 + 3))  # the first hop and its look-ahead
    second_window = list(range(13, 13 + 25))

    async def chunks(hold_load: float) -> tuple[list[list[int]], str]:
        speech = SpeechSetup(worker, voice="voice-state", admission=gate, hold_load=hold_load)
        metrics = Metrics()
        decoder = ReplyDecoder(speech, None, metrics)
        out = [await decoder.push(first_window), await decoder.push(second_window), await decoder.finish()]
        decoder.close()
        return [[len(chunk.pcm16) // 2 for chunk in step] for step in out], metrics.render()[0].decode()

    held, body = await chunks(0.5)
    # the first chunk comes out with the second, in order
    assert held[:2] == [[], [960 * 10 - 3840, 960 * 25]]
    assert "streamvoice_first_chunks_held_total 1.0" in body
    for hold_load in (0.0, 0.6):  # off, or a decoder not that loaded: the first chunk goes at once
        alone, body = await chunks(hold_load)
        assert alone[:2] == [[960 * 10 - 3840], [960 * 25]]
        assert "streamvoice_first_chunks_held_total 0.0" in body


async def test_answers_waiting_in_line_hold_the_first_chunk_below_the_load_share(
    decoder_worker: tuple[ScheduleDecoder, InferenceWorker[Any]],
) -> None:
    _, worker = decoder_worker
    gate = DecoderAdmission(2, capacity=lambda streams: 100.0)  # 2 speaking are 2% of the capacity...
    for _ in range(2):
        assert await gate.acquire(1.0)
    speech = SpeechSetup(worker, voice="voice-state", admission=gate, hold_load=0.5)
    assert not speech.decoder_loaded()
    waiting = asyncio.create_task(gate.acquire(30.0))  # ...but memory is full and a third answer waits
    try:
        await asyncio.sleep(0)  # the task runs up to its wait in line
        assert gate.saturated and speech.decoder_loaded()
        decoder = ReplyDecoder(speech, None, Metrics())
        assert await decoder.push(list(range(10 + 3))) == []  # held
        assert [len(c.pcm16) // 2 for c in await decoder.push(list(range(13, 38)))] == [
            960 * 10 - 3840,
            960 * 25,
        ]
        decoder.close()
    finally:
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting


async def test_a_reply_bounds_every_batch_until_it_is_well_ahead_of_its_listener() -> None:
    # hops of 10 then 15 codes: 0.24 s, then 0.84 s in all (past its first chunks, yet what a held pair
    # gives the listener), then 2.04 s (two more hops: well ahead even on a slow machine)
    worker: InferenceWorker[Any] = InferenceWorker(
        lambda: ScheduleDecoder(schedule=Schedule(first_hop_tokens=10, hop_tokens=15)), name="t2w-test"
    )
    await worker.start()
    try:
        decoder = ReplyDecoder(_speech(worker), None, Metrics())
        exposed = []
        for window in (range(13), range(13, 28), range(28, 58)):
            await decoder.push(list(window))
            exposed.append(worker.ramping_besides(None))
        # its next step bounds every batch while it has under EXPOSED_AHEAD_S ahead, not only in its first chunks
        assert exposed == [1, 1, 0]
        decoder.close()
        assert worker.ramping_besides(None) == 0
        worker.ramping(7, 123.0)  # a reply exposed makes others make way, not itself
        assert (worker.ramping_besides(7), worker.ramping_besides(8), worker.ramping_besides(None)) == (
            0,
            1,
            1,
        )
    finally:
        await worker.aclose()


async def test_text_only_reply_has_no_audio(
    decoder_worker: tuple[ScheduleDecoder, InferenceWorker[Any]],
) -> None:
    decoder, worker = decoder_worker
    backend = SyntheticBackend(tokens_per_second=FAST, prefill_seconds=0)
    request = _request(speak=False)
    events = await _collect(stream_reply(backend, _speech(worker), request, Metrics()))
    _, plain, _ = _expected(backend, request)
    assert not any(isinstance(e, (AudioChunk, TranscriptDelta)) for e in events)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == plain
    assert isinstance(events[-1], GenerationDone) and events[-1].usage.output_audio_seconds == 0
    assert decoder.starts == 0


async def test_max_tokens_ends_incomplete_and_flushes_audio(
    decoder_worker: tuple[ScheduleDecoder, InferenceWorker[Any]],
) -> None:
    decoder, worker = decoder_worker
    backend = SyntheticBackend(tokens_per_second=FAST, prefill_seconds=0)
    request = _request(sampling=SamplingParams(max_new_tokens=42))
    events = await _collect(stream_reply(backend, _speech(worker), request, Metrics()))
    done = events[-1]
    assert isinstance(done, GenerationDone) and done.finish is FinishReason.LENGTH
    assert len(done.output_ids) == 42
    samples = sum(len(e.pcm16) // 2 for e in events if isinstance(e, AudioChunk))
    assert samples == SAMPLES_PER_CODE * len(decoder.pushed)  # the withheld tail was flushed
    assert decoder.finishes == 1


class RecordingBackend(SyntheticBackend):
    """Synthetic backend that records aborts (explicit ones, and streams closed before their finish, which
    abort the request too) and whether its stream has finished."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.aborted: list[str] = []
        self.finished = False

    async def abort(self, rid: str) -> None:
        self.aborted.append(rid)
        await super().abort(rid)

    async def generate(self, request: GenerationInput) -> AsyncIterator[Any]:
        done = False
        try:
            async for chunk in super().generate(request):
                if chunk.finish_reason is not None:
                    self.finished = done = True
                yield chunk
        finally:
            if not done:
                self.aborted.append(request.rid)


async def test_first_audio_arrives_before_the_backend_finishes(
    decoder_worker: tuple[ScheduleDecoder, InferenceWorker[Any]],
) -> None:
    _, worker = decoder_worker
    backend = RecordingBackend(tokens_per_second=400.0, prefill_seconds=0)
    stream = stream_reply(backend, _speech(worker), _request(), Metrics())
    async for event in stream:
        if isinstance(event, AudioChunk):
            assert not backend.finished  # streamed, not buffered until the end
            break
    await stream.aclose()  # type: ignore[attr-defined]


async def test_aclose_mid_response_aborts_backend_and_drops_decode(
    decoder_worker: tuple[ScheduleDecoder, InferenceWorker[Any]],
) -> None:
    decoder, worker = decoder_worker
    backend = RecordingBackend(tokens_per_second=1000.0, prefill_seconds=0)
    metrics = Metrics()
    stream = stream_reply(backend, _speech(worker), _request(rid="resp_cancel"), metrics)
    async for event in stream:
        if isinstance(event, AudioChunk):
            break
    await stream.aclose()  # type: ignore[attr-defined]
    assert backend.aborted == ["resp_cancel"]
    assert decoder.finishes == 0  # a cancelled stream is dropped, never flushed (docs/TOKEN2WAV.md §6)
    # the worker is still healthy for the next response
    backend.tokens_per_second = FAST
    events = await _collect(stream_reply(backend, _speech(worker), _request(rid="next"), metrics))
    assert isinstance(events[-1], GenerationDone)


async def test_task_cancel_mid_response_aborts_backend(
    decoder_worker: tuple[ScheduleDecoder, InferenceWorker[Any]],
) -> None:
    _, worker = decoder_worker
    backend = RecordingBackend(tokens_per_second=1000.0, prefill_seconds=0)
    got_audio = asyncio.Event()

    async def consume() -> None:
        async for event in stream_reply(backend, _speech(worker), _request(rid="resp_task"), Metrics()):
            if isinstance(event, AudioChunk):
                got_audio.set()

    task = asyncio.create_task(consume())
    await got_audio.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert backend.aborted == ["resp_task"]


async def test_slow_decoder_cancel_drops_queued_steps(
    decoder_worker: tuple[ScheduleDecoder, InferenceWorker[Any]],
) -> None:
    decoder, worker = decoder_worker
    decoder.gate = threading.Event()  # hold every push until released
    # slow enough that the generation is still running when the cancel comes (at FAST it could have ended
    # already, and a finished generation has nothing to abort)
    backend = RecordingBackend(tokens_per_second=100, prefill_seconds=0)

    async def consume() -> None:
        async for _ in stream_reply(backend, _speech(worker), _request(rid="resp_slow"), Metrics()):
            pass

    task = asyncio.create_task(consume())
    # wait until the first decode step is running (and held) on the worker
    assert await asyncio.to_thread(decoder.push_started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    decoder.gate.set()
    assert await worker.run(lambda m: "idle") == "idle"
    assert decoder.push_calls == 1  # nothing queued behind the running step was decoded
    assert decoder.finishes == 0
    assert backend.aborted == ["resp_slow"]


class FailingBackend(SyntheticBackend):
    async def generate(self, request: GenerationInput) -> AsyncIterator[Any]:
        count = 0
        async for chunk in super().generate(request):
            count += 1
            if count > 5:
                raise BackendError("stream_cut", "connection reset")
            yield chunk


async def test_backend_error_fails_the_response(
    decoder_worker: tuple[ScheduleDecoder, InferenceWorker[Any]],
) -> None:
    _, worker = decoder_worker
    metrics = Metrics()
    backend = FailingBackend(tokens_per_second=FAST, prefill_seconds=0)
    with pytest.raises(BackendError) as info:
        await _collect(stream_reply(backend, _speech(worker), _request(), metrics))
    assert info.value.code == "stream_cut"


async def test_decoder_error_is_a_speech_error(
    decoder_worker: tuple[ScheduleDecoder, InferenceWorker[Any]],
) -> None:
    decoder, worker = decoder_worker
    backend = SyntheticBackend(tokens_per_second=FAST, prefill_seconds=0)
    request = _request()
    decoder.fail_on_code = _expected(backend, request)[2][0]
    with pytest.raises(SpeechError) as info:
        await _collect(stream_reply(backend, _speech(worker), request, Metrics()))
    assert info.value.code == "speech_failed"


async def test_stream_without_finish_reason_is_a_backend_error(
    decoder_worker: tuple[ScheduleDecoder, InferenceWorker[Any]],
) -> None:
    _, worker = decoder_worker

    class Cut(SyntheticBackend):
        async def generate(self, request: GenerationInput) -> AsyncIterator[Any]:
            async for chunk in super().generate(request):
                if chunk.finish_reason is not None:
                    return
                yield chunk

    with pytest.raises(BackendError) as info:
        await _collect(
            stream_reply(
                Cut(tokens_per_second=FAST, prefill_seconds=0), _speech(worker), _request(), Metrics()
            )
        )
    assert info.value.code == "stream_cut"


async def test_concurrent_responses_interleave_on_one_worker(
    decoder_worker: tuple[ScheduleDecoder, InferenceWorker[Any]],
) -> None:
    _, worker = decoder_worker
    backend = SyntheticBackend(tokens_per_second=FAST, prefill_seconds=0)
    requests = [_request(f"question number {i} " * (i + 1), rid=f"r{i}") for i in range(3)]
    results = await asyncio.gather(
        *(_collect(stream_reply(backend, _speech(worker), r, Metrics())) for r in requests)
    )
    for request, events in zip(requests, results, strict=True):
        codes = _expected(backend, request)[2]
        pcm = b"".join(e.pcm16 for e in events if isinstance(e, AudioChunk))
        assert np.frombuffer(pcm, "<i2").tolist() == [
            level_of(c) for c in codes for _ in range(SAMPLES_PER_CODE)
        ]


async def test_no_speech_setup_drops_audio_but_keeps_text() -> None:
    backend = SyntheticBackend(tokens_per_second=FAST, prefill_seconds=0)
    request = _request()
    events = await _collect(stream_reply(backend, None, request, Metrics()))
    assert not any(isinstance(e, AudioChunk) for e in events)
    assert "".join(e.text for e in events if isinstance(e, TranscriptDelta)) == _expected(backend, request)[0]
    assert replace(request) == request


async def test_invalid_token_id_is_a_backend_protocol_error(
    decoder_worker: tuple[ScheduleDecoder, InferenceWorker[Any]],
) -> None:
    _, worker = decoder_worker

    class Garbage(SyntheticBackend):
        async def generate(self, request: GenerationInput) -> AsyncIterator[Any]:
            yield TokenChunk((1, 2, -5))

    backend = Garbage(tokens_per_second=FAST, prefill_seconds=0)
    with pytest.raises(BackendError) as info:
        await _collect(stream_reply(backend, _speech(worker), _request(), Metrics()))
    assert info.value.code == "protocol_error"
