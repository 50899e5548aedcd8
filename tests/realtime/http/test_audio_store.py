"""The audio.id store: expiry and bounds."""

from __future__ import annotations

from realtime.http import audio_store
from realtime.http.audio_store import AudioStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire() -> None:
    clock = Clock()
    store = AudioStore(clock)
    store.put("a", (1, 2, 3), "hi", store.expiry())
    assert store.get("a") is not None and list(store.get("a").output_ids) == [1, 2, 3]  # type: ignore[union-attr]
    clock.now += audio_store.TTL_SECONDS + 1
    assert store.get("a") is None and len(store) == 0


def test_oldest_entries_go_first_when_full() -> None:
    store = AudioStore(Clock())
    for i in range(audio_store.MAX_ENTRIES + 5):
        store.put(f"id{i}", (i,), "", store.expiry())
    assert len(store) == audio_store.MAX_ENTRIES
    assert store.get("id0") is None and store.get(f"id{audio_store.MAX_ENTRIES + 4}") is not None


def test_total_ids_are_bounded() -> None:
    store = AudioStore(Clock())
    big = tuple(range(audio_store.MAX_STORED_IDS // 2 + 1))
    store.put("first", big, "", store.expiry())
    store.put("second", big, "", store.expiry())
    assert store.get("first") is None and store.get("second") is not None
    store.put("huge", tuple(range(audio_store.MAX_STORED_IDS + 1)), "", store.expiry())
    assert store.get("huge") is None  # never kept: its id falls back to the message text
