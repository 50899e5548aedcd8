"""The response pipeline: LLM token stream -> parser -> transcript text and Token2Wav audio chunks.

`Runtime.respond` (realtime/runtime.py) is the public entry point; it returns the async generator built here.
Events come out in the order the model produced them: transcript text a little ahead of the audio that speaks
it, each `AudioChunk` the moment the worker has decoded it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from realtime.audio import int16_to_pcm16
from realtime.backends.base import BackendError, FinishReason, GenerationInput, LLMBackend, TokenChunk
from realtime.detokenizer import IncrementalDetokenizer
from realtime.metrics import Metrics
from realtime.worker import InferenceWorker, JobGroup, WorkerClosed
from streaming_parser import AudioCodes, AudioTokenParser, ParserError, SegmentEnd, TextPiece, TextTokens

if TYPE_CHECKING:
    from realtime.runtime import Runtime

__all__ = [
    "AudioChunk",
    "GenerationDone",
    "PipelineEvent",
    "Runtime",
    "SpeechError",
    "TextDelta",
    "TranscriptDelta",
    "Usage",
    "UsageMeter",
]


@dataclass(frozen=True)
class TranscriptDelta:
    """Spoken transcript text (inside ``<tts_start>`` .. ``<tts_end>``), never a split UTF-8 sequence."""

    text: str


@dataclass(frozen=True)
class TextDelta:
    """Text of a text-only reply, or text the model wrote outside its speech segment."""

    text: str


@dataclass(frozen=True)
class AudioChunk:
    """One decoded Token2Wav chunk: 24 kHz mono PCM16 little-endian, any length (slice it for the wire).

    Attributes:
        pcm16: the samples.
        decoded_at: `time.perf_counter()` on the worker thread when the PCM was ready (for overhead figures).
    """

    pcm16: bytes
    decoded_at: float = field(default=0.0, compare=False)


@dataclass
class UsageMeter:
    """Running token counts of one response, filled while it streams: a cancelled response (which never
    reaches `GenerationDone`) still reports what it consumed and produced. Owned by the caller of
    `run_response`; written only from the event loop.

    Attributes:
        input_tokens: prompt tokens, once the backend has reported them.
        output_ids: every output id received so far.
    """

    input_tokens: int = 0
    output_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Usage:
    """Token and audio accounting of one response.

    Attributes:
        input_tokens: prompt tokens as reported by the backend (0 if it did not say).
        output_tokens: LLM tokens generated (text, audio and specials).
        output_audio_seconds: seconds of PCM yielded as `AudioChunk`s.
    """

    input_tokens: int
    output_tokens: int
    output_audio_seconds: float


@dataclass(frozen=True)
class GenerationDone:
    """Last event of a response that was not cancelled.

    Attributes:
        finish: why the LLM stopped (STOP -> completed, LENGTH -> incomplete, ABORT -> cancelled upstream).
        output_ids: every LLM output id of the reply, in order (re-inserted verbatim into later prompts).
        usage: token and audio accounting.
    """

    finish: FinishReason
    output_ids: tuple[int, ...]
    usage: Usage


PipelineEvent = TranscriptDelta | TextDelta | AudioChunk | GenerationDone


class SpeechError(Exception):
    """The speech side of a response failed (unknown voice, Token2Wav error, worker closed).

    The response fails with this code and message; the session lives on.

    Attributes:
        code: short machine-readable reason (``unknown_voice``, ``speech_failed``, ``worker_closed``).
        message: human-readable explanation that is safe to show to a client.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------------------------------------------------
# implementation
# ---------------------------------------------------------------------------------------------------------

logger = logging.getLogger(__name__)

PCM_SAMPLE_RATE = 24_000
# Bounded hand-offs between the token reader, the decoder and the consumer (ARCHITECTURE.md: every queue is
# bounded). A slow consumer fills `out`, which stalls decoding, which stalls the token reader and so the LLM
# stream: memory stays bounded.
OUT_QUEUE_SIZE = 64
CODES_QUEUE_SIZE = 256
MAX_CODES_PER_STEP = 25  # one steady Token2Wav hop: bounds how long one response holds the worker


class SpeechModel(Protocol):
    """What the pipeline needs from the worker's model (Token2Wav, Contract 2). Called on the worker only."""

    def start(self, voice: Any, schedule: Any = None) -> Any:
        """A fresh primed stream for ``voice``."""
        ...

    def push(self, stream: Any, codes: Sequence[int]) -> list[npt.NDArray[np.int16]]:
        """Add codes; return the int16 PCM chunks that became ready."""
        ...

    def finish(self, stream: Any) -> list[npt.NDArray[np.int16]]:
        """End of audio: return the remaining int16 PCM."""
        ...


@dataclass(frozen=True)
class SpeechSetup:
    """The speech side of one response.

    Attributes:
        worker: the inference worker that owns the model.
        voice: the primed voice state (`Token2Wav.load_voice` result).
        schedule: the Token2Wav chunk schedule passed to ``start`` (None: the model's default).
        sample_rate: PCM rate of the model output.
    """

    worker: InferenceWorker[Any]
    voice: Any
    schedule: Any = None
    sample_rate: int = PCM_SAMPLE_RATE


@dataclass(frozen=True)
class _SegmentBoundary:
    """The speech segment ended: flush the Token2Wav stream."""


@dataclass(frozen=True)
class _StreamEnd:
    finish: FinishReason
    output_ids: tuple[int, ...]
    input_tokens: int
    output_tokens: int


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


async def run_response(
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
    response's pending worker jobs and aborts the LLM request by ``request.rid``.

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
    progress = _Progress()
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
                rate = speech.sample_rate if speech is not None else PCM_SAMPLE_RATE
                usage = Usage(item.input_tokens, item.output_tokens, progress.audio_samples / rate)
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
        await asyncio.gather(*tasks, return_exceptions=True)
        if not progress.done:
            await backend.abort(request.rid)


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

    stream = backend.generate(request)
    try:
        async for chunk in stream:
            finish, prompt_tokens, completion_tokens = _account(chunk, prompt_tokens, completion_tokens)
            output_ids.extend(chunk.ids)
            meter.input_tokens = prompt_tokens
            meter.output_ids.extend(chunk.ids)
            metrics.observe_output_tokens(len(chunk.ids))
            try:
                events = parser.feed(chunk.ids)
            except ParserError as exc:
                raise BackendError("protocol_error", f"The LLM produced an invalid token id: {exc}") from exc
            await handle(events)
            if finish is not None:
                break
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    if finish is None:
        raise BackendError("stream_cut", "The LLM stream ended without a finish reason.")
    await handle(parser.flush())
    for detok, make in ((spoken, TranscriptDelta), (plain, TextDelta)):
        text = detok.flush()
        if text:
            await out.put(make(text))
    outputs = completion_tokens if completion_tokens is not None else len(output_ids)
    await codes.put(_StreamEnd(finish, tuple(output_ids), prompt_tokens, outputs))


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
    decoder = _StreamDecoder(speech, group, metrics) if speech is not None else None
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


class _StreamDecoder:
    """One response's Token2Wav stream, driven from the event loop, executed on the worker."""

    def __init__(self, speech: SpeechSetup, group: JobGroup | None, metrics: Metrics) -> None:
        self._speech = speech
        self._group = group
        self._metrics = metrics
        self._stream: Any = None

    async def open(self) -> None:
        if self._stream is None:
            voice, schedule = self._speech.voice, self._speech.schedule
            self._stream = await self._run(lambda model: model.start(voice, schedule))

    async def push(self, batch: list[int]) -> list[AudioChunk]:
        await self.open()
        stream = self._stream
        return await self._step(lambda model: model.push(stream, batch))

    async def finish(self) -> list[AudioChunk]:
        """Flush the stream (end of the speech segment); a later segment opens a new stream."""
        if self._stream is None:
            return []
        stream, self._stream = self._stream, None
        return await self._step(lambda model: model.finish(stream))

    async def _step(self, call: Any) -> list[AudioChunk]:
        def job(model: SpeechModel) -> tuple[list[bytes], float]:
            t0 = time.perf_counter()
            pcm = [int16_to_pcm16(chunk) for chunk in call(model) if len(chunk)]
            return pcm, time.perf_counter() - t0

        (pcm, seconds), ready_at = await self._run_timed(job)
        samples = sum(len(p) for p in pcm) // 2
        self._metrics.observe_decode(seconds, samples / self._speech.sample_rate)
        return [AudioChunk(p, decoded_at=ready_at) for p in pcm]

    async def _run(self, fn: Any) -> Any:
        result, _ = await self._run_timed(fn)
        return result

    async def _run_timed(self, fn: Any) -> tuple[Any, float]:
        try:
            return await self._speech.worker.run_timed(fn, group=self._group)
        except WorkerClosed as exc:
            raise SpeechError("worker_closed", "The speech decoder is not running.") from exc
        except (asyncio.CancelledError, SpeechError, BackendError):
            raise
        except Exception as exc:
            logger.exception("Token2Wav step failed")
            raise SpeechError("speech_failed", f"Speech decoding failed: {type(exc).__name__}.") from exc


def __getattr__(name: str) -> Any:
    # `Runtime` is defined in realtime.runtime (which imports this module); re-export it lazily so
    # `from realtime.pipeline import Runtime` works without an import cycle.
    if name == "Runtime":
        from realtime.runtime import Runtime

        return Runtime
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
