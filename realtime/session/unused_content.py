"""Content OpenAI accepts that the served model cannot use (images): counted, and logged once per session.

Such parts are stored on their items (a retrieve returns them, within the conversation caps) and left out of
the prompt (realtime/session/items.py, `prompt_turns`); refusing them would be an ``error`` OpenAI does not send,
which real clients treat as fatal (pipecat with video on sends ``input_image`` parts). docs/PROTOCOL.md §3.1.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from realtime.metrics import Metrics
from realtime.wire.records import UNUSED_CONTENT, Item

log = logging.getLogger(__name__)


class UnusedContent:
    """Counts unusable content parts of one session's items in ``/metrics``; logs each kind the first time.

    Event loop only (one per session).
    """

    def __init__(self, metrics: Metrics, session_id: str, door: str = "realtime") -> None:
        self._metrics = metrics
        self._session_id = session_id
        self._door = door
        self._logged: set[str] = set()

    def note(self, items: Iterable[Item]) -> None:
        """Count the unusable parts of ``items`` (just accepted from the client)."""
        for item in items:
            for part in item.content:
                if part.kind in UNUSED_CONTENT:
                    self.note_kind(part.kind)

    def note_input(self, entries: Iterable[object]) -> None:
        """Count the unusable parts of a ``response.create`` ``input`` (validated client items, references)."""
        for entry in entries:
            for content in getattr(entry, "content", None) or ():
                kind = getattr(content, "type", None)
                if kind in UNUSED_CONTENT:
                    self.note_kind(kind)

    def note_kind(self, kind: str) -> None:
        """Count one accepted part of ``kind`` that the model will not see."""
        self._metrics.unused_content(kind, self._door)
        if kind not in self._logged:
            self._logged.add(kind)
            log.info(
                "%s %s: accepted %s content; the served model cannot use it, so it is stored but left out of "
                "the prompt (counted in streamvoice_unused_content_parts_total)",
                self._door,
                self._session_id,
                kind,
            )
