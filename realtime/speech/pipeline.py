"""The reply pipeline: LLM token stream -> parser -> transcript text and decoded audio chunks.

`stream_reply` is what `Runtime.reply` (realtime/speech/runtime.py) returns. Events come out in the order the
model produced them: transcript text a little ahead of the audio that speaks it, each `AudioChunk` the moment
the worker has decoded it (realtime/speech/decoder.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from realtime.audio import PCM_RATE
from realtime.backends.base import FinishReason, GenerationInput, LLMBackend, TokenChunk
from realtime.metrics import Metrics
from realtime.speech.decoder import ReplyDecoder, SpeechSetup
from realtime.speech.detokenizer import IncrementalDetokenizer
from realtime.speech.llm_stream import generation_chunks, parse_ids
from realtime.speech.reply import (
    AudioChunk,
    GenerationDone,
    PipelineEvent,
    TextDelta,
    TranscriptDelta,
    Usage,
    UsageMeter,
)
from realtime.speech.worker import JobGroup
from streaming_parser import AudioCodes, AudioTokenParser, SegmentEnd, TextPiece, TextTokens

logger = logging.getLogger(__name__)

# Bounded hand-offs between the token reader, the decoder and the consumer (docs/ARCHITECTURE.md §4.2: every
# queue is bounded). A slow consumer fills `out`, which stalls decoding, which stalls the token reader and so
# the LLM stream: memory stays bounded.
OUT_QUEUE_SIZE = 64
CODES_QUEUE_SIZE = 256
MAX_CODES_PER_STEP = 25  # one steady Token2Wav hop: bounds how long one reply holds the worker


@dataclass(frozen=True)
class _SegmentBoundary:
    """The speech segment ended: flush the Token2Wav stream."""


@dataclass(frozen=True)
class _StreamEnd:
    finish: FinishReason
    output_ids: tuple[int, ...]
    input_tokens: int
    output_tokens: int
    cached_tokens: int | None


@dataclass(frozen=True)
class _Failure:
    error: BaseException


_BOUNDARY = _SegmentBoundary()
_CodesItem = tuple[int, ...] | _SegmentBoundary | _StreamEnd
_OutItem = TranscriptDelta | TextDelta | AudioChunk | _StreamEnd | _Failure


@dataclass
class _Progress:
    audio_samples: int = 0
    done: bool = False


async def stream_reply(
    backend: LLMBackend,
    speech: SpeechSetup | None,
    request: GenerationInput,
    metrics: Metrics,
    meter: UsageMeter | None = None,
) -> AsyncIterator[PipelineEvent]:
    """Stream one response: LLM ids -> parser -> text deltas and decoded audio chunks -> `GenerationDone`.

    Three cooperating parts run concurrently: a token reader (backend -> parser -> detokenizers), a decoder
    (audio codes -> Token2Wav steps on the worker) and this generator, which yields what they produce in order.
    Closing the generator (``aclose``) or cancelling the task iterating it stops both parts, drops the
    response's pending worker jobs and aborts the LLM request once: the token reader closes the backend's
    stream, and a backend aborts a request whose stream is closed early (`LLMBackend.generate`).

    Args:
        backend: the LLM token source.
        speech: the speech setup, or None for a server without a decoder (audio codes are then dropped).
        request: the generation input; ``request.speak`` selects a spoken reply.
        metrics: where time to first audio, real-time factor, chunk overhead and token counts go. Response
            counts by status, cancels and errors are recorded by the session layer, which knows the outcome.
        meter: updated with prompt and output token counts as they arrive (for usage after a cancel).

    Raises:
        BackendError: the LLM request failed.
        SpeechError: decoding failed or the worker is closed.
    """
    started = time.perf_counter()
    out: asyncio.Queue[_OutItem] = asyncio.Queue(maxsize=OUT_QUEUE_SIZE)
    codes: asyncio.Queue[_CodesItem] = asyncio.Queue(maxsize=CODES_QUEUE_SIZE)
    group = speech.worker.group(request.rid) if speech is not None else None
    progress = _Progress()  # usage: the audio yielded so far
    tasks = [
        asyncio.create_task(
            _guard(_read_tokens(backend, request, out, codes, metrics, meter or UsageMeter()), out),
            name="tokens",
        ),
        asyncio.create_task(_guard(_decode(speech, group, request, codes, out, metrics), out), name="decode"),
    ]
    first_audio = True
    try:
        while True:
            item = await out.get()
            if isinstance(item, _Failure):
                raise item.error
            if isinstance(item, _StreamEnd):
                rate = speech.sample_rate if speech is not None else PCM_RATE
                usage = Usage(
                    item.input_tokens, item.output_tokens, progress.audio_samples / rate, item.cached_tokens
                )
                progress.done = True
                yield GenerationDone(item.finish, item.output_ids, usage)
                return
            if isinstance(item, AudioChunk):
                now = time.perf_counter()
                if first_audio:
                    metrics.observe_time_to_first_audio(now - started)
                    first_audio = False
                if item.decoded_at:
                    metrics.observe_chunk_overhead(now - item.decoded_at)
                progress.audio_samples += len(item.pcm16) // 2
            yield item
    finally:
        if group is not None and speech is not None:
            speech.worker.drop(group)
        for task in tasks:
            task.cancel()
        # the reader's own cleanup closes the backend stream, which aborts the request if it is unfinished
        await asyncio.gather(*tasks, return_exceptions=True)


async def _guard(body: Coroutine[Any, Any, None], out: asyncio.Queue[_OutItem]) -> None:
    """Run a part; hand any failure to the generator (which re-raises it) instead of losing it in a task."""
    try:
        await body
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        await out.put(_Failure(exc))


async def _read_tokens(
    backend: LLMBackend,
    request: GenerationInput,
    out: asyncio.Queue[_OutItem],
    codes: asyncio.Queue[_CodesItem],
    metrics: Metrics,
    meter: UsageMeter,
) -> None:
    parser = AudioTokenParser(backend.vocab, starts_in_speech=request.speak)
    spoken = IncrementalDetokenizer(backend.text_codec)
    plain = IncrementalDetokenizer(backend.text_codec)
    output_ids: list[int] = []
    finish: FinishReason | None = None
    prompt_tokens = 0
    completion_tokens: int | None = None

    async def handle(events: Sequence[object]) -> None:
        for event in events:
            if isinstance(event, TextTokens):
                detok = spoken if event.spoken else plain
                text = detok.feed(event.ids)
                if text:
                    await out.put(TranscriptDelta(text) if event.spoken else TextDelta(text))
            elif isinstance(event, TextPiece):
                await out.put(TranscriptDelta(event.text) if event.spoken else TextDelta(event.text))
            elif isinstance(event, AudioCodes):
                await codes.put(tuple(event.codes))
            elif isinstance(event, SegmentEnd):
                text = spoken.flush()
                if text:
                    await out.put(TranscriptDelta(text))
                await codes.put(_BOUNDARY)

    async with aclosing(generation_chunks(backend, request)) as chunks:
        async for chunk in chunks:
            finish, prompt_tokens, completion_tokens = _account(chunk, prompt_tokens, completion_tokens)
            output_ids.extend(chunk.ids)
            if prompt_tokens:  # keep the front door's own count until the LLM reports one
                meter.input_tokens = prompt_tokens
            if chunk.cached_tokens is not None:
                meter.cached_tokens = chunk.cached_tokens
            meter.output_ids.extend(chunk.ids)
            metrics.observe_output_tokens(len(chunk.ids))
            await handle(parse_ids(parser, chunk.ids))
    assert finish is not None  # generation_chunks ends on the chunk with a finish reason, or raises
    await handle(parser.flush())
    for detok, make in ((spoken, TranscriptDelta), (plain, TextDelta)):
        text = detok.flush()
        if text:
            await out.put(make(text))
    outputs = completion_tokens if completion_tokens is not None else len(output_ids)
    await codes.put(_StreamEnd(finish, tuple(output_ids), prompt_tokens, outputs, meter.cached_tokens))


def _account(
    chunk: TokenChunk, prompt_tokens: int, completion_tokens: int | None
) -> tuple[FinishReason | None, int, int | None]:
    if chunk.prompt_tokens is not None:
        prompt_tokens = chunk.prompt_tokens
    if chunk.completion_tokens is not None:
        completion_tokens = chunk.completion_tokens
    return chunk.finish_reason, prompt_tokens, completion_tokens


async def _decode(
    speech: SpeechSetup | None,
    group: JobGroup | None,
    request: GenerationInput,
    codes: asyncio.Queue[_CodesItem],
    out: asyncio.Queue[_OutItem],
    metrics: Metrics,
) -> None:
    """Feed audio codes to the Token2Wav stream on the worker; put each decoded chunk out as it is ready."""
    decoder = ReplyDecoder(speech, group, metrics) if speech is not None else None
    try:
        if decoder is not None and request.speak:
            await decoder.open()  # clone the voice state while the LLM is still prefilling
        held: tuple[int, ...] | None = None  # codes taken from the queue that did not fit the last step
        while True:
            item: _CodesItem | None = held if held is not None else await codes.get()
            held = None
            batch: list[int] = []
            # Coalesce what is already queued into one worker step (fewer thread hops, same result), but at most
            # one steady window of codes: a step that decodes several windows would hold the shared worker while
            # other sessions' first chunks wait behind it.
            while isinstance(item, tuple):
                room = MAX_CODES_PER_STEP - len(batch)
                batch.extend(item[:room])
                if len(item) > room:
                    held, item = item[room:], None
                    break
                try:
                    item = codes.get_nowait()
                except asyncio.QueueEmpty:
                    item = None
                    break
            if decoder is not None and batch:
                for chunk in await decoder.push(batch):
                    await out.put(chunk)
            if item is None:
                continue
            if decoder is not None:
                for chunk in await decoder.finish():
                    await out.put(chunk)
            if isinstance(item, _StreamEnd):
                await out.put(item)
                return
    finally:
        if decoder is not None:
            decoder.close()
