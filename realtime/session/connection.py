"""One connection running one `Session` over a `Transport`: the receive loop, the sender task, the limits.

`serve_connection` runs the connection as a task group: the receive loop (take the transport's next inbound
message, dispatch it, report mistakes), a sender task draining the bounded outbox onto the transport, an
optional drain watcher, and the session's response tasks. Client events are handled one at a time, in order;
every client mistake becomes an ``error`` event and the session continues. Nothing here knows the transport's
kind (realtime/session/transport.py): a WebSocket (realtime/http/ws_transport.py) and an in-memory fake in
the tests run the same code.

Every way out is bounded in time, and on every way out each task is cancelled and awaited (responses abort,
their LLM requests and decoder streams are released), then the transport is closed with the `Ending`:

- the client leaves: the transport's ``receive`` says so, or a send fails (`PeerGone`);
- the client stops reading: one frame waits ``send_timeout`` for the transport, or a producer waits that
  long for room in the outbox (`PeerStalled`): close 1008 ``send_timeout``;
- the session duration limit: a ``session_expired`` error, then close 1000;
- the server drains (SIGTERM): active responses may finish until the drain deadline, then close 1001;
- a bug: logged, close 1011.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, replace

from realtime.errors import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CODE_SEND_TIMEOUT,
    CODE_SESSION_EXPIRED,
    PeerGone,
    PeerStalled,
    RealtimeError,
    SessionClosing,
    describe_exception,
)
from realtime.session.outbox import AudioFrame, Outbox
from realtime.session.session import Session
from realtime.session.transport import Ending, Transport

log = logging.getLogger(__name__)

SECONDS_PER_MINUTE = 60
CLOSE_ABNORMAL = 1006  # no close frame: the peer is gone (reported to the transport, never sent)


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


async def serve_connection(session: Session, transport: Transport, drain: Drain | None = None) -> Ending:
    """Run ``session`` over ``transport`` until the peer leaves or the session must end; close the transport.

    Returns:
        how it ended (the `Ending` the transport was closed with).
    """
    ending = Ending(CLOSE_INTERNAL_ERROR)
    try:
        ending = await _serve(session, transport, drain)
    except Exception:
        log.exception("session %s failed", session.id)
    await transport.close(ending)
    return ending


async def _serve(session: Session, transport: Transport, drain: Drain | None) -> Ending:
    ending = Ending(CLOSE_NORMAL)
    timeout = session.outbox.put_timeout
    try:
        async with asyncio.TaskGroup() as tasks:
            sender = tasks.create_task(
                _send_loop(transport, session.outbox, timeout), name=f"send {session.id}"
            )
            watcher = None
            if drain is not None:
                watcher = tasks.create_task(_watch_drain(session, drain), name=f"drain {session.id}")
            try:
                await session.open(tasks, transport.playback)
                code = await _receive_until_deadline(session, transport)
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


async def _receive_until_deadline(session: Session, transport: Transport) -> int | None:
    """The receive loop, cut off at the session duration limit (docs/PROTOCOL.md).

    Returns:
        the close code when the server ends the session, None when the client left.
    """
    limit = session.runtime.config.max_session_seconds
    try:
        async with asyncio.timeout(limit if limit > 0 else None):
            return await _receive_loop(session, transport)
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
    """Let the sender hand over what is queued (the closing error event), for at most ``limit_s`` seconds."""
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


async def _send_loop(transport: Transport, outbox: Outbox, limit_s: float) -> None:
    """Hand queued frames to the transport in order; one that fails or waits ``limit_s`` seconds ends the
    session. Audio of a cancelled owner is dropped; every other frame's owner is told it went out."""
    while True:
        frame = await outbox.get()
        try:
            if isinstance(frame, AudioFrame):
                if frame.owner.cancelled:
                    continue
                await _bounded(transport.send_audio(frame.audio), limit_s)
            else:
                await _bounded(transport.send_event(frame.text), limit_s)
            if frame.owner is not None:
                frame.owner.frame_sent(frame)
        finally:
            outbox.done()


async def _bounded(send: Awaitable[None], limit_s: float) -> None:
    try:
        async with asyncio.timeout(limit_s):
            await send
    except TimeoutError:
        raise PeerStalled(f"one frame waited {limit_s:g} s for the client to read") from None


async def _receive_loop(session: Session, transport: Transport) -> int | None:
    while True:
        inbound = await transport.receive()
        if inbound is None:
            return None
        try:
            await session.handle(inbound)
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
