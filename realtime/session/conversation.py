"""The default conversation of one session: ordered items, lookups by id, and its size caps (event loop only)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from realtime.audio import PCM_RATE
from realtime.errors import (
    CODE_CONVERSATION_LIMIT,
    CODE_ITEM_DELETE_UNKNOWN,
    CODE_ITEM_DUPLICATE_ID,
    CODE_ITEM_RETRIEVE_UNKNOWN,
    CODE_ITEM_TRUNCATE_UNKNOWN,
    CODE_ITEM_UNKNOWN_PREVIOUS,
    ProtocolViolation,
    quote,
)
from realtime.wire.records import ROOT, Item, new_id

BYTES_PER_MB = 1024 * 1024

ItemAction = Literal["retrieve", "delete", "truncate"]
# OpenAI names an unknown id by what the client tried (docs/PROTOCOL.md §8.3): code and message verb.
_UNKNOWN_ITEM: dict[ItemAction, tuple[str, str]] = {
    "retrieve": (CODE_ITEM_RETRIEVE_UNKNOWN, "retrieving"),
    "delete": (CODE_ITEM_DELETE_UNKNOWN, "deleting"),
    "truncate": (CODE_ITEM_TRUNCATE_UNKNOWN, "truncating"),
}


def item_not_found(item_id: str, action: ItemAction) -> ProtocolViolation:
    """OpenAI's error for an unknown item id in a retrieve, delete or truncate (``param`` is null, as there)."""
    code, verb = _UNKNOWN_ITEM[action]
    return ProtocolViolation(code, f"Error {verb} item: the item with id '{quote(item_id)}' does not exist.")


@dataclass(frozen=True)
class ConversationLimits:
    """What one conversation may hold; an insert beyond any of them is refused.

    Attributes:
        items: number of items.
        stored_bytes: text and audio bytes over all items.
        audio_seconds: seconds of stored audio (user input audio and assistant audio sent).
    """

    items: int = 1000
    stored_bytes: int = 64 * BYTES_PER_MB
    audio_seconds: float = 1800.0


def item_bytes(item: Item) -> int:
    """Bytes of text and audio ``item`` holds."""
    fields = (item.arguments, item.output, item.name)
    return sum(part.stored_bytes for part in item.content) + sum(len(f or "") for f in fields)


def item_audio_seconds(item: Item) -> float:
    """Seconds of audio ``item`` holds: its input audio parts and the assistant audio sent for it."""
    return sum(part.audio_seconds for part in item.content) + item.audio_samples / PCM_RATE


class Conversation:
    """The ordered items of the default conversation.

    Attributes:
        id: conversation id (``conv_...``).
        prompt_start: id of the first item still in the model's prompt after a context cut
            (realtime/session/context_fit.py); None when nothing was cut. Earlier items stay here for the client.
        limits: the caps checked by `insert`.
    """

    def __init__(self, limits: ConversationLimits | None = None) -> None:
        self.id = new_id("conv")
        self.prompt_start: str | None = None
        self.limits = limits or ConversationLimits()
        self._items: list[Item] = []

    def __iter__(self) -> Iterator[Item]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return any(item.id == item_id for item in self._items)

    def get(self, item_id: str, action: ItemAction = "retrieve") -> Item:
        """The item with ``item_id``, for ``action`` (which names the error when there is none).

        Raises:
            ProtocolViolation: no such item (``item_<action>_invalid_item_id``).
        """
        for item in self._items:
            if item.id == item_id:
                return item
        raise item_not_found(item_id, action)

    def check_room(self, item: Item | None = None) -> None:
        """Raise unless the conversation can take ``item`` (None: one more, still empty, item).

        Raises:
            ProtocolViolation: ``conversation_limit_reached`` naming the cap; delete items to go on.
        """
        overflow = self._overflow(item)
        if overflow is not None:
            raise ProtocolViolation(
                CODE_CONVERSATION_LIMIT, f"{overflow} Delete items (conversation.item.delete) to continue."
            )

    def evict_for(self, item: Item) -> list[Item]:
        """Drop the oldest items until ``item`` fits the caps: a transcription session's rolling history
        (docs/PROTOCOL.md §4.8), whose items are never a prompt. No event says so, as on OpenAI.

        Returns:
            The items dropped, oldest first.
        """
        dropped: list[Item] = []
        while self._items and self._overflow(item) is not None:
            dropped.append(self._items.pop(0))
        if any(old.id == self.prompt_start for old in dropped):
            self.prompt_start = None
        return dropped

    def _overflow(self, item: Item | None) -> str | None:
        """Which cap taking ``item`` (None: an empty one) would exceed, as the refusal says it; None if none."""
        limits = self.limits
        if len(self._items) + 1 > limits.items:
            return f"The conversation holds its maximum of {limits.items} items."
        held = sum(item_bytes(i) for i in self._items) + (item_bytes(item) if item else 0)
        if held > limits.stored_bytes:
            return (
                f"The conversation would hold {held} bytes of text and audio; the maximum is "
                f"{limits.stored_bytes}."
            )
        seconds = sum(item_audio_seconds(i) for i in self._items) + (item_audio_seconds(item) if item else 0)
        if seconds > limits.audio_seconds:
            return (
                f"The conversation would hold {seconds:.1f} s of audio; the maximum is "
                f"{limits.audio_seconds:g} s."
            )
        return None

    def insert(
        self, item: Item, previous_item_id: str | None = None, *, admitted: bool = False
    ) -> str | None:
        """Insert after ``previous_item_id`` (``"root"`` = at the start; None = at the end).

        ``admitted`` skips the caps: a response's reply item, whose room was checked at ``response.create``.

        Returns:
            The id of the item now before ``item`` (None at the start).

        Raises:
            ProtocolViolation: the id is already used, ``previous_item_id`` is unknown, or a cap
                (`check_room`) would be exceeded.
        """
        if item.id in self:
            raise ProtocolViolation(
                CODE_ITEM_DUPLICATE_ID,
                f"Error adding item: an item with id '{quote(item.id)}' already exists.",
            )
        if previous_item_id is None:
            index = len(self._items)
        elif previous_item_id == ROOT:
            index = 0
        else:
            before = self._index(previous_item_id)
            if before is None:
                raise ProtocolViolation(
                    CODE_ITEM_UNKNOWN_PREVIOUS,
                    f"Error adding item: the previous item with id '{quote(previous_item_id)}' does not exist.",
                )
            index = before + 1
        if not admitted:
            self.check_room(item)
        self._items.insert(index, item)
        return self._items[index - 1].id if index > 0 else None

    def delete(self, item_id: str) -> Item:
        """Remove and return the item.

        Raises:
            ProtocolViolation: no such item (``item_delete_invalid_item_id``).
        """
        index = self._index(item_id)
        if index is None:
            raise item_not_found(item_id, "delete")
        return self._items.pop(index)

    def _index(self, item_id: str) -> int | None:
        for index, item in enumerate(self._items):
            if item.id == item_id:
                return index
        return None
