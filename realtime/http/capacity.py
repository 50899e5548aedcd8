"""How many connections the process can hold: the open-file limit, the files the server needs, accept errors.

Every connection is a file descriptor. Under the common soft limit of 1,024 open files, a client holding ~1,000
idle sockets used to exhaust it: accept() then failed with "too many open files" and every door (WebSocket,
HTTP, even ``/health/live``) stopped answering. At start-up `raise_open_file_limit` lifts the soft limit to
the hard one, and `connection_capacity` keeps the connection cap (realtime/http/connections.py) below what is
left after the descriptors the server itself needs (model files, the LLM client's sockets, uploads spooled to
disk, voice files), so accept() keeps working and a connection over the cap is refused in words.

Should accept() fail anyway (another part of the process holding files), `AcceptErrorLog` replaces asyncio's
traceback per failed accept (it retries up to the listen backlog per loop tick: 141,000 tracebacks in 95 s
were measured) by one line per `ACCEPT_LOG_INTERVAL_S` and a counter in ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

ACCEPT_LOG_INTERVAL_S = 10.0  # at most one "accept failed" line this often
ACCEPT_ERROR_MESSAGE = "socket.accept() out of system resource"  # asyncio's context message
# Descriptors kept free for the server's own use besides the ones open at start-up: files (uploads spooled to
# disk, voice files, /proc reads) and LLM client sockets, which grow with the answers running at once.
BASE_RESERVE_FDS = 64
FDS_PER_SESSION = 2  # one LLM socket and one spooled upload or voice file per answer in flight
HEALTH_RESERVE = 16  # connections past the cap that may only ask GET /health*
# asyncio accepts up to `backlog` connections per loop turn before any protocol sees them, and a refused one
# holds its descriptor for two more turns: the server passes uvicorn this small batch (and re-lists the socket
# with `LISTEN_BACKLOG` for the kernel's queue), and keeps that many turns' worth of descriptors free.
ACCEPT_BATCH = 64
ACCEPT_BURST_FDS = 3 * ACCEPT_BATCH
LISTEN_BACKLOG = 2048  # the kernel's queue of connections not yet accepted (uvicorn's default)
UNLIMITED_CEILING = 1 << 20  # what "unlimited" (RLIM_INFINITY) is taken to mean
_FD_DIR = "/proc/self/fd"
_FALLBACK_FDS_IN_USE = 128  # where /proc/self/fd cannot be listed


@dataclass(frozen=True)
class OpenFiles:
    """The process's open-file limits after `raise_open_file_limit`.

    Attributes:
        soft: the soft limit now in force.
        hard: the hard limit (the most the soft one can be raised to without privileges).
        in_use: descriptors open when it was measured.
    """

    soft: int
    hard: int
    in_use: int


def raise_open_file_limit() -> OpenFiles:
    """Lift the soft open-file limit to the hard one (as far as the system lets), and measure what is in use.

    Never fails: where the limit cannot be changed it stays as it was.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else UNLIMITED_CEILING
    if soft == resource.RLIM_INFINITY or soft >= target:
        return open_files()
    for attempt in (target, UNLIMITED_CEILING >> 4):  # some kernels cap below "unlimited" (nr_open)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(attempt, target), hard))
            break
        except (ValueError, OSError):
            continue
    return open_files()


def open_files() -> OpenFiles:
    """The open-file limits in force and the descriptors in use (changes nothing)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = open_descriptors()
    return OpenFiles(_finite(soft), _finite(hard), _FALLBACK_FDS_IN_USE if in_use is None else in_use)


def _finite(limit: int) -> int:
    return UNLIMITED_CEILING if limit == resource.RLIM_INFINITY else limit


def open_descriptors() -> int | None:
    """Descriptors the process holds now; None when they cannot be listed (no ``/proc``, or none left to
    list them with)."""
    try:
        return len(os.listdir(_FD_DIR))
    except OSError:
        return None


def reserved_descriptors(files: OpenFiles, max_sessions: int) -> int:
    """Descriptors that connections must leave free: those in use, the server's own headroom, the health
    reserve and an accept burst."""
    server = BASE_RESERVE_FDS + FDS_PER_SESSION * max_sessions
    return files.in_use + server + HEALTH_RESERVE + ACCEPT_BURST_FDS


def connection_capacity(requested: int, files: OpenFiles, max_sessions: int) -> int:
    """The connection cap: ``requested``, or with 0 what the open-file limit leaves (at least 1).

    A requested cap above what the limit leaves is kept (the operator may know better) but logged, since
    accept() may then fail under load.
    """
    room = max(1, files.soft - reserved_descriptors(files, max_sessions))
    if not requested:
        return room
    if requested > room:
        log.warning(
            "--max-connections %d is more than the open-file limit leaves (%d of %d): under load accept() "
            "may fail with 'too many open files'",
            requested,
            room,
            files.soft,
        )
    return requested


class AcceptErrorLog:
    """An event loop exception handler: accept() failures become one line per interval and a counter.

    Everything else goes to the handler that was there before (or the loop's default).

    Args:
        count: called once per failed accept (the ``/metrics`` counter).
        previous: the loop's handler before this one, or None for the default.
        interval: seconds between two log lines about failed accepts.
        clock: monotonic seconds (tests pass a fake).
    """

    def __init__(
        self,
        count: Callable[[], None],
        previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None = None,
        *,
        interval: float = ACCEPT_LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._count = count
        self._previous = previous
        self._interval = interval
        self._clock = clock
        self._last_line = -interval
        self._since_line = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_ERROR_MESSAGE:
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self._count()
        self._since_line += 1
        now = self._clock()
        if now - self._last_line < self._interval:
            return
        exc = context.get("exception")
        log.error(
            "accept() failed %d time(s) since the last report: %s (open-file limit %d, %s open); new "
            "connections wait in the listen backlog; next report in %g s at the earliest",
            self._since_line,
            exc,
            resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            open_descriptors() or "all",
            self._interval,
        )
        self._last_line = now
        self._since_line = 0


def install_accept_error_log(loop: asyncio.AbstractEventLoop, count: Callable[[], None]) -> AcceptErrorLog:
    """Make ``loop`` report accept() failures through an `AcceptErrorLog` (returned)."""
    handler = AcceptErrorLog(count, loop.get_exception_handler())
    loop.set_exception_handler(handler)
    return handler
