"""Running one reply for an HTTP request: its own task, a bounded hand-off, and cancel-on-disconnect.

`ReplyStream` iterates a reply (`Runtime.reply`) in a task of its own, so the HTTP side can stop it at any
point by `close` without running the reply's clean-up inside a cancelled scope: cancelling that task closes the
reply iterator, which aborts the LLM request and drops the reply's queued decode steps (the same path as a
Realtime ``response.cancel``).

`DisconnectAwareStreamingResponse` streams a body and, whatever the server's ASGI version, watches for the
client going away; then it stops the body iterator at once (whose ``finally`` closes its `ReplyStream`). A
client that stays connected but stops reading is treated the same once one chunk has waited ``send_timeout``
for the socket (the Realtime sessions' ``--send-timeout``): without it such a client held its admission slot
and its paused reply for as long as it kept the connection open.
`until_disconnect` does the same for a handler that answers with one JSON body. `sse_data` frames one
server-sent event.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from realtime.errors import CODE_DECODER_CAPACITY, CODE_SESSION_LIMIT, CODE_SHUTTING_DOWN, SERVER_ERROR
from realtime.http.connections import current_connection
from realtime.http.errors import HTTPError
from realtime.http.realtime_ws import SessionCount
from realtime.metrics import Metrics
from realtime.speech.admission import DecoderAdmission, decoder_busy_message
from realtime.speech.reply import PipelineEvent

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"  # the chat-completions end-of-stream marker
DECODER_RETRY_AFTER_S = 1  # a decoder stream frees up within seconds: answers last a few seconds each
HANDOFF_SIZE = 8  # events between the reply task and the HTTP writer; the pipeline behind it is bounded too
_T = TypeVar("_T")
_background: set[asyncio.Task[None]] = set()  # tasks still closing after their request ended


@dataclass(frozen=True)
class _End:
    error: BaseException | None = None


class ClientGone(Exception):
    """The HTTP client disconnected before the answer was ready."""


class ClientStalled(Exception):
    """The HTTP client stopped reading a streamed answer: one chunk waited the send timeout."""


class AdmissionSlot:
    """One HTTP reply counted against the server's session cap (the Realtime sessions' `SessionCount`).

    Every reply holds an LLM request and a Token2Wav stream like a Realtime response does, so HTTP replies and
    Realtime sessions share one limit. Event-loop only.

    Counted with `SessionCount.opened`/`closed`, so a SIGTERM drain waits for running HTTP replies as it does
    for Realtime sessions, and refuses new ones as it refuses new sessions.

    Raises:
        HTTPError: 503 ``server_shutting_down`` while draining; 503 ``session_limit_reached`` when the server
            is full (the openai SDKs retry a 503).
    """

    def __init__(self, sessions: SessionCount) -> None:
        if sessions.drain.started.is_set():
            raise HTTPError(503, CODE_SHUTTING_DOWN, "The server is shutting down.", error_type=SERVER_ERROR)
        if sessions.open >= sessions.limit:
            raise HTTPError(
                503,
                CODE_SESSION_LIMIT,
                f"The server is at its limit of {sessions.limit} concurrent sessions and streams; retry later.",
                error_type=SERVER_ERROR,
            )
        sessions.opened()
        self._sessions: SessionCount | None = sessions

    def release(self) -> None:
        """Give the slot back (idempotent)."""
        if self._sessions is not None:
            self._sessions.closed()
            self._sessions = None


class AnswerAdmission:
    """What one HTTP answer holds while it runs: a place under the session cap (`AdmissionSlot`) and, for a
    spoken answer, a decoder stream from the same admission gate as Realtime responses (memory slot and
    real-time room, realtime/speech/admission.py). Build with `take`; event-loop only."""

    def __init__(self, slot: AdmissionSlot, decoder: DecoderAdmission | None) -> None:
        self._slot = slot
        self._decoder = decoder

    @classmethod
    async def take(
        cls,
        sessions: SessionCount,
        decoder: DecoderAdmission,
        *,
        speaks: bool,
        wait_s: float,
        metrics: Metrics,
    ) -> AnswerAdmission:
        """Take the session slot at once, then (spoken answers) wait in line for the decoder at most ``wait_s``.

        Raises:
            HTTPError: what `AdmissionSlot` raises; 503 ``decoder_capacity_reached`` (type ``server_error``,
                as OpenAI answers an overloaded engine: the SDKs retry it) when the decoder had no room in time.
        """
        slot = AdmissionSlot(sessions)
        if not speaks:
            return cls(slot, None)
        try:
            admitted = await decoder.acquire(wait_s)
        except BaseException:
            slot.release()
            raise
        if not admitted:
            slot.release()
            metrics.error(CODE_DECODER_CAPACITY)
            raise HTTPError(
                503,
                CODE_DECODER_CAPACITY,
                decoder_busy_message(decoder, wait_s),
                error_type=SERVER_ERROR,
                retry_after=DECODER_RETRY_AFTER_S,
            )
        return cls(slot, decoder)

    def release(self) -> None:
        """Give everything back (idempotent)."""
        decoder, self._decoder = self._decoder, None
        if decoder is not None:
            decoder.release()
        self._slot.release()


class ReplyStream:
    """One reply pumped by its own task into a bounded queue. Event-loop only.

    Args:
        reply: the reply iterator (closed by this object, also when it is cancelled).
        slot: released once the reply is closed (its LLM request aborted or finished).
    """

    def __init__(
        self, reply: AsyncIterator[PipelineEvent], slot: AdmissionSlot | AnswerAdmission | None = None
    ) -> None:
        self._queue: asyncio.Queue[PipelineEvent | _End] = asyncio.Queue(maxsize=HANDOFF_SIZE)
        self._task = asyncio.create_task(self._pump(reply), name="http-reply")
        if slot is not None:  # on the task's end, even one cancelled before it ever ran
            self._task.add_done_callback(lambda _: slot.release())
        self._done = False

    async def next(self) -> PipelineEvent | None:
        """The next event, or None at the end of the reply.

        Raises:
            ResponseFailure: the reply failed (backend or speech).
        """
        if self._done:
            return None
        item = await self._queue.get()
        if isinstance(item, _End):
            self._done = True
            if item.error is not None:
                raise item.error
            return None
        return item

    def close(self) -> None:
        """Stop the reply now (idempotent): the LLM request is aborted and pending decode steps dropped."""
        self._done = True
        if not self._task.done():
            self._task.cancel()
            _background.add(self._task)
            self._task.add_done_callback(_background.discard)

    async def _pump(self, reply: AsyncIterator[PipelineEvent]) -> None:
        end = _End()
        try:
            async for event in reply:
                await self._queue.put(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            end = _End(exc)
        finally:
            aclose = getattr(reply, "aclose", None)
            if aclose is not None:
                await aclose()
        await self._queue.put(end)


class Holding:
    """A response body that holds something (a slot) until the body is closed, even one never iterated.

    A body generator's own ``finally`` only runs if it was started; a client gone before the first chunk
    would leak what the handler took for it. `DisconnectAwareStreamingResponse` closes its body on every
    ending, and closing this calls ``release`` exactly once.

    Args:
        body: the chunks.
        release: called once, when the body is closed or runs out.
    """

    def __init__(self, body: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        self._body = body
        self._release: Callable[[], None] | None = release

    def __aiter__(self) -> Holding:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._body.__anext__()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Close the body and release (idempotent)."""
        release, self._release = self._release, None
        try:
            aclose = getattr(self._body, "aclose", None)
            if aclose is not None and release is not None:
                await aclose()
        finally:
            if release is not None:
                release()


class DisconnectAwareStreamingResponse(StreamingResponse):
    """A `StreamingResponse` that stops its body iterator when the client disconnects or stops reading.

    Starlette only listens for ``http.disconnect`` on ASGI < 2.4 servers; on newer ones a disconnect shows only
    when the next chunk fails to send, which for a slow reply can be seconds later. This always listens.

    Args:
        content: the body iterator (closed on every ending).
        send_timeout: seconds one chunk may wait for a client that does not read; then the response ends
            (the server closes the connection, as for a response cut short).
        media_type, headers: as for `StreamingResponse`.
    """

    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        send_timeout: float,
        media_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self._send_timeout = send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_or_give_up(message: Message) -> None:
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that meets a finished send
                async with asyncio.timeout(self._send_timeout):
                    await send(message)
            except TimeoutError:
                raise ClientStalled(f"no room to send for {self._send_timeout:g} s") from None

        body = asyncio.create_task(self.stream_response(send_or_give_up), name="http-body")
        gone = asyncio.create_task(_wait_disconnect(receive), name="http-disconnect")
        try:
            await asyncio.wait({body, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (body, gone):
                task.cancel()
            await asyncio.gather(body, gone, return_exceptions=True)
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()
        if body.done() and not body.cancelled() and body.exception() is not None:
            error = body.exception()
            if isinstance(error, ClientStalled):
                log.info("streaming response ended: the client stopped reading (%s)", error)
            else:
                log.warning("streaming response ended early: %r", error)
            # The body is incomplete: drop the connection, so the client sees the stream end without its last
            # chunk (uvicorn would close it too, reporting an app error).
            connection = current_connection()
            if connection is not None:
                await connection.abort()


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnect(request: Request, work: Awaitable[_T]) -> _T:
    """Await ``work`` in its own task; cancel it if the client disconnects first.

    Call only after the body has been read (the disconnect watcher consumes ``receive``).

    Raises:
        ClientGone: the client disconnected first (``work`` was cancelled).
    """
    task: asyncio.Task[_T] = asyncio.ensure_future(work)
    gone = asyncio.create_task(_wait_disconnect(request.receive), name="http-disconnect")
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise ClientGone()
    return task.result()


def sse_data(payload: dict[str, Any]) -> bytes:
    """One server-sent event as OpenAI sends them: ``data: {compact json}`` and the blank line that ends it."""
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
