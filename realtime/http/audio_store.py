"""The bounded, expiring store behind ``message.audio.id`` in chat completions.

A spoken chat answer gets an id; a later request that sends that assistant message back with ``audio: {id}``
gets the answer's own output ids re-inserted into the prompt (exactly what the model generated, as the Realtime
path does for its conversation items), not a re-tokenised transcript. Entries expire after `TTL_SECONDS`
(OpenAI's ``expires_at``); the store keeps at most `MAX_ENTRIES` answers and `MAX_STORED_IDS` ids in all,
dropping the oldest first. Event-loop only.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

TTL_SECONDS = 3600
MAX_ENTRIES = 1024
MAX_STORED_IDS = 4_000_000  # 16 MiB of int32 ids


@dataclass(frozen=True)
class StoredAudio:
    """One spoken answer.

    Attributes:
        output_ids: the LLM output ids of the answer, int32.
        transcript: what it said.
        expires_at: Unix seconds after which the id no longer resolves.
    """

    output_ids: npt.NDArray[np.int32]
    transcript: str
    expires_at: int


class AudioStore:
    """audio id -> `StoredAudio`, bounded in count and size, oldest evicted first.

    Args:
        clock: Unix seconds (tests pass a fake clock).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._entries: OrderedDict[str, StoredAudio] = OrderedDict()
        self._ids = 0

    @staticmethod
    def new_id() -> str:
        """A fresh ``audio_...`` id."""
        return f"audio_{uuid.uuid4().hex}"

    def expiry(self) -> int:
        """``expires_at`` for an answer stored now."""
        return int(self._clock()) + TTL_SECONDS

    def put(self, audio_id: str, output_ids: tuple[int, ...], transcript: str, expires_at: int) -> None:
        """Keep an answer (too large an answer is simply not kept: its id then falls back to the transcript)."""
        if len(output_ids) > MAX_STORED_IDS:
            return
        self._expire()
        self._entries[audio_id] = StoredAudio(np.asarray(output_ids, dtype=np.int32), transcript, expires_at)
        self._ids += len(output_ids)
        while len(self._entries) > MAX_ENTRIES or self._ids > MAX_STORED_IDS:
            _, old = self._entries.popitem(last=False)
            self._ids -= old.output_ids.size

    def get(self, audio_id: str) -> StoredAudio | None:
        """The answer for ``audio_id``, or None when unknown or expired."""
        self._expire()
        return self._entries.get(audio_id)

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self) -> None:
        now = self._clock()
        while self._entries:
            audio_id, oldest = next(iter(self._entries.items()))
            if oldest.expires_at > now:
                return
            del self._entries[audio_id]
            self._ids -= oldest.output_ids.size
