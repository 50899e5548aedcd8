"""One WebSocket connection running one `Session`: the receive loop, the sender task and the duration limit.

`serve_connection` runs the connection as a task group: the receive loop (parse, dispatch, reply), a sender
task draining the bounded outbox onto the socket, and the session's response tasks. Client events are handled
one at a time, in order; every client mistake becomes an ``error`` event and the session continues; on exit
every task is cancelled and awaited, so responses abort promptly.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from starlette.websockets import WebSocket, WebSocketDisconnect

from realtime.errors import (
    CLOSE_NORMAL,
    CODE_SESSION_EXPIRED,
    CODE_UNKNOWN_EVENT,
    ProtocolViolation,
    RealtimeError,
    SessionClosing,
    describe_exception,
)
from realtime.session.outbox import Outbox
from realtime.session.session import Session
from realtime.wire.client_events import decode_client_frame

SECONDS_PER_MINUTE = 60


async def serve_connection(session: Session, ws: WebSocket) -> int:
    """Run ``session`` on ``ws`` until the client leaves or the session must close; return the close code."""
    close_code = CLOSE_NORMAL
    async with asyncio.TaskGroup() as tasks:
        sender = tasks.create_task(_send_loop(ws, session.outbox), name=f"send {session.id}")
        try:
            await session.open(tasks)
            ending = await _receive_until_deadline(session, ws)
            if ending is not None:  # the server ends the session: its error event goes out first
                close_code = ending
                await _drain(session.outbox, sender)
        finally:
            session.abort_runs()
            sender.cancel()
    return close_code


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
        await session.report(describe_exception(expired))
        return CLOSE_NORMAL


async def _drain(outbox: Outbox, sender: asyncio.Task[None]) -> None:
    join = asyncio.ensure_future(outbox.queue.join())
    await asyncio.wait({join, sender}, return_when=asyncio.FIRST_COMPLETED)
    join.cancel()


async def _send_loop(ws: WebSocket, outbox: Outbox) -> None:
    queue = outbox.queue
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


async def _receive_loop(session: Session, ws: WebSocket) -> int | None:
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
            await session.handle(decode_client_frame(text, session.events.dialect))
        except SessionClosing as exc:
            report = describe_exception(exc)
            await session.report(report)
            return report.close_code or CLOSE_NORMAL
        except RealtimeError as exc:
            await session.report(describe_exception(exc))
        except Exception as exc:  # a bug in one handler: report generically, keep the session
            await session.report(replace(describe_exception(exc), close_code=None))
