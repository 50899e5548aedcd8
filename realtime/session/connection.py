"""One WebSocket connection running one `Session`: the receive loop, the sender task and the session's limits.

`serve_connection` runs the connection as a task group: the receive loop (parse, dispatch, reply), a sender
task draining the bounded outbox onto the socket, an optional drain watcher, and the session's response
tasks. Client events are handled one at a time, in order; every client mistake becomes an ``error`` event and
the session continues.

Every way out is bounded in time, and on every way out each task is cancelled and awaited (responses abort,
their LLM requests and decoder streams are released):

- the client leaves: the receive loop sees the disconnect, or the sender's write fails (`PeerGone`);
- the client stops reading: one frame waits ``send_timeout`` for the socket, or a producer waits that long
  for room in the outbox (`PeerStalled`): close 1008 ``send_timeout``;
- the session duration limit: a ``session_expired`` error, then close 1000;
- the server drains (SIGTERM): active responses may finish until the drain deadline, then close 1001.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from starlette.websockets import WebSocket, WebSocketDisconnect

from realtime.errors import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CODE_INVALID_EVENT,
    CODE_SEND_TIMEOUT,
    CODE_SESSION_EXPIRED,
    PeerGone,
    PeerStalled,
    ProtocolViolation,
    RealtimeError,
    SessionClosing,
    describe_exception,
)
from realtime.session.outbox import Outbox
from realtime.session.session import Session
from realtime.wire.client_events import decode_client_frame

SECONDS_PER_MINUTE = 60
CLOSE_ABNORMAL = 1006  # no close frame: the peer is gone (reported to ASGI, never sent)


@dataclass(frozen=True)
class Ending:
    """How a session ended: the close code and reason to send (if the socket can still take them)."""

    code: int
    reason: str = ""


@dataclass
class Drain:
    """The server's shutdown signal, shared by every connection (event loop only).

    Attributes:
        started: set when the server starts draining.
        deadline: `asyncio.get_running_loop().time()` by which active responses must have finished.
    """

    started: asyncio.Event
    deadline: float = 0.0


class _GoingAway(Exception):
    """The server is draining and this session's responses are done (or out of time)."""


async def serve_connection(session: Session, ws: WebSocket, drain: Drain | None = None) -> Ending:
    """Run ``session`` on ``ws`` until the client leaves or the session must close; return how it ended."""
    ending = Ending(CLOSE_NORMAL)
    timeout = session.outbox.put_timeout
    try:
        async with asyncio.TaskGroup() as tasks:
            sender = tasks.create_task(_send_loop(ws, session.outbox, timeout), name=f"send {session.id}")
            watcher = None
            if drain is not None:
                watcher = tasks.create_task(_watch_drain(session, drain), name=f"drain {session.id}")
            try:
                await session.open(tasks)
                code = await _receive_until_deadline(session, ws)
                if code is not None:  # the server ends the session: its error event goes out first
                    ending = Ending(code)
                    await _flush(session.outbox, sender, timeout)
            finally:
                session.abort_runs()
                sender.cancel()
                if watcher is not None:
                    watcher.cancel()
    except* PeerStalled:
        ending = Ending(CLOSE_POLICY_VIOLATION, CODE_SEND_TIMEOUT)
    except* PeerGone:
        ending = Ending(CLOSE_ABNORMAL)
    except* _GoingAway:
        ending = Ending(CLOSE_GOING_AWAY, "server shutting down")
    return ending


async def _receive_until_deadline(session: Session, ws: WebSocket) -> int | None:
    """The receive loop, cut off at the session duration limit (docs/PROTOCOL.md).

    Returns:
        the close code when the server ends the session, None when the client left.
    """
    limit = session.runtime.config.max_session_seconds
    try:
        async with asyncio.timeout(limit if limit > 0 else None):
            return await _receive_loop(session, ws)
    except TimeoutError:
        session.abort_runs()  # nothing of a response may follow the expiry error
        minutes = f"{limit / SECONDS_PER_MINUTE:g}"
        expired = SessionClosing(
            CODE_SESSION_EXPIRED,
            f"Your session hit the maximum duration of {minutes} minutes.",
            close_code=CLOSE_NORMAL,
        )
        await session.report(describe_exception(expired))  # bounded: PeerStalled if the client never reads
        return CLOSE_NORMAL


async def _flush(outbox: Outbox, sender: asyncio.Task[None], limit_s: float) -> None:
    """Let the sender write what is queued (the closing error event), for at most ``limit_s`` seconds."""
    join = asyncio.ensure_future(outbox.queue.join())
    await asyncio.wait({join, sender}, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
    join.cancel()


async def _watch_drain(session: Session, drain: Drain) -> None:
    await drain.started.wait()
    try:
        async with asyncio.timeout_at(drain.deadline):
            await session.quiet.wait()
    except TimeoutError:
        pass  # out of time: the responses are aborted as the session closes
    raise _GoingAway


async def _send_loop(ws: WebSocket, outbox: Outbox, limit_s: float) -> None:
    """Write queued frames; a write that fails or waits ``limit_s`` seconds ends the session."""
    while True:
        frame = await outbox.get()
        try:
            if frame.owner is not None and frame.owner.cancelled:
                continue
            try:
                async with asyncio.timeout(limit_s):
                    await ws.send_text(frame.text)
            except TimeoutError:
                raise PeerStalled(f"one frame waited {limit_s:g} s for the client to read") from None
            except (WebSocketDisconnect, RuntimeError, OSError) as exc:
                raise PeerGone(str(exc)) from exc
            if frame.on_sent is not None:
                frame.on_sent()
        finally:
            outbox.done()


async def _receive_loop(session: Session, ws: WebSocket) -> int | None:
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        try:
            if text is None:
                raise ProtocolViolation(  # OpenAI's code and words (docs/PROTOCOL.md §8.3)
                    CODE_INVALID_EVENT, "Expected a text WebSocket message; binary frames are not supported."
                )
            await session.handle(decode_client_frame(text, session.events.dialect))
        except (PeerStalled, PeerGone):
            raise
        except SessionClosing as exc:
            report = describe_exception(exc)
            await session.report(report)
            return report.close_code or CLOSE_NORMAL
        except RealtimeError as exc:
            await session.report(describe_exception(exc))
        except Exception as exc:  # a bug in one handler: report generically, keep the session
            await session.report(replace(describe_exception(exc), close_code=None))
