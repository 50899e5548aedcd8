"""The default conversation of one session: ordered items and lookups by id (event loop only)."""

from __future__ import annotations

from collections.abc import Iterator

from realtime.errors import CODE_INVALID_VALUE, ProtocolViolation
from realtime.wire.records import ROOT, Item, new_id


def item_not_found(item_id: str, param: str = "item_id") -> ProtocolViolation:
    """The error for an unknown item id (OpenAI's code is unverified: we use ``invalid_value``)."""
    return ProtocolViolation(
        CODE_INVALID_VALUE, f"Invalid value: '{item_id}'. No item with this id in the conversation.", param
    )


class Conversation:
    """The ordered items of the default conversation.

    Attributes:
        id: conversation id (``conv_...``).
        prompt_start: id of the first item still in the model's prompt after a context cut
            (realtime/session/context_fit.py); None when nothing was cut. Earlier items stay here for the client.
    """

    def __init__(self) -> None:
        self.id = new_id("conv")
        self.prompt_start: str | None = None
        self._items: list[Item] = []

    def __iter__(self) -> Iterator[Item]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return any(item.id == item_id for item in self._items)

    def get(self, item_id: str) -> Item:
        """The item with ``item_id``.

        Raises:
            ProtocolViolation: no such item.
        """
        for item in self._items:
            if item.id == item_id:
                return item
        raise item_not_found(item_id)

    def insert(self, item: Item, previous_item_id: str | None = None) -> str | None:
        """Insert after ``previous_item_id`` (``"root"`` = at the start; None = at the end).

        Returns:
            The id of the item now before ``item`` (None at the start).

        Raises:
            ProtocolViolation: the id is already used or ``previous_item_id`` is unknown.
        """
        if item.id in self:
            raise ProtocolViolation(
                CODE_INVALID_VALUE,
                f"Invalid value: '{item.id}'. An item with this id already exists.",
                "item.id",
            )
        if previous_item_id is None:
            index = len(self._items)
        elif previous_item_id == ROOT:
            index = 0
        else:
            index = self._index(previous_item_id, "previous_item_id") + 1
        self._items.insert(index, item)
        return self._items[index - 1].id if index > 0 else None

    def delete(self, item_id: str) -> Item:
        """Remove and return the item.

        Raises:
            ProtocolViolation: no such item.
        """
        return self._items.pop(self._index(item_id, "item_id"))

    def _index(self, item_id: str, param: str) -> int:
        for index, item in enumerate(self._items):
            if item.id == item_id:
                return index
        raise item_not_found(item_id, param)
