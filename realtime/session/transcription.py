"""Input audio transcription of one session: each committed user audio item transcribed beside the response.

When the session enables transcription (GA ``audio.input.transcription``, beta ``input_audio_transcription``),
`InputTranscriptions.start` runs one job per committed audio item as a task of the connection's task group:
the Step-Audio-2 ASR request (realtime/speech/transcribe.py) streamed into
``conversation.item.input_audio_transcription.delta`` events, then ``.completed`` (transcript stored on the
item's ``input_audio`` part, so ``conversation.item.retrieve`` shows it) or ``.failed``. A failure never
touches the response.

A job never delays the first audio of a response: before it sends its request it waits (bounded by
`DEFER_LIMIT_S`) until no in-band response is still waiting for its first output (`FirstOutputGate`), so
the response's prefill goes first. Deleting the item, or the session ending, cancels the job.
"""

from __future__ import annotations

import asyncio
import logging

from realtime.backends.base import LLMBackend
from realtime.errors import ResponseFailure
from realtime.session.outbox import Outbox
from realtime.speech.transcribe import (
    TranscriptionDelta,
    TranscriptionRequest,
    TranscriptionSlots,
    transcribe,
)
from realtime.wire.records import ContentPart, Item, new_id
from realtime.wire.server_events import EventBuilder, TranscriptionUsage
from realtime.wire.session_extensions import TranscriptionSettings

log = logging.getLogger(__name__)

DEFER_LIMIT_S = 5.0  # longest a transcription waits for a response's first output before it runs anyway
MAX_RUNNING = 8  # transcriptions in flight per session; more commits than this fail fast instead of queueing
CODE_BUSY = "too_many_transcriptions"


class FirstOutputGate:
    """Counts in-band responses that have not produced their first output yet (event loop only)."""

    def __init__(self) -> None:
        self._waiting = 0
        self._open = asyncio.Event()
        self._open.set()

    def response_started(self) -> None:
        """A response started generating: transcriptions hold their requests back."""
        self._waiting += 1
        self._open.clear()

    def response_output(self) -> None:
        """That response produced its first audio or text, or ended without any. Call once per start."""
        self._waiting = max(self._waiting - 1, 0)
        if self._waiting == 0:
            self._open.set()

    async def wait(self, limit_s: float) -> None:
        """Return once no response is waiting for its first output, or after ``limit_s``."""
        try:
            async with asyncio.timeout(limit_s):
                await self._open.wait()
        except TimeoutError:
            pass


class InputTranscriptions:
    """The transcription jobs of one session, by item id.

    Args:
        backend: the server's LLM backend (the ASR model).
        events: the connection's event builder.
        outbox: the connection's outbox.
        gate: the session's `FirstOutputGate`.
        slots: the server's cap on transcriptions at once; a job that gets no slot in time fails with
            ``transcription_capacity_reached``.
    """

    def __init__(
        self,
        backend: LLMBackend,
        events: EventBuilder,
        outbox: Outbox,
        gate: FirstOutputGate,
        slots: TranscriptionSlots | None = None,
    ) -> None:
        self._backend = backend
        self._events = events
        self._outbox = outbox
        self._gate = gate
        self._slots = slots
        self._jobs: dict[str, asyncio.Task[None]] = {}

    @property
    def running(self) -> int:
        """Jobs in flight."""
        return len(self._jobs)

    def start(self, tasks: asyncio.TaskGroup, item: Item, settings: TranscriptionSettings) -> None:
        """Transcribe ``item``'s ``input_audio`` part (content index 0) as a task of ``tasks``."""
        part = item.content[0]
        if part.kind != "input_audio" or part.pcm16 is None:
            return
        if item.id in self._jobs:
            self._jobs.pop(item.id).cancel()
        busy = len(self._jobs) >= MAX_RUNNING  # decided now: the tasks only run after every start()
        request = TranscriptionRequest(
            rid=new_id("asr"),
            pcm16=part.pcm16,
            sample_rate=part.pcm_rate,
            language=settings.language_hint,
            prompt=settings.prompt_hint,
        )
        job = tasks.create_task(self._run(item.id, part, request, busy), name=f"transcribe {item.id}")
        self._jobs[item.id] = job
        job.add_done_callback(lambda done: self._forget(item.id, done))

    def _forget(self, item_id: str, job: asyncio.Task[None]) -> None:
        if self._jobs.get(item_id) is job:
            del self._jobs[item_id]

    def cancel(self, item_id: str) -> None:
        """Stop the job of ``item_id`` (the item was deleted); no events follow."""
        job = self._jobs.pop(item_id, None)
        if job is not None:
            job.cancel()

    def cancel_all(self) -> None:
        """Stop every job (the session is ending)."""
        for job in list(self._jobs.values()):
            job.cancel()
        self._jobs.clear()

    async def _run(self, item_id: str, part: ContentPart, request: TranscriptionRequest, busy: bool) -> None:
        events, outbox = self._events, self._outbox
        if busy:
            message = (
                f"More than {MAX_RUNNING} transcriptions are running in this session; this one was skipped."
            )
            await outbox.put(events.transcription_failed(item_id, 0, CODE_BUSY, message))
            return
        await self._gate.wait(DEFER_LIMIT_S)
        try:
            if self._slots is not None:
                await self._slots.acquire()
            try:
                async for event in transcribe(self._backend, request):
                    if isinstance(event, TranscriptionDelta):
                        await outbox.put(events.transcription_delta(item_id, 0, event.text))
                    else:
                        part.transcript = event.transcript
                        usage = TranscriptionUsage(event.input_tokens, event.output_tokens)
                        await outbox.put(events.transcription_completed(item_id, 0, event.transcript, usage))
            finally:
                if self._slots is not None:
                    self._slots.release()
        except ResponseFailure as exc:
            await outbox.put(events.transcription_failed(item_id, 0, exc.code, exc.message))
        except Exception:  # a bug: logged with its traceback, reported without details
            log.exception("transcription of %s failed", item_id)
            await outbox.put(
                events.transcription_failed(item_id, 0, "internal_error", "The transcription failed.")
            )
