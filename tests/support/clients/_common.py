"""Shared bits of the client programs (run by the client virtualenv's Python, not by the test suite's).

Only the standard library and the client venv's packages may be imported here: these programs are real
users of the server, installed beside the newest ``openai`` / ``openai-agents``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import wave
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

CHUNK_MS = 100
GUARD_S = 60.0  # a hang guard for every wait, never a latency assertion


def read_wav(path: str) -> tuple[bytes, int]:
    """A mono PCM16 WAV file -> (PCM16 LE bytes, sample rate)."""
    with wave.open(path, "rb") as reader:
        assert reader.getnchannels() == 1 and reader.getsampwidth() == 2, "mono PCM16 expected"
        return reader.readframes(reader.getnframes()), reader.getframerate()


def chunks_b64(pcm: bytes, rate: int) -> list[str]:
    """``pcm`` as base64 pieces of CHUNK_MS each (what a microphone client appends)."""
    size = rate * CHUNK_MS // 1000 * 2
    return [base64.b64encode(pcm[i : i + size]).decode() for i in range(0, len(pcm), size)]


@dataclass
class Report:
    """What a client program found, printed as one JSON line on stdout for the test to assert on.

    Attributes:
        client: package versions used.
        validation_errors: server events the client's own models refused.
        error_events: ``error`` events (or SDK error events) received.
        checks: named facts the program observed (transcripts, statuses, event counts...).
    """

    client: dict[str, str] = field(default_factory=dict)
    validation_errors: list[str] = field(default_factory=list)
    error_events: list[Any] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)

    def emit(self) -> None:
        """Print the report (the last stdout line)."""
        sys.stdout.write(json.dumps(asdict(self), default=str) + "\n")
        sys.stdout.flush()


class EventLog:
    """The raw server events one client session received, with waits on them.

    ``record`` sorts ``error`` events: those whose ``event_id`` is in ``provoked`` (the scene asked for them)
    go to ``report.checks["provoked_errors"]``, every other one to ``report.error_events`` (a test failure).
    """

    def __init__(self, report: Report, scene: str, provoked: tuple[str, ...] = ()) -> None:
        self.report, self.scene, self.provoked = report, scene, provoked
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()

    async def record(self, event: dict[str, Any]) -> None:
        """Keep one server event (as received, a JSON object) and wake the waiters."""
        if event.get("type") == "error":
            error = {"scene": self.scene, **event.get("error", {})}
            if error.get("event_id") in self.provoked:
                self.report.checks.setdefault("provoked_errors", []).append(error)
            else:
                self.report.error_events.append(error)
        self.events.append(event)
        async with self._changed:
            self._changed.notify_all()

    async def until(self, test: Callable[[dict[str, Any]], bool], after: int = 0) -> dict[str, Any]:
        """The first event from index ``after`` on that passes ``test`` (waits for it, at most `GUARD_S`)."""
        async with asyncio.timeout(GUARD_S):
            async with self._changed:
                while True:
                    for event in self.events[after:]:
                        if test(event):
                            return event
                    await self._changed.wait()

    def count(self, kind: str) -> int:
        """How many events of type ``kind`` arrived."""
        return sum(1 for event in self.events if event["type"] == kind)


class RecordingSocket:
    """Stands in for a framework's own websocket (pipecat's): every received frame goes to ``on_event`` (parsed)
    as it passes; everything else is the socket's."""

    def __init__(self, ws: Any, on_event: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self._ws, self._on_event = ws, on_event

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)

    def __aiter__(self) -> RecordingSocket:
        return self

    async def __anext__(self) -> Any:
        try:
            message = await self._ws.recv()
        except Exception as exc:  # the socket closed: the framework's loop ends as it would on its own socket
            raise StopAsyncIteration from exc
        await self._on_event(json.loads(message))
        return message


def recorded(ws: Any, on_event: Callable[[dict[str, Any]], Awaitable[None]]) -> Any:
    """``ws`` wrapped in a `RecordingSocket` (None, or one already wrapped, as it is)."""
    return ws if ws is None or isinstance(ws, RecordingSocket) else RecordingSocket(ws, on_event)


def server_event_adapter(dialect: str) -> Any:
    """The ``openai`` SDK's own union of server events of ``dialect`` (``ga`` or ``beta``), as a pydantic
    ``TypeAdapter``."""
    from pydantic import TypeAdapter

    if dialect == "ga":
        from openai.types.realtime.realtime_server_event import RealtimeServerEvent
    else:
        from openai.types.beta.realtime.realtime_server_event import RealtimeServerEvent  # type: ignore[no-redef]
    return TypeAdapter(RealtimeServerEvent)
