"""One response: pipeline events in, wire events out, with a guarded lifecycle and prompt cancellation.

A `ResponseRun` is driven by `run()` (a task in the session's task group). It emits the opening events, starts
a child task that consumes the reply stream (`Runtime.reply`: transcript text, audio chunks) and turns each audio chunk into
20-100 ms ``output_audio.delta`` frames at once, then closes the response with the status the child ended
with. `cancel()` cancels only the child: closing the pipeline iterator aborts the LLM request and drops the
worker's pending steps (in the pipeline's ``finally``), audio frames still queued for the socket are dropped by
the sender, and `run()` emits the closing events (docs/PROTOCOL.md §5.2, §6) before it returns.

Size: over 400 lines because one class follows a response from its opening events to ``response.done``
(text, audio deltas, function calls, cancellation); its lifecycle, calls and outbox already live apart.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from realtime.audio import PCM_RATE, AudioFormat, OutputEncoder, slice_pcm
from realtime.backends.base import GenerationInput
from realtime.backends.context import ContextLengthExceeded
from realtime.errors import (
    CODE_DECODER_CAPACITY,
    SERVER_ERROR,
    ErrorReport,
    PeerGone,
    PeerStalled,
)
from realtime.metrics import Metrics
from realtime.session.context_fit import ConversationFit
from realtime.session.conversation import Conversation
from realtime.session.outbox import Outbox, OutFrame
from realtime.session.response_calls import ResponseCalls
from realtime.session.response_lifecycle import CancelReason, ResponsePhase, advance, settle
from realtime.speech.reply import (
    AudioChunk,
    GenerationDone,
    ReplyProducer,
    TextDelta,
    TranscriptDelta,
    UsageMeter,
)
from realtime.speech.streams import StreamSlots
from realtime.wire.records import ContentPart, Item, ResponseRecord, new_id
from realtime.wire.server_events import EventBuilder, PartIds, encode
from streaming_parser import VocabLayout

log = logging.getLogger(__name__)

# Assistant audio kept per item for conversation.item.retrieve: beyond what fits in one frame it is dropped.
MAX_KEPT_AUDIO_BYTES = 768 * 1024


@dataclass(frozen=True)
class ResponseContext:
    """What a response needs from its session and server.

    Attributes:
        reply: starts the reply stream (`Runtime.reply`).
        events: the connection's event builder.
        outbox: the connection's outbox.
        vocab: id layout of the backend (for usage accounting).
        max_delta_ms: longest audio delta.
        on_audio: called once when the response produces its first audio (locks the session voice).
        metrics: the server's metrics.
        streams: the server's decoder stream slots (a spoken response holds one from start to end).
        stream_wait: seconds a spoken response waits for a slot before it is refused.
        on_first_output: called once when the response produces its first audio (spoken) or text (text
            only), or ends without any: input transcriptions wait for it (realtime/session/transcription.py).
        truncate: cuts an item of this response at ``audio_end_ms`` (`realtime.session.items.truncate_item`
            with the session's settings), re-applied when the response closes after a client truncate.
        on_delivered: called once ``response.done`` has been written to the socket (all its audio is out).
    """

    reply: ReplyProducer
    events: EventBuilder
    outbox: Outbox
    vocab: VocabLayout
    max_delta_ms: int
    on_audio: Callable[[], None]
    metrics: Metrics
    streams: StreamSlots
    stream_wait: float
    on_first_output: Callable[[], None] = lambda: None
    truncate: Callable[[Item, int], None] = lambda item, audio_end_ms: None
    on_delivered: Callable[[ResponseRun], None] = lambda run: None


class ResponseRun:
    """One response from ``response.created`` to ``response.done``; owned by the session task group.

    Args:
        fitter: fits the request into the model's context before it is sent (None: sent as is).

    Attributes:
        record: what the wire events describe (status, output, usage).
        request: the generation request sent to the backend (fitted once generation starts).
        cancelled: set by `cancel`; the sender drops this response's queued audio deltas from then on.
        phase: lifecycle phase.
        truncated_ms: ``audio_end_ms`` of a ``conversation.item.truncate`` of this response's message while
            it ran: the truncation is applied again once the item is final.
        first_audio_sent: `time.perf_counter()` when its first audio delta was written to the socket.
        event_id: the ``response.create`` event's id (echoed by an admission error).
    """

    def __init__(
        self,
        ctx: ResponseContext,
        record: ResponseRecord,
        request: GenerationInput,
        conversation: Conversation | None,
        fitter: ConversationFit | None = None,
        max_calls: int | None = None,
    ) -> None:
        self.ctx = ctx
        self.record = record
        self.request = request
        self.cancelled = False
        self.phase = ResponsePhase.CREATED
        self.event_id: str | None = None
        self._conversation = conversation
        self._fitter = fitter
        self._cancel_reason: CancelReason = "client_cancelled"
        self._meter = UsageMeter()  # token counts so far: usage of a response that ends cancelled
        self._child: asyncio.Task[GenerationDone | None] | None = None
        self._speaks = "audio" in record.modalities
        self._text: list[str] = []
        self._audio = bytearray()
        self._audio_overflow = False
        self._audio_locked = False
        self._calls = ResponseCalls(max_calls)
        self._started = 0.0
        self._first_text_seen = False
        self._output_started = False
        self.truncated_ms: int | None = None
        self.first_audio_sent: float | None = None
        # one resampler state per response: G.711 output is continuous across decoder chunks (no seams)
        fmt = record.output_format
        self._encoder = None if fmt is AudioFormat.PCM16 else OutputEncoder(fmt, PCM_RATE)

    @property
    def in_default_conversation(self) -> bool:
        """True unless this is an out-of-band (``conversation: "none"``) response."""
        return self._conversation is not None

    def cancel(self, reason: CancelReason) -> None:
        """Stop generating now; `run` then closes the response as cancelled with ``reason``."""
        if self.phase in (ResponsePhase.CLOSING, ResponsePhase.DONE):
            return
        if self._child is not None and self._child.done():
            return  # generation already finished: the response closes as it ended, all audio is sent
        self.cancelled = True
        self._cancel_reason = reason
        if self._child is not None:
            self._child.cancel()

    def _advance(self, target: ResponsePhase) -> None:
        self.phase = advance(self.phase, target)

    async def run(self) -> None:
        """Emit the whole response. Cancelling this task (connection closing) aborts without closing events.

        A spoken response first takes a decoder stream slot; when none comes free within the wait, the client
        gets an ``error`` (``decoder_capacity_reached``) instead of the response, and the session goes on.

        Raises:
            PeerStalled, PeerGone: the client stopped reading or left (the connection ends the session).
        """
        ctx = self.ctx
        if not self._speaks:
            await self._run()
            return
        if not await ctx.streams.acquire(ctx.stream_wait):
            report = ErrorReport(
                SERVER_ERROR,
                CODE_DECODER_CAPACITY,
                f"All {ctx.streams.limit} speech decoder streams of the server are busy; no response was "
                f"started. Try again shortly.",
                event_id=self.event_id,
            )
            ctx.metrics.error(report.code)
            await ctx.outbox.put(ctx.events.error(report))
            return
        try:
            await self._run()
        finally:
            ctx.streams.release()

    async def _run(self) -> None:
        ctx, record = self.ctx, self.record
        ctx.metrics.response_started()
        self._started = time.perf_counter()
        finished = False
        try:
            await ctx.outbox.put(ctx.events.response_created(record))
            item = Item(
                id=new_id("item"), kind="message", role="assistant", status="in_progress", spoken=self._speaks
            )
            part = (
                ContentPart("output_audio", transcript="")
                if self._speaks
                else ContentPart("output_text", text="")
            )
            record.output.append(item)
            await ctx.outbox.put(ctx.events.output_item_added(record.id, 0, item))
            if self._conversation is not None:
                previous = self._conversation.insert(item, admitted=True)  # room checked at response.create
                await ctx.outbox.put(ctx.events.item_added(item, previous))
            item.content.append(part)
            ids = PartIds(record.id, item.id, 0, 0)
            await ctx.outbox.put(ctx.events.content_part(False, ids, part))
            if self.cancelled:  # cancelled before the child existed
                await self._close(item, part, ids, None, None)
                finished = True
                return
            self._advance(ResponsePhase.STREAMING)
            self._child = asyncio.create_task(self._generate(ids), name=f"generate {record.id}")
            try:
                await asyncio.wait({self._child})
            finally:
                if not self._child.done():
                    self._child.cancel()
                    await asyncio.wait({self._child})
                elif not self._child.cancelled():
                    self._child.exception()  # mark its failure seen, also when this task is being cancelled
            done, error = self._outcome(self._child)
            if isinstance(error, PeerStalled | PeerGone):
                raise error
            await self._close(item, part, ids, done, error)
            finished = True
        finally:
            self._first_output()
            if not finished:
                ctx.metrics.response_finished("cancelled")

    def _first_output(self) -> None:
        if not self._output_started:
            self._output_started = True
            self.ctx.on_first_output()

    def _outcome(
        self, child: asyncio.Task[GenerationDone | None]
    ) -> tuple[GenerationDone | None, BaseException | None]:
        if child.cancelled():
            return None, None
        error = child.exception()
        if error is not None:
            return None, error
        return child.result(), None

    async def _fit(self) -> None:
        """Fit the request into the context (counting tokenises the prompt: off the loop); the prompt length
        is known from here on, so even a failed response reports its input tokens."""
        fitter = self._fitter
        if fitter is None:
            return
        floor = fitter.floor(self.request)
        try:
            result = await asyncio.to_thread(fitter.fit, self.request, floor)
        except ContextLengthExceeded as exc:
            self._meter.input_tokens = exc.prompt_tokens or 0
            raise
        fitter.remember(self.request, result)
        self.request = result.request
        self._meter.input_tokens = result.prompt_tokens

    async def _generate(self, ids: PartIds) -> GenerationDone | None:
        ctx = self.ctx
        await self._fit()
        events = ctx.reply(self.request, voice=self.record.voice, meter=self._meter)
        done: GenerationDone | None = None
        try:
            async for event in events:
                if isinstance(event, AudioChunk):
                    await self._audio_chunk(ids, event.pcm16)
                elif isinstance(event, TranscriptDelta | TextDelta):
                    await self._text_piece(ids, event)
                elif isinstance(event, GenerationDone):
                    done = event
        finally:
            closer = getattr(events, "aclose", None)
            if closer is not None:
                await closer()
        return done

    async def _text_piece(self, ids: PartIds, event: TranscriptDelta | TextDelta) -> None:
        if not event.text:
            return
        if self._speaks and isinstance(event, TranscriptDelta):
            self._first_text()
            self._text.append(event.text)
            await self.ctx.outbox.put(self.ctx.events.transcript_delta(ids, event.text))
            return
        # unspoken text (a text-only reply, or text after <tts_end>) may hold function calls
        await self._plain_text(ids, self._calls.feed(event.text))

    async def _plain_text(self, ids: PartIds, text: str) -> None:
        # after <tts_end> plain text is neither spoken nor part of the transcript
        if text and not self._speaks:
            self._first_text()
            self._text.append(text)
            await self.ctx.outbox.put(self.ctx.events.text_delta(ids, text))

    def _first_text(self) -> None:
        if not self._speaks:
            self._first_output()
        if not self._first_text_seen:
            self._first_text_seen = True
            self.ctx.metrics.observe_time_to_first_transcript(time.perf_counter() - self._started)

    async def _audio_chunk(self, ids: PartIds, pcm16: bytes) -> None:
        if not self._speaks or not pcm16:
            return
        ready = time.perf_counter()
        if not self._audio_locked:
            self._audio_locked = True
            self.ctx.on_audio()
            self._first_output()
        if self._encoder is None:
            wire = pcm16
        else:  # resampling to 8 kHz costs milliseconds per chunk: keep it off the event loop
            wire = await asyncio.to_thread(self._encoder.encode, pcm16)
        await self._emit_audio(ids, wire, ready)

    async def _emit_audio(self, ids: PartIds, wire: bytes, ready: float) -> None:
        fmt = self.record.output_format
        pieces = slice_pcm(wire, fmt.sample_rate, self.ctx.max_delta_ms, sample_width=fmt.bytes_per_sample)
        for piece in pieces:
            event = self.ctx.events.audio_delta(ids, base64.b64encode(piece).decode("ascii"))
            frame = OutFrame(encode(event), owner=self, on_sent=self._sent_callback(piece, ready))
            await self.ctx.outbox.put_frame(frame)

    def _sent_callback(self, piece: bytes, ready: float) -> Callable[[], None]:
        fmt = self.record.output_format

        def sent() -> None:
            if self.first_audio_sent is None:
                self.first_audio_sent = time.perf_counter()
            item = self.record.output[0]
            item.audio_samples += len(piece) // fmt.bytes_per_sample * PCM_RATE // fmt.sample_rate
            if not self._audio_overflow:
                if len(self._audio) + len(piece) > MAX_KEPT_AUDIO_BYTES:
                    self._audio_overflow = True
                    self._audio.clear()
                else:
                    self._audio.extend(piece)
            self.ctx.metrics.observe_delta_overhead(time.perf_counter() - ready)

        return sent

    async def _close(
        self,
        item: Item,
        part: ContentPart,
        ids: PartIds,
        done: GenerationDone | None,
        error: BaseException | None,
    ) -> None:
        self._advance(ResponsePhase.CLOSING)
        ctx, record = self.ctx, self.record
        self._set_status(done, error)
        if done is not None:
            await self._plain_text(ids, self._calls.finish())
        text = "".join(self._text)
        if self._speaks and self._encoder is not None and self._audio_locked and done is not None:
            await self._emit_audio(ids, self._encoder.flush(), time.perf_counter())  # the resampler's tail
        if self._speaks:
            part.transcript = text
            await ctx.outbox.put(ctx.events.audio_done(ids))
            await ctx.outbox.put(ctx.events.transcript_done(ids, text))
        else:
            part.text = text
            await ctx.outbox.put(ctx.events.text_done(ids, text))
        await ctx.outbox.put(ctx.events.content_part(True, ids, part))
        item.status = "completed" if record.status == "completed" else "incomplete"
        if done is not None:
            item.output_ids = done.output_ids
        if self.truncated_ms is not None:  # the client truncated while it ran: keep what it heard
            if item.output_ids is None:  # cancelled: cut the ids generated so far, exactly
                item.output_ids = tuple(self._meter.output_ids)
            ctx.truncate(item, self.truncated_ms)
        await ctx.outbox.put(ctx.events.output_item_done(record.id, 0, item))
        if self._conversation is not None:
            for event in ctx.events.item_done(item):
                await ctx.outbox.put(event)
        if done is not None:  # function calls the model wrote follow its message (output_index 1, ...)
            calls = await self._calls.emit(ctx.outbox.put, ctx.events, record, self._conversation)
            item.calls_in_output_ids = tuple(call.id for call in calls)
        # the sender runs the on_sent hooks of this response's deltas before it sends response.done
        await ctx.outbox.put_frame(
            OutFrame(encode(ctx.events.response_done(record)), on_sent=self._keep_audio(part, item))
        )
        self._advance(ResponsePhase.DONE)
        ctx.metrics.response_finished(record.status)

    def _keep_audio(self, part: ContentPart, item: Item) -> Callable[[], None]:
        def keep() -> None:
            part.audio = None if self._audio_overflow or not self._speaks else bytes(self._audio)
            item.audio_dropped = self._audio_overflow
            if self.truncated_ms is not None:
                self.ctx.truncate(item, self.truncated_ms)
            self.ctx.on_delivered(self)

        return keep

    def _set_status(self, done: GenerationDone | None, error: BaseException | None) -> None:
        settle(self.record, done, error, self._cancel_reason, self._meter, self.ctx.vocab, self.ctx.metrics)
