"""One Realtime session: its state (settings, conversation, input audio, responses) and the dispatch of
client events onto it, whatever the transport.

The connection (realtime/session/connection.py) feeds `Session.handle` one inbound message at a time; a cancel
is processed synchronously (its ``response.done`` is queued before the next client event is read,
docs/PROTOCOL.md §6.1). Each response runs as a task of the connection's task group and reports back through
the `ResponseHost` methods this class implements (`audio_started`, `first_output`, `truncate`, `delivered`).
Where the transport plays the output audio itself (`Playback`), the session knows what the peer heard
(realtime/session/played_audio.py). A transcription session (``?intent=transcription``, docs/PROTOCOL.md §4.8)
is the same state with no responses: committed audio is transcribed, and its items form a rolling history.

Size: over 400 lines because it dispatches every client event of the protocol onto one session's
state; connection loops, input audio, transcription, idle timer, played audio and response planning live
apart.
"""

from __future__ import annotations

import asyncio
import logging
import time

from realtime.errors import (
    CODE_ACTIVE_RESPONSE,
    CODE_CANCEL_NOT_ACTIVE,
    CODE_COMMIT_EMPTY,
    CODE_INVALID_VALUE,
    CODE_SHUTTING_DOWN,
    CODE_TOO_MANY_RESPONSES,
    ErrorReport,
    ProtocolViolation,
    RealtimeError,
    describe_exception,
)
from realtime.session.context_fit import ConversationFit
from realtime.session.conversation import Conversation, ConversationLimits
from realtime.session.idle import IdleTimer, estimated_playback_left_s
from realtime.session.input_audio import InputAudioBuffer
from realtime.session.items import (
    check_truncate,
    item_from_client,
    sent_audio_ms,
    truncate_item,
    user_audio_item,
)
from realtime.session.outbox import Outbox
from realtime.session.played_audio import PlayedAudio
from realtime.session.presets import updated_config, voice_resolver
from realtime.session.response import ResponseRun, ResponseServices
from realtime.session.response_plan import plan_response
from realtime.session.responses import ResponseTasks
from realtime.session.transcription import FirstOutputGate, InputTranscriptions
from realtime.session.transport import Inbound, PeerAudio, Playback, Undecodable
from realtime.session.unused_content import UnusedContent
from realtime.session.vad import VadEvent
from realtime.speech.runtime import Runtime
from realtime.wire.client_events import (
    AudioAppend,
    ClientEvent,
    ItemCreate,
    ResponseCreate,
    SessionUpdate,
    unsupported_event_type,
)
from realtime.wire.handshake import Dialect
from realtime.wire.records import Item, new_id
from realtime.wire.server_events import EventBuilder
from realtime.wire.session_config import SessionConfig, SessionType
from realtime.wire.transcription_session import (
    TranscriptionSessionUpdate,
    responses_refused,
    session_type_mismatch,
)

log = logging.getLogger(__name__)

OUTBOX_FRAMES = 256  # frames queued for the transport before producers wait
MIN_COMMIT_MS = 100  # OpenAI: a commit needs at least 100 ms of audio
MS_PER_SECOND = 1000
BYTES_PER_MB = 1024 * 1024


class Session:
    """State of one connection: config, conversation, input audio buffer, VAD and active responses.

    Only the connection's own tasks touch it (single event loop, no locks). It is the `ResponseHost` of its
    responses.

    Args:
        runtime: the server's shared runtime.
        dialect: the event family of the connection.
        model: the model id ``session.model`` reports.
        preset: the configuration the session starts with (the one an ephemeral key carries,
            realtime/http/keys.py) instead of the defaults; ``session.update`` changes it as usual.

    Attributes:
        services: what every response of the session shares.
        quiet: set while no response is in progress (the shutdown drain waits on it).
    """

    def __init__(
        self,
        runtime: Runtime,
        dialect: Dialect,
        model: str,
        session_type: SessionType = "realtime",
        preset: SessionConfig | None = None,
    ) -> None:
        self.runtime = runtime
        self.id = new_id("sess")
        self.events = EventBuilder(dialect)
        # a minted key's configuration (its type included) wins over the URL's ?intent=
        self.config = preset or SessionConfig(model=model, voice=runtime.voices.default, type=session_type)
        config = runtime.config
        self.conversation = Conversation(
            ConversationLimits(
                items=config.max_conversation_items,
                stored_bytes=config.max_conversation_mb * BYTES_PER_MB,
                audio_seconds=config.max_conversation_audio_seconds,
            )
        )
        self.outbox = Outbox(OUTBOX_FRAMES, config.send_timeout)
        self.services = ResponseServices(
            reply=runtime.reply,
            events=self.events,
            outbox=self.outbox,
            metrics=runtime.metrics,
            streams=runtime.decoder_streams,
            stream_wait_s=config.decoder_wait_seconds,
            vocab=runtime.backend.vocab,
            max_delta_ms=config.max_audio_delta_ms,
        )
        self.voice_locked = False
        self.input_audio = InputAudioBuffer(self.config.input_format)
        self.responses = ResponseTasks()
        self.quiet = self.responses.quiet
        self._tasks: asyncio.TaskGroup | None = None
        self._played: PlayedAudio | None = None
        self._gate = FirstOutputGate()
        self.transcriptions = InputTranscriptions(
            runtime.backend, self.events, self.outbox, self._gate, runtime.transcriptions
        )
        self.idle = IdleTimer(self._idle_timeout)
        self.unused = UnusedContent(runtime.metrics, self.id)

    @property
    def transcribes_only(self) -> bool:
        """A transcription session (``?intent=transcription``): input audio is transcribed, never answered."""
        return self.config.type == "transcription"

    async def open(self, tasks: asyncio.TaskGroup, playback: Playback | None = None) -> None:
        """Start serving: responses become tasks of ``tasks``; queue ``session.created`` and friends.

        Args:
            tasks: the connection's task group.
            playback: the transport's `Playback`, when it plays the output audio itself (WebRTC).
        """
        self._tasks = tasks
        if playback is not None:
            self._played = PlayedAudio(playback, self.events, self.outbox)
        for event in self.events.session_created(self.config, self.id):
            await self.outbox.put(event)
        for event in self.events.conversation_created(self.config, self.conversation.id):
            await self.outbox.put(event)
        self._configure_vad()

    def preset(self, update: SessionUpdate) -> None:
        """Apply a session configuration before `open`, so that ``session.created`` already reports it.

        A WebRTC call is created with its configuration (the ``session`` form field of ``POST
        /v1/realtime/calls``, or the session an ephemeral key is bound to); a WebSocket only gets one by
        ``session.update`` after ``session.created``. No event is sent.

        Raises:
            ProtocolViolation: what a ``session.update`` with this configuration would be refused with.
        """
        self._session_update(update)

    def abort_runs(self) -> None:
        """Stop every response and transcription without closing events; the sender drops queued audio."""
        self.idle.disarm()
        self.transcriptions.cancel_all()
        if self._played is not None:
            self._played.close()
        self.responses.abort_all()

    async def report(self, report: ErrorReport) -> None:
        """Count and queue an ``error`` event."""
        self.runtime.metrics.error(report.code)
        await self.outbox.put(self.events.error(report))

    # dispatch --------------------------------------------------------------------------------------------
    async def handle(self, inbound: Inbound) -> None:
        """Apply one message from the transport. Raises `RealtimeError` subclasses for the client to see, and
        re-raises what an `Undecodable` frame carries."""
        if isinstance(inbound, Undecodable):
            raise inbound.error
        if isinstance(inbound, PeerAudio):
            await self._append(await self.input_audio.from_track(inbound.pcm16))
            return
        try:
            await self._dispatch(inbound)
        except RealtimeError as exc:
            if exc.event_id is None:
                exc.event_id = getattr(inbound, "event_id", None)
            raise

    async def _dispatch(self, event: ClientEvent) -> None:
        if isinstance(event, AudioAppend):
            await self._append(event.audio)
        elif isinstance(event, SessionUpdate | TranscriptionSessionUpdate):
            self._session_update(event)
            await self.outbox.put(self.events.session_updated(self.config, self.id))
        elif isinstance(event, ItemCreate):
            await self._item_create(event)
        elif isinstance(event, ResponseCreate):
            await self._response_create(event)
        elif event.type == "input_audio_buffer.commit":
            await self._commit()
        elif event.type == "input_audio_buffer.clear":
            self.input_audio.clear()
            await self.outbox.put(self.events.cleared())
        elif event.type == "conversation.item.retrieve":
            await self.outbox.put(self.events.item_retrieved(self.conversation.get(event.item_id)))
        elif event.type == "conversation.item.truncate":
            await self._truncate(event.item_id, event.content_index, event.audio_end_ms)
        elif event.type == "conversation.item.delete":
            await self._delete(event.item_id)
        elif event.type == "response.cancel":
            await self._cancel(event.response_id)
        elif event.type == "output_audio_buffer.clear":
            if self._played is None:  # the WebSocket: OpenAI refuses it like an unknown type
                raise unsupported_event_type(event.type)
            await self._cut_playback()

    # session ---------------------------------------------------------------------------------------------
    def _session_update(self, event: SessionUpdate | TranscriptionSessionUpdate) -> None:
        old = self.config
        transcription = isinstance(event, TranscriptionSessionUpdate)
        if transcription != self.transcribes_only:  # the type is fixed when the session opens
            raise session_type_mismatch(old.type, beta=self.events.beta)
        config = updated_config(
            old,
            event,
            voices=self.runtime.voices.accepted_names(),
            voice_locked=self.voice_locked,
            beta=self.events.beta,
        )
        self.config = config
        if (old.turn_detection, old.input_format) != (config.turn_detection, config.input_format):
            self._configure_vad()

    def _configure_vad(self) -> None:
        self.idle.disarm()
        self.input_audio.configure(self.config.turn_detection, self.config.input_format)

    # input audio -----------------------------------------------------------------------------------------
    async def _append(self, wire: bytes) -> None:
        for vad_event in await self.input_audio.append(wire):
            await self._on_vad(vad_event)

    async def _commit(self) -> None:
        buffered = self.input_audio.buffered_ms
        if buffered < MIN_COMMIT_MS:
            raise ProtocolViolation(
                CODE_COMMIT_EMPTY,
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {buffered:.2f}ms of audio.",
            )
        audio = self.input_audio
        item_id, audio.speech_item_id = audio.speech_item_id or new_id("item"), None
        self._transcribe(await self._commit_item(item_id))

    async def _commit_item(self, item_id: str) -> Item:
        item = user_audio_item(self.input_audio.peek(), self.config.input_format)
        item.id = item_id
        if self.transcribes_only:  # a rolling history: the oldest items make room (docs/PROTOCOL.md §4.8)
            self.conversation.evict_for(item)
        previous = self.conversation.insert(item)  # a full conversation refuses it: the audio stays buffered
        self.input_audio.clear()
        await self.outbox.put(self.events.committed(item.id, previous))
        await self.outbox.put(self.events.item_added(item, previous))
        for event in self.events.item_done(item):
            await self.outbox.put(event)
        return item

    def _transcribe(self, item: Item) -> None:
        """Start the input transcription of a committed item when the session enables it."""
        if self.config.transcription is not None and self._tasks is not None:
            self.transcriptions.start(self._tasks, item, self.config.transcription)

    async def _on_vad(self, event: VadEvent) -> None:
        settings = self.config.turn_detection
        if settings is None:
            return
        if event.kind == "start":
            self.idle.disarm()
            self.input_audio.speech_item_id = new_id("item")
            # keep prefix padding before the detected start, drop older audio
            start_ms = max(event.ms - settings.prefix_padding_ms, 0)
            # OpenAI's order (docs/PROTOCOL.md §6.2): speech_started first, then the interrupted response closes
            await self.outbox.put(self.events.speech_started(self.input_audio.speech_item_id, start_ms))
            if settings.interrupt_response and self.responses.default is not None:
                await self.responses.cancel(self.responses.default, "turn_detected")
            if settings.interrupt_response and self._played is not None and self._played.playing:
                await self._cut_playback()  # the transport knows what was heard: truncate there, clear
            return
        item_id = self.input_audio.speech_item_id or new_id("item")
        self.input_audio.speech_item_id = None
        await self.outbox.put(self.events.speech_stopped(item_id, event.ms))
        if self.input_audio.buffered_ms < MIN_COMMIT_MS:
            return
        await self._commit_and_respond(item_id, settings.create_response and not self.transcribes_only)

    async def _commit_and_respond(self, item_id: str, respond: bool) -> None:
        """A server-VAD turn end: commit, start the response, then the transcription (so it goes second)."""
        item = await self._commit_item(item_id)
        try:
            if respond:  # refused with conversation_already_has_active_response while one runs
                await self._response_create(ResponseCreate.with_session_defaults())
        finally:
            self._transcribe(item)

    async def _idle_timeout(self) -> None:
        """The idle timer fired: ``timeout_triggered``, commit the (silent) buffer, respond."""
        settings = self.config.turn_detection
        if settings is None or settings.idle_timeout_ms is None or self.responses.default is not None:
            return
        if self.input_audio.speech_item_id is not None:  # the user is speaking: the VAD will end the turn
            return
        item_id = new_id("item")
        end_ms = round(self.input_audio.total_ms)
        start_ms = max(end_ms - settings.idle_timeout_ms, 0)
        try:
            await self.outbox.put(self.events.timeout_triggered(item_id, start_ms, end_ms))
            await self._commit_and_respond(item_id, settings.create_response)
        except RealtimeError as exc:  # runs as its own task: report, never crash the connection
            await self.report(describe_exception(exc))

    def _arm_idle(self, run: ResponseRun) -> None:
        """A response's ``response.done`` is out: start the idle timeout from the end of its playback."""
        settings = self.config.turn_detection
        if (
            settings is None
            or settings.kind != "server_vad"
            or settings.idle_timeout_ms is None
            or self.events.beta  # beta has no timeout_triggered event
            or self._tasks is None
            or self.responses.default not in (None, run)  # (its task may still run when its done is out)
        ):
            return
        self.idle.arm(self._tasks, self._playback_left_s(run) + settings.idle_timeout_ms / MS_PER_SECOND)

    def _playback_left_s(self, run: ResponseRun) -> float:
        """Seconds until the peer has played ``run``'s audio: known where the transport plays it."""
        if self._played is not None:
            return self._played.pending_s
        samples = run.record.output[0].audio_samples if run.record.output else 0
        return estimated_playback_left_s(run.delivery.first_at, samples, time.perf_counter())

    # items -----------------------------------------------------------------------------------------------
    async def _item_create(self, event: ItemCreate) -> None:
        item = item_from_client(event.item, self.config.input_format)
        previous = self.conversation.insert(item, event.previous_item_id)
        self.unused.note([item])
        await self.outbox.put(self.events.item_added(item, previous))
        for done in self.events.item_done(item):
            await self.outbox.put(done)

    async def _truncate(self, item_id: str, content_index: int, audio_end_ms: int) -> None:
        item = self.conversation.get(item_id, "truncate")
        check_truncate(item, content_index, audio_end_ms)
        # OpenAI semantics: a truncate edits the item and leaves a running response alone (stopping it is
        # the client's response.cancel or the server VAD's job); the cut is applied again when it closes
        await self._cut_item(item, audio_end_ms)

    async def _cut_playback(self) -> None:
        """Drop the output audio the peer has not heard; truncate its item where the peer stopped hearing it
        (``conversation.item.truncated``), then ``output_audio_buffer.cleared``."""
        assert self._played is not None
        cut = self._played.clear()
        if cut is None:
            return
        item = cut.run.record.output[0]
        if (
            cut.run.in_default_conversation
            and item.id in self.conversation
            and cut.played_ms < sent_audio_ms(item)
        ):
            await self._cut_item(item, cut.played_ms)
        await self.outbox.put(self.events.output_audio_buffer("cleared", cut.run.record.id))

    async def _cut_item(self, item: Item, audio_end_ms: int) -> None:
        """Truncate ``item`` at ``audio_end_ms`` (again when its response closes) and say so."""
        run = self.responses.of_item(item.id)
        if run is not None:
            run.truncated_ms = audio_end_ms
        self.truncate(item, audio_end_ms)
        await self.outbox.put(self.events.item_truncated(item.id, 0, audio_end_ms))

    async def _delete(self, item_id: str) -> None:
        if self.responses.of_item(item_id) is not None:
            raise ProtocolViolation(
                CODE_INVALID_VALUE, "This item belongs to a response in progress; cancel it first.", "item_id"
            )
        self.conversation.delete(item_id)
        self.transcriptions.cancel(item_id)
        await self.outbox.put(self.events.item_deleted(item_id))

    # responses -------------------------------------------------------------------------------------------
    async def _response_create(self, event: ResponseCreate) -> None:
        if self.transcribes_only:
            raise responses_refused()
        if self.runtime.draining:
            raise ProtocolViolation(
                CODE_SHUTTING_DOWN, "The server is shutting down: no new responses are started."
            )
        plan = plan_response(
            event,
            self.config,
            self.conversation,
            resolve_voice=voice_resolver(self.runtime.voices.accepted_names(), "response.audio.output.voice"),
            beta=self.events.beta,
        )
        self.unused.note_input(event.input or ())
        active = self.responses.default
        if plan.in_band and active is not None:
            raise ProtocolViolation(
                CODE_ACTIVE_RESPONSE,
                "Conversation already has an active response in progress: "
                f"{active.record.id}. Wait until the response is finished before creating a new one.",
            )
        limit = self.runtime.config.max_out_of_band_responses
        if not plan.in_band and self.responses.out_of_band >= limit:
            raise ProtocolViolation(
                CODE_TOO_MANY_RESPONSES,
                f"This session already has {limit} out-of-band responses in progress (the maximum): wait "
                "for one to finish or cancel it.",
            )
        if plan.in_band:
            self.conversation.check_room()  # the reply's item must fit
        fitter = ConversationFit.for_response(
            self.runtime.backend,
            self.config.context_truncation,
            self.runtime.config.min_answer_tokens,
            plan.turn_items,
            self.conversation if plan.from_conversation else None,
        )
        conversation = self.conversation if plan.in_band else None
        run = ResponseRun(
            self.services,
            self,
            plan.record,
            plan.request,
            conversation,
            fitter=fitter,
            max_calls=plan.max_calls,
        )
        run.event_id = event.event_id
        assert self._tasks is not None
        if run.in_default_conversation:
            self._gate.response_started()  # transcriptions hold their requests back until it has output
            self.idle.disarm()
        self.responses.start(run, self._tasks)

    async def _cancel(self, response_id: str | None) -> None:
        run = self.responses.find(response_id)
        if run is None:
            raise ProtocolViolation(CODE_CANCEL_NOT_ACTIVE, "Cancellation failed: no active response found")
        await self.responses.cancel(run, "client_cancelled")

    # ResponseHost: what a response tells its session -------------------------------------------------------
    async def audio_started(self, run: ResponseRun) -> None:
        """A response queues its first audio: the voice can no longer change (OpenAI's rule)."""
        self.voice_locked = True
        if self._played is not None:
            await self._played.started(run)

    def first_output(self, run: ResponseRun) -> None:
        """An in-band response has output: held-back input transcriptions may send their requests."""
        if run.in_default_conversation:
            self._gate.response_output()

    def truncate(self, item: Item, audio_end_ms: int) -> None:
        """Cut ``item`` at ``audio_end_ms`` with the session's output format and the backend's vocabulary."""
        backend = self.runtime.backend
        truncate_item(item, audio_end_ms, self.config.output_format, backend.vocab, backend.text_codec)

    def delivered(self, run: ResponseRun) -> None:
        """A response's ``response.done`` went out: the idle timer starts from its playback's end."""
        if self._played is not None and self._tasks is not None:
            self._played.delivered(run, self._tasks)
        if run.in_default_conversation:
            self._arm_idle(run)
