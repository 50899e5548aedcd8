"""One Realtime session: the per-connection state machine and its tasks.

`Session.serve` runs a connection as a task group: the receive loop (this coroutine: parse, dispatch, reply),
a sender task draining the bounded outbox onto the socket, and one task per active response. Client events are
handled one at a time, in order; a cancel is processed synchronously (its ``response.done`` is queued before
the next client event is read, REALTIME_PROTOCOL.md §9.3). Every client mistake becomes an ``error`` event and
the session continues; on exit every task is cancelled and awaited, so responses abort promptly.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any, Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect

from realtime.backends.base import GenerationInput
from realtime.conversation import Conversation, Item, new_id
from realtime.errors import (
    CLOSE_NORMAL,
    CODE_ACTIVE_RESPONSE,
    CODE_CANCEL_NOT_ACTIVE,
    CODE_COMMIT_EMPTY,
    CODE_INVALID_FOR_TRANSPORT,
    CODE_INVALID_VALUE,
    CODE_SESSION_EXPIRED,
    CODE_UNKNOWN_EVENT,
    ErrorReport,
    ProtocolViolation,
    RealtimeError,
    SessionClosing,
    describe_exception,
)
from realtime.events import EventBuilder
from realtime.items import (
    item_from_client,
    sent_audio_ms,
    truncate_item,
    user_audio_item,
    wire_to_pcm16,
)
from realtime.pipeline import UsageMeter
from realtime.protocol import (
    AudioAppend,
    ClientEvent,
    Dialect,
    ItemCreate,
    ResponseCreate,
    SessionUpdate,
    decode_client_frame,
)
from realtime.response import CancelReason, Outbox, ResponseContext, ResponseRun
from realtime.response_plan import plan_response
from realtime.session_config import (
    SessionConfig,
    apply_session_update,
    resolve_voice,
)
from realtime.vad import TurnDetector, VadEvent

log = logging.getLogger(__name__)

OUTBOX_FRAMES = 256  # frames queued for the socket before producers wait
MIN_COMMIT_MS = 100  # OpenAI: a commit needs at least 100 ms of audio
MAX_BUFFER_SECONDS = 600  # push-to-talk buffer cap; beyond it appends are refused
SECONDS_PER_MINUTE = 60


class RuntimeLike(Protocol):
    """The parts of `realtime.runtime.Runtime` a session uses."""

    config: Any
    backend: Any
    voices: Any
    metrics: Any

    def respond(self, request: GenerationInput, *, voice: str, meter: UsageMeter | None = None) -> Any: ...


class Session:
    """State of one connection: config, conversation, input audio buffer, VAD and active responses.

    Only the connection's own tasks touch it (single event loop, no locks).
    """

    def __init__(self, runtime: RuntimeLike, dialect: Dialect, model: str) -> None:
        self.runtime = runtime
        self.id = new_id("sess")
        self.events = EventBuilder(dialect)
        self.config = SessionConfig(model=model, voice=runtime.voices.default)
        self.conversation = Conversation()
        self.outbox = Outbox(OUTBOX_FRAMES)
        self.voice_locked = False
        self._buffer = bytearray()
        self._buffer_start_ms = 0  # session audio time of the buffer's first byte
        self._audio_ms_total = 0.0  # session audio time appended so far
        self._speech_item_id: str | None = None
        self._detector: TurnDetector | None = None
        self._default: ResponseRun | None = None
        self._runs: dict[str, tuple[ResponseRun, asyncio.Task[None]]] = {}
        self._tasks: asyncio.TaskGroup | None = None

    # connection ------------------------------------------------------------------------------------------
    async def serve(self, ws: WebSocket) -> int:
        """Run the session until the client leaves or the session must close; return the close code."""
        close_code = CLOSE_NORMAL
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            sender = tasks.create_task(self._send_loop(ws), name=f"send {self.id}")
            try:
                for event in self.events.session_created(self.config, self.id):
                    await self.outbox.put(event)
                for event in self.events.conversation_created(self.conversation.id):
                    await self.outbox.put(event)
                self._configure_vad()
                ending = await self._receive_until_deadline(ws)
                if ending is not None:  # the server ends the session: its error event goes out first
                    close_code = ending
                    await self._drain(sender)
            finally:
                self._abort_runs()
                sender.cancel()
        return close_code

    async def _receive_until_deadline(self, ws: WebSocket) -> int | None:
        """The receive loop, cut off at the session duration limit (REALTIME_PROTOCOL.md §1.7).

        Returns:
            the close code when the server ends the session, None when the client left.
        """
        limit = float(getattr(self.runtime.config, "max_session_seconds", 0) or 0)
        try:
            async with asyncio.timeout(limit if limit > 0 else None):
                return await self._receive_loop(ws)
        except TimeoutError:
            self._abort_runs()  # nothing of a response may follow the expiry error
            minutes = f"{limit / SECONDS_PER_MINUTE:g}"
            expired = SessionClosing(
                CODE_SESSION_EXPIRED,
                f"Your session hit the maximum duration of {minutes} minutes.",
                close_code=CLOSE_NORMAL,
            )
            await self._report(describe_exception(expired))
            return CLOSE_NORMAL

    def _abort_runs(self) -> None:
        """Stop every response without closing events; the sender drops their queued audio."""
        for run, task in list(self._runs.values()):
            run.cancelled = True
            task.cancel()

    async def _drain(self, sender: asyncio.Task[None]) -> None:
        join = asyncio.ensure_future(self.outbox.queue.join())
        await asyncio.wait({join, sender}, return_when=asyncio.FIRST_COMPLETED)
        join.cancel()

    async def _send_loop(self, ws: WebSocket) -> None:
        queue = self.outbox.queue
        while True:
            frame = await queue.get()
            try:
                if frame.owner is not None and frame.owner.cancelled:
                    continue
                await ws.send_text(frame.text)
                if frame.on_sent is not None:
                    frame.on_sent()
            except (WebSocketDisconnect, RuntimeError, OSError):
                return  # the client is gone; the receive loop sees the disconnect
            finally:
                queue.task_done()

    async def _receive_loop(self, ws: WebSocket) -> int | None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return None
            text = message.get("text")
            try:
                if text is None:
                    raise ProtocolViolation(
                        CODE_UNKNOWN_EVENT, "Binary frames are not supported: send JSON text frames."
                    )
                await self.handle(decode_client_frame(text, self.events.dialect))
            except SessionClosing as exc:
                report = describe_exception(exc)
                await self._report(report)
                return report.close_code or CLOSE_NORMAL
            except RealtimeError as exc:
                await self._report(describe_exception(exc))
            except Exception as exc:  # a bug in one handler: report generically, keep the session
                await self._report(replace(describe_exception(exc), close_code=None))

    async def _report(self, report: ErrorReport) -> None:
        self.runtime.metrics.error(report.code)
        await self.outbox.put(self.events.error(report))

    # dispatch --------------------------------------------------------------------------------------------
    async def handle(self, event: ClientEvent) -> None:
        """Apply one client event. Raises `RealtimeError` subclasses for the client to see."""
        try:
            await self._dispatch(event)
        except RealtimeError as exc:
            if exc.event_id is None:
                exc.event_id = getattr(event, "event_id", None)
            raise

    async def _dispatch(self, event: ClientEvent) -> None:
        if isinstance(event, AudioAppend):
            await self._append(event.audio)
        elif isinstance(event, SessionUpdate):
            self._session_update(event)
            await self.outbox.put(self.events.session_updated(self.config, self.id))
        elif isinstance(event, ItemCreate):
            await self._item_create(event)
        elif isinstance(event, ResponseCreate):
            await self._response_create(event)
        elif event.type == "input_audio_buffer.commit":
            await self._commit()
        elif event.type == "input_audio_buffer.clear":
            self._clear_buffer()
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
            raise ProtocolViolation(
                CODE_INVALID_FOR_TRANSPORT,
                "output_audio_buffer.clear is only supported for WebRTC and SIP connections.",
            )

    # session ---------------------------------------------------------------------------------------------
    def _session_update(self, event: SessionUpdate) -> None:
        old = self.config
        self.config = apply_session_update(
            old,
            event.session,
            voice_locked=self.voice_locked,
            resolve=self._resolve_voice("session.audio.output.voice"),
            beta=self.events.beta,
        )
        if (old.turn_detection, old.input_format) != (self.config.turn_detection, self.config.input_format):
            self._configure_vad()

    def _resolve_voice(self, param: str) -> Any:
        voices = self.runtime.voices

        def resolve(name: str) -> str:
            return resolve_voice(name, set(voices.names()), voices.default, param)

        return resolve

    def _configure_vad(self) -> None:
        settings = self.config.turn_detection
        fmt, start_ms = self.config.input_format, round(self._audio_ms_total)
        self._detector = None if settings is None else TurnDetector(settings, fmt, start_ms=start_ms)
        self._speech_item_id = None

    # input audio -----------------------------------------------------------------------------------------
    def _buffer_ms(self) -> float:
        fmt = self.config.input_format
        return len(self._buffer) / fmt.bytes_per_sample * 1000 / fmt.sample_rate

    async def _append(self, wire: bytes) -> None:
        fmt = self.config.input_format
        wire_to_pcm16(wire, fmt, "audio")  # validates whole samples
        if self._buffer_ms() > MAX_BUFFER_SECONDS * 1000:
            raise ProtocolViolation(
                CODE_INVALID_VALUE,
                f"The input audio buffer holds more than {MAX_BUFFER_SECONDS} s: commit or clear it first.",
                "audio",
            )
        self._buffer.extend(wire)
        self._audio_ms_total += len(wire) / fmt.bytes_per_sample * 1000 / fmt.sample_rate
        if self._detector is not None:
            for vad_event in await self._detector.feed(wire):
                await self._on_vad(vad_event)
            if not self._detector.speaking:
                self._trim_to_padding()

    def _trim_to_padding(self) -> None:
        """Outside speech keep only the prefix padding, so an idle VAD session holds bounded audio."""
        settings = self.config.turn_detection
        fmt = self.config.input_format
        pad_ms = settings.prefix_padding_ms if settings is not None else 0
        keep = pad_ms * fmt.sample_rate // 1000 * fmt.bytes_per_sample
        excess = len(self._buffer) - keep
        if excess > 0:
            del self._buffer[:excess]
            self._buffer_start_ms = round(self._audio_ms_total - self._buffer_ms())

    def _clear_buffer(self) -> None:
        self._buffer.clear()
        self._buffer_start_ms = round(self._audio_ms_total)

    async def _commit(self) -> None:
        buffered = self._buffer_ms()
        if buffered < MIN_COMMIT_MS:
            raise ProtocolViolation(
                CODE_COMMIT_EMPTY,
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {buffered:.2f}ms of audio.",
            )
        item_id, self._speech_item_id = self._speech_item_id or new_id("item"), None
        await self._commit_item(item_id)

    async def _commit_item(self, item_id: str) -> Item:
        item = user_audio_item(bytes(self._buffer), self.config.input_format)
        item.id = item_id
        self._clear_buffer()
        previous = self.conversation.insert(item)
        await self.outbox.put(self.events.committed(item.id, previous))
        await self.outbox.put(self.events.item_added(item, previous))
        for event in self.events.item_done(item):
            await self.outbox.put(event)
        return item

    async def _on_vad(self, event: VadEvent) -> None:
        settings = self.config.turn_detection
        if settings is None:
            return
        if event.kind == "start":
            self._speech_item_id = new_id("item")
            if settings.interrupt_response and self._default is not None:
                await self._cancel_run(self._default, "turn_detected")
            # keep prefix padding before the detected start, drop older audio
            start_ms = max(event.ms - settings.prefix_padding_ms, 0)
            await self.outbox.put(self.events.speech_started(self._speech_item_id, start_ms))
            return
        item_id = self._speech_item_id or new_id("item")
        self._speech_item_id = None
        await self.outbox.put(self.events.speech_stopped(item_id, event.ms))
        if self._buffer_ms() < MIN_COMMIT_MS:
            return
        await self._commit_item(item_id)
        if settings.create_response:
            if self._default is not None:
                raise ProtocolViolation(
                    CODE_ACTIVE_RESPONSE,
                    "Conversation already has an active response in progress: "
                    f"{self._default.record.id}. Wait until the response is finished before creating a new one.",
                )
            await self._response_create(ResponseCreate(None, None, None, None))

    # items -----------------------------------------------------------------------------------------------
    async def _item_create(self, event: ItemCreate) -> None:
        item = item_from_client(event.item, self.config.input_format)
        previous = self.conversation.insert(item, event.previous_item_id)
        await self.outbox.put(self.events.item_added(item, previous))
        for done in self.events.item_done(item):
            await self.outbox.put(done)

    def _run_of(self, item_id: str) -> ResponseRun | None:
        for run, _ in self._runs.values():
            if any(item.id == item_id for item in run.record.output):
                return run
        return None

    async def _truncate(self, item_id: str, content_index: int, audio_end_ms: int) -> None:
        item = self.conversation.get(item_id)
        if item.role != "assistant" or not item.content or item.content[0].kind != "output_audio":
            raise ProtocolViolation(
                CODE_INVALID_VALUE, "Only assistant messages with audio can be truncated.", "item_id"
            )
        if content_index != 0:
            raise ProtocolViolation(
                CODE_INVALID_VALUE, "Invalid value: content_index must be 0.", "content_index"
            )
        run = self._run_of(item_id)
        if run is not None:  # the client stopped listening: stop generating first
            await self._cancel_run(run, "client_cancelled")
            await self.outbox.queue.join()  # audio accounting is settled once queued frames are sent
        sent = sent_audio_ms(item)
        if audio_end_ms < 0 or audio_end_ms > sent:
            raise ProtocolViolation(
                CODE_INVALID_VALUE,
                f"Audio content of {sent}ms is shorter than {audio_end_ms}ms.",
                "audio_end_ms",
            )
        backend = self.runtime.backend
        truncate_item(item, audio_end_ms, self.config.output_format, backend.vocab, backend.text_codec)
        await self.outbox.put(self.events.item_truncated(item_id, content_index, audio_end_ms))

    async def _delete(self, item_id: str) -> None:
        if self._run_of(item_id) is not None:
            raise ProtocolViolation(
                CODE_INVALID_VALUE, "This item belongs to a response in progress; cancel it first.", "item_id"
            )
        self.conversation.delete(item_id)
        await self.outbox.put(self.events.item_deleted(item_id))

    # responses -------------------------------------------------------------------------------------------
    async def _response_create(self, event: ResponseCreate) -> None:
        plan = plan_response(
            event,
            self.config,
            self.conversation,
            resolve_voice=self._resolve_voice("response.audio.output.voice"),
            beta=self.events.beta,
        )
        if plan.in_band and self._default is not None:
            raise ProtocolViolation(
                CODE_ACTIVE_RESPONSE,
                "Conversation already has an active response in progress: "
                f"{self._default.record.id}. Wait until the response is finished before creating a new one.",
            )
        conversation = self.conversation if plan.in_band else None
        self._start(ResponseRun(self._response_context(), plan.record, plan.request, conversation))

    def _response_context(self) -> ResponseContext:
        return ResponseContext(
            respond=self.runtime.respond,
            events=self.events,
            outbox=self.outbox,
            vocab=self.runtime.backend.vocab,
            max_delta_ms=self.runtime.config.max_audio_delta_ms,
            on_audio=self._lock_voice,
            observe=self.runtime.metrics,
        )

    def _lock_voice(self) -> None:
        self.voice_locked = True

    def _start(self, run: ResponseRun) -> None:
        assert self._tasks is not None
        task = self._tasks.create_task(run.run(), name=f"response {run.record.id}")
        self._runs[run.record.id] = (run, task)
        if run.in_default_conversation:
            self._default = run
        task.add_done_callback(lambda _: self._forget(run))

    def _forget(self, run: ResponseRun) -> None:
        self._runs.pop(run.record.id, None)
        if self._default is run:
            self._default = None

    async def _cancel(self, response_id: str | None) -> None:
        if response_id is not None:
            entry = self._runs.get(response_id)
            run = entry[0] if entry is not None else None
        else:
            run = self._default or next((r for r, _ in reversed(self._runs.values())), None)
        if run is None:
            raise ProtocolViolation(CODE_CANCEL_NOT_ACTIVE, "Cancellation failed: no active response found")
        await self._cancel_run(run, "client_cancelled")

    async def _cancel_run(self, run: ResponseRun, reason: CancelReason) -> None:
        """Cancel and wait until the response's closing events are queued."""
        entry = self._runs.get(run.record.id)
        run.cancel(reason)
        if entry is not None:
            await asyncio.wait({entry[1]})

    @property
    def active_response_ids(self) -> list[str]:
        """Ids of responses in progress."""
        return list(self._runs)
