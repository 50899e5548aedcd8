"""Server events as a client keeps them: in arrival order, read one at a time by a benchmark or a test."""

from __future__ import annotations

import asyncio
from typing import Any

WAIT_GUARD_S = 60.0  # only a hang guard, never a latency figure


class EventLog:
    """Every server event received so far (`received`), and a read position for `recv` / `until`.

    Event loop only. The owner calls `add` for each event it receives and `wake` when no more will come.

    Args:
        guard_s: longest wait for one event before `recv` raises TimeoutError.
    """

    def __init__(self, guard_s: float = WAIT_GUARD_S) -> None:
        self.received: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self._read = 0
        self._guard_s = guard_s

    def add(self, event: dict[str, Any]) -> None:
        """Keep one received event."""
        self.received.append(event)
        self._arrived.set()

    def wake(self) -> None:
        """Wake a waiting reader (the connection ended: its guard, not a new event, ends the wait)."""
        self._arrived.set()

    async def recv(self) -> dict[str, Any]:
        """The next event not read yet (waits for it)."""
        async with asyncio.timeout(self._guard_s):
            while self._read >= len(self.received):
                self._arrived.clear()
                await self._arrived.wait()
        event = self.received[self._read]
        self._read += 1
        return event

    async def until(self, kind: str) -> list[dict[str, Any]]:
        """Events read up to and including the next one of type ``kind``."""
        events = [await self.recv()]
        while events[-1]["type"] != kind:
            events.append(await self.recv())
        return events

    def types(self) -> list[str]:
        """Types of every event so far."""
        return [event["type"] for event in self.received]
