"""One response: pipeline events in, wire events out, with a guarded lifecycle and prompt cancellation.

A `ResponseRun` is driven by `run()` (a task in the session's task group). It emits the opening events, starts
a child task that consumes the reply stream (`Runtime.reply`: transcript text, audio chunks) and turns each
audio chunk into 20-100 ms pieces of output audio at once, then closes the response with the status the child
ended with. `cancel()` cancels only the child: closing the pipeline iterator aborts the LLM request and drops
the worker's pending steps (in the pipeline's ``finally``), audio still queued for the transport is dropped by
the sender, and `run()` emits the closing events (docs/PROTOCOL.md §5.2, §6) before it returns.

The seam to the rest of the session is typed and one-way: a response reads immutable `ResponseServices`
(reply producer, event builder, outbox, metrics, decoder stream slots) and reports to its `ResponseHost` (the
`Session`): first audio, first output, truncation, delivery. What reached the transport is plain state
(`AudioDelivery`), written by the sender through `frame_sent` in outbox order.

Size: over 400 lines because one class follows a response from its opening events to ``response.done``
(text, audio, function calls, cancellation, delivery); its lifecycle, calls, fit and outbox live apart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from realtime.audio import PCM_RATE, AudioFormat, OutputEncoder, slice_pcm
from realtime.backends.base import GenerationInput
from realtime.errors import CODE_DECODER_CAPACITY, SERVER_ERROR, ErrorReport, PeerGone, PeerStalled
from realtime.metrics import Metrics
from realtime.session.context_fit import ConversationFit
from realtime.session.conversation import Conversation
from realtime.session.outbox import AudioFrame, EventFrame, Outbox, OutFrame
from realtime.session.response_calls import ResponseCalls
from realtime.session.response_lifecycle import CancelReason, ResponsePhase, advance, settle
from realtime.session.transport import OutputAudio
from realtime.speech.admission import DecoderAdmission, decoder_busy_message
from realtime.speech.reply import (
    AudioChunk,
    GenerationDone,
    ReplyProducer,
    TextDelta,
    TranscriptDelta,
    UsageMeter,
)
from realtime.wire.records import ContentPart, Item, ResponseRecord, new_id
from realtime.wire.server_events import EventBuilder, PartIds, encode
from streaming_parser import VocabLayout

log = logging.getLogger(__name__)

# Assistant audio kept per item for conversation.item.retrieve: beyond what fits in one frame it is dropped.
MAX_KEPT_AUDIO_BYTES = 768 * 1024


@dataclass(frozen=True)
class ResponseServices:
    """What every response of one session shares; immutable, built once per session.

    Attributes:
        reply: starts the reply stream (`Runtime.reply`).
        events: the connection's event builder.
        outbox: the connection's outbox.
        metrics: the server's metrics.
        streams: the server's decoder admission (a spoken response holds a stream from start to end; every
            door passes the same gate).
        stream_wait_s: seconds a spoken response waits in line for the decoder before it is refused.
        vocab: id layout of the backend (for usage accounting).
        max_delta_ms: longest piece of output audio.
    """

    reply: ReplyProducer
    events: EventBuilder
    outbox: Outbox
    metrics: Metrics
    streams: DecoderAdmission
    stream_wait_s: float
    vocab: VocabLayout
    max_delta_ms: int


class ResponseHost(Protocol):
    """What a response tells the session that started it (`realtime.session.session.Session`). Event loop only."""

    async def audio_started(self, run: ResponseRun) -> None:
        """``run`` is about to queue its first audio (the session's voice is locked from now on)."""
        ...

    def first_output(self, run: ResponseRun) -> None:
        """``run`` produced its first audio (spoken) or text (text only), or ended without any. Called once."""
        ...

    def truncate(self, item: Item, audio_end_ms: int) -> None:
        """Cut ``item`` (of ``run``) at ``audio_end_ms`` with the session's settings."""
        ...

    def delivered(self, run: ResponseRun) -> None:
        """``run``'s ``response.done`` was handed to the transport, and so was all its audio before it."""
        ...


@dataclass
class AudioDelivery:
    """What of one response's audio has been handed to the transport (written by the sender only).

    Attributes:
        first_at: `time.perf_counter()` when its first audio was handed over (None: none yet).
        kept: the audio delivered so far, in the output format, for ``conversation.item.retrieve``.
        overflow: more than `MAX_KEPT_AUDIO_BYTES` was delivered: nothing is kept.
    """

    first_at: float | None = None
    kept: bytearray = field(default_factory=bytearray)
    overflow: bool = False

    def add(self, audio: OutputAudio, now: float) -> None:
        """Count one piece handed over at ``now``."""
        if self.first_at is None:
            self.first_at = now
        if self.overflow:
            return
        if len(self.kept) + len(audio.wire) > MAX_KEPT_AUDIO_BYTES:
            self.overflow = True
            self.kept.clear()
        else:
            self.kept.extend(audio.wire)

    def stored_audio(self) -> bytes | None:
        """The audio an item keeps for retrieval (None when it overflowed)."""
        return None if self.overflow else bytes(self.kept)


class ResponseRun:
    """One response from ``response.created`` to ``response.done``; owned by the session task group.

    Args:
        services: the session's shared services.
        host: the session, told of first audio, first output and delivery.
        record: what the wire events describe.
        request: the generation request.
        conversation: the default conversation for an in-band response; None out of band.
        fitter: fits the request into the model's context before it is sent (None: sent as is).
        max_calls: most function calls the response may emit.

    Attributes:
        record: what the wire events describe (status, output, usage).
        request: the generation request sent to the backend (fitted once generation starts).
        phase: lifecycle phase.
        truncated_ms: ``audio_end_ms`` of a truncation of this response's message while it ran: applied again
            once the item is final.
        delivery: what of its audio reached the transport.
        event_id: the ``response.create`` event's id (echoed by an admission error).
    """

    def __init__(
        self,
        services: ResponseServices,
        host: ResponseHost,
        record: ResponseRecord,
        request: GenerationInput,
        conversation: Conversation | None,
        fitter: ConversationFit | None = None,
        max_calls: int | None = None,
    ) -> None:
        self.services = services
        self.record = record
        self.request = request
        self.phase = ResponsePhase.CREATED
        self.event_id: str | None = None
        self.truncated_ms: int | None = None
        self.delivery = AudioDelivery()
        self._host = host
        self._conversation = conversation
        self._fitter = fitter
        self._cancelled = False  # generation was cancelled
        self._audio_cleared = False  # audio still queued for the transport must not go out
        self._cancel_reason: CancelReason = "client_cancelled"
        self._meter = UsageMeter()  # token counts so far: usage of a response that ends cancelled
        self._child: asyncio.Task[GenerationDone | None] | None = None
        self._speaks = "audio" in record.modalities
        self._text: list[str] = []
        self._audio_started = False
        self._calls = ResponseCalls(max_calls)
        self._started = 0.0
        self._first_text_seen = False
        self._output_started = False
        # one resampler state per response: G.711 output is continuous across decoder chunks (no seams)
        fmt = record.output_format
        self._encoder = None if fmt is AudioFormat.PCM16 else OutputEncoder(fmt, PCM_RATE)

    @property
    def in_default_conversation(self) -> bool:
        """True unless this is an out-of-band (``conversation: "none"``) response."""
        return self._conversation is not None

    @property
    def cancelled(self) -> bool:
        """True once its audio still queued must be dropped: it was cancelled, or its audio was cleared."""
        return self._cancelled or self._audio_cleared

    def cancel(self, reason: CancelReason) -> None:
        """Stop generating now; `run` then closes the response as cancelled with ``reason``."""
        if self.phase in (ResponsePhase.CLOSING, ResponsePhase.DONE):
            return
        if self._child is not None and self._child.done():
            return  # generation already finished: the response closes as it ended, all audio is sent
        self._cancelled = True
        self._cancel_reason = reason
        if self._child is not None:
            self._child.cancel()

    def drop_audio(self) -> None:
        """Audio of this response still queued for the transport is dropped (the peer's buffer was cleared)."""
        self._audio_cleared = True

    def _advance(self, target: ResponsePhase) -> None:
        self.phase = advance(self.phase, target)

    async def run(self) -> None:
        """Emit the whole response. Cancelling this task (connection closing) aborts without closing events.

        A spoken response first passes the decoder's admission (a stream slot and real-time room); when it
        gets none within the wait, the client gets an ``error`` (``decoder_capacity_reached``) instead of the
        response, and the session goes on. The wait comes before ``response.created``: it is the response's
        queue time.

        Raises:
            PeerStalled, PeerGone: the client stopped reading or left (the connection ends the session).
        """
        services = self.services
        if not self._speaks:
            await self._run()
            return
        if not await services.streams.acquire(services.stream_wait_s):
            report = ErrorReport(
                SERVER_ERROR,
                CODE_DECODER_CAPACITY,
                decoder_busy_message(services.streams, services.stream_wait_s),
                event_id=self.event_id,
            )
            services.metrics.error(report.code)
            await services.outbox.put(services.events.error(report))
            return
        try:
            await self._run()
        finally:
            services.streams.release()

    async def _run(self) -> None:
        services, record, outbox, events = (
            self.services,
            self.record,
            self.services.outbox,
            self.services.events,
        )
        services.metrics.response_started()
        self._started = time.perf_counter()
        finished = False
        try:
            await outbox.put(events.response_created(record))
            item = Item(
                id=new_id("item"), kind="message", role="assistant", status="in_progress", spoken=self._speaks
            )
            part = (
                ContentPart("output_audio", transcript="")
                if self._speaks
                else ContentPart("output_text", text="")
            )
            record.output.append(item)
            await outbox.put(events.output_item_added(record.id, 0, item))
            if self._conversation is not None:
                previous = self._conversation.insert(item, admitted=True)  # room checked at response.create
                await outbox.put(events.item_added(item, previous))
            item.content.append(part)
            ids = PartIds(record.id, item.id, 0, 0)
            await outbox.put(events.content_part(False, ids, part))
            if self._cancelled:  # cancelled before the child existed
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
                services.metrics.response_finished("cancelled")

    def _first_output(self) -> None:
        if not self._output_started:
            self._output_started = True
            self._host.first_output(self)

    def _outcome(
        self, child: asyncio.Task[GenerationDone | None]
    ) -> tuple[GenerationDone | None, BaseException | None]:
        if child.cancelled():
            return None, None
        error = child.exception()
        if error is not None:
            return None, error
        return child.result(), None

    async def _generate(self, ids: PartIds) -> GenerationDone | None:
        if self._fitter is not None:  # the prompt length is known from here on, even if the response fails
            self.request = await self._fitter.apply(self.request, self._meter)
        events = self.services.reply(self.request, voice=self.record.voice, meter=self._meter)
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
            await self.services.outbox.put(self.services.events.transcript_delta(ids, event.text))
            return
        # unspoken text (a text-only reply, or text after <tts_end>) may hold function calls
        await self._plain_text(ids, self._calls.feed(event.text))

    async def _plain_text(self, ids: PartIds, text: str) -> None:
        # after <tts_end> plain text is neither spoken nor part of the transcript
        if text and not self._speaks:
            self._first_text()
            self._text.append(text)
            await self.services.outbox.put(self.services.events.text_delta(ids, text))

    def _first_text(self) -> None:
        if not self._speaks:
            self._first_output()
        if not self._first_text_seen:
            self._first_text_seen = True
            self.services.metrics.observe_time_to_first_transcript(time.perf_counter() - self._started)

    async def _audio_chunk(self, ids: PartIds, pcm16: bytes) -> None:
        if not self._speaks or not pcm16:
            return
        ready = time.perf_counter()
        if not self._audio_started:
            self._audio_started = True
            await self._host.audio_started(self)
            self._first_output()
        if self._encoder is None:
            wire = pcm16
        else:  # resampling to 8 kHz costs milliseconds per chunk: keep it off the event loop
            wire = await asyncio.to_thread(self._encoder.encode, pcm16)
        await self._emit_audio(ids, wire, ready)

    async def _emit_audio(self, ids: PartIds, wire: bytes, ready: float) -> None:
        services, fmt = self.services, self.record.output_format
        pieces = slice_pcm(wire, fmt.sample_rate, services.max_delta_ms, sample_width=fmt.bytes_per_sample)
        for piece in pieces:
            audio = OutputAudio(ids, piece, fmt, services.events)
            await services.outbox.put_frame(AudioFrame(audio, owner=self, ready_at=ready))

    def frame_sent(self, frame: OutFrame) -> None:
        """The sender handed ``frame`` to the transport: count delivered audio; after ``response.done``
        (queued behind all of this response's audio), store the audio and tell the host."""
        item = self.record.output[0]
        if isinstance(frame, AudioFrame):  # the only event frame a response owns is its response.done
            now = time.perf_counter()
            self.delivery.add(frame.audio, now)
            item.audio_samples += frame.audio.samples
            self.services.metrics.observe_delta_overhead(now - frame.ready_at)
            return
        if self._speaks:
            item.content[0].audio = self.delivery.stored_audio()
        if self.truncated_ms is not None:  # cut again: the stored audio arrived after the earlier cut
            self._host.truncate(item, self.truncated_ms)
        self._host.delivered(self)

    async def _close(
        self,
        item: Item,
        part: ContentPart,
        ids: PartIds,
        done: GenerationDone | None,
        error: BaseException | None,
    ) -> None:
        self._advance(ResponsePhase.CLOSING)
        outbox, events, record = self.services.outbox, self.services.events, self.record
        self._set_status(done, error)
        if done is not None:
            await self._plain_text(ids, self._calls.finish())
        text = "".join(self._text)
        if self._speaks and self._encoder is not None and self._audio_started and done is not None:
            await self._emit_audio(ids, self._encoder.flush(), time.perf_counter())  # the resampler's tail
        if self._speaks:
            part.transcript = text
            await outbox.put(events.audio_done(ids))
            await outbox.put(events.transcript_done(ids, text))
        else:
            part.text = text
            await outbox.put(events.text_done(ids, text))
        await outbox.put(events.content_part(True, ids, part))
        item.status = "completed" if record.status == "completed" else "incomplete"
        if done is not None:
            item.output_ids = done.output_ids
        if self.truncated_ms is not None:  # the client truncated while it ran: keep what it heard
            if item.output_ids is None:  # cancelled: cut the ids generated so far, exactly
                item.output_ids = tuple(self._meter.output_ids)
            self._host.truncate(item, self.truncated_ms)
        await outbox.put(events.output_item_done(record.id, 0, item))
        if self._conversation is not None:
            for event in events.item_done(item):
                await outbox.put(event)
        if done is not None:  # function calls the model wrote follow its message (output_index 1, ...)
            calls = await self._calls.emit(outbox.put, events, record, self._conversation)
            item.calls_in_output_ids = tuple(call.id for call in calls)
        # FIFO: the sender hands over every audio frame of this response before this one (see frame_sent)
        await outbox.put_frame(EventFrame(encode(events.response_done(record)), owner=self))
        self._advance(ResponsePhase.DONE)
        self.services.metrics.response_finished(record.status)

    def _set_status(self, done: GenerationDone | None, error: BaseException | None) -> None:
        services = self.services
        settle(self.record, done, error, self._cancel_reason, self._meter, services.vocab, services.metrics)
