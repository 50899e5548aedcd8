"""The uvicorn server of ``realtime serve``: the ready line, and a drain on SIGTERM before uvicorn's shutdown."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from realtime.http.capacity import LISTEN_BACKLOG

log = logging.getLogger("realtime.serve")
SHUTDOWN_GRACE_S = 5.0  # after the drain: how long uvicorn may wait for connections before it cancels them


def announcing_server_class() -> Any:
    """A `uvicorn.Server` subclass (built lazily: importing uvicorn is slow for ``--help``)."""
    import signal

    import uvicorn

    class AnnouncingServer(uvicorn.Server):  # type: ignore[misc]
        """Prints the ready line once uvicorn accepts connections (not before: clients would be refused),
        and drains on SIGTERM: `drain` runs first, then uvicorn's own shutdown."""

        def __init__(self, config: Any, message: str, drain: Any) -> None:
            super().__init__(config)
            self._message = message
            self._drain = drain
            self._drain_task: asyncio.Future[None] | None = None

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            for sock in sockets or ():
                # uvicorn listened with its small accept batch (realtime/http/capacity.py): the kernel's
                # queue of connections not yet accepted gets the usual length again
                sock.listen(LISTEN_BACKLOG)
            if self.started:
                print(self._message, flush=True)

        def handle_exit(self, sig: int, frame: Any) -> None:
            if sig != signal.SIGTERM or self._drain_task is not None:
                super().handle_exit(sig, frame)  # Ctrl-C, or a second SIGTERM: uvicorn's shutdown now
                return
            # a signal handler interrupts the loop between bytecodes: schedule the drain, do not start it here
            loop = asyncio.get_running_loop()
            self._drain_task = loop.create_future()
            loop.call_soon_threadsafe(self._start_drain)

        def _start_drain(self) -> None:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain_then_exit())

        async def _drain_then_exit(self) -> None:
            try:
                await self._drain()
            finally:
                self.should_exit = True

    return AnnouncingServer


async def drain_sessions(runtime: Any, sessions: Any, seconds: float, requests: Any = None) -> None:
    """SIGTERM: refuse new sessions and responses, let active responses and HTTP answers finish for at most
    ``seconds``, then close every session with 1001 and end the HTTP answers still running
    (`realtime.http.request_limits.RunningRequests.end_at`); return once all are gone (or a few seconds
    later)."""
    log.info(
        "SIGTERM: draining %d session(s) and %d HTTP request(s) for up to %g s",
        sessions.open,
        len(requests) if requests is not None else 0,
        seconds,
    )
    runtime.draining = True
    sessions.start_drain(seconds)
    ender = None
    if requests is not None:
        ender = asyncio.create_task(requests.end_at(sessions.drain.deadline), name="drain-http")
    try:
        async with asyncio.timeout(seconds + SHUTDOWN_GRACE_S):
            await sessions.none_open.wait()
            if requests is not None:
                await requests.none_running.wait()
    except TimeoutError:
        pass  # uvicorn's shutdown closes what is left
    finally:
        if ender is not None:
            ender.cancel()
    log.info("drained: %d session(s) left", sessions.open)
