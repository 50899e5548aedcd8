"""The conversation of one session: ordered items, their content, and lookups by id.

Items are our own mutable records (not wire models): realtime/protocol.py renders them in the connection's
dialect. Audio is kept twice where needed: ``audio`` holds the wire bytes (session format) for
``conversation.item.retrieved``; ``pcm16`` holds user speech as PCM16 (at the wire rate) for the prompt. Only the event
loop touches these objects.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from realtime.errors import CODE_INVALID_VALUE, ProtocolViolation
from realtime.session_config import AudioFormat

ItemKind = Literal["message", "function_call", "function_call_output"]
Role = Literal["system", "user", "assistant"]
ItemStatus = Literal["completed", "incomplete", "in_progress"]
ContentKind = Literal["input_text", "input_audio", "output_text", "output_audio"]
ROOT = "root"  # previous_item_id that inserts at the start of the conversation


def new_id(prefix: str) -> str:
    """A fresh object id such as ``item_3f9c...`` (prefixes: event, item, resp, sess, conv, call)."""
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


@dataclass
class ContentPart:
    """One content part of a message item.

    Attributes:
        kind: GA content type; beta names are derived when rendering.
        text: text of ``input_text`` / ``output_text``.
        transcript: transcript of ``input_audio`` / ``output_audio`` (None when unknown).
        audio: wire bytes of the audio in ``audio_format`` (None when not kept).
        pcm16: user speech as PCM16 LE at ``pcm_rate`` for the prompt (input audio only).
        pcm_rate: sample rate of ``pcm16``.
    """

    kind: ContentKind
    text: str | None = None
    transcript: str | None = None
    audio: bytes | None = None
    pcm16: bytes | None = None
    pcm_rate: int = 24_000


@dataclass
class Item:
    """One conversation item (message, function call, or function call output).

    Attributes:
        id: item id (client-supplied ids are kept).
        kind: ``message``, ``function_call`` or ``function_call_output``.
        role: role of a message item.
        status: ``completed``, ``incomplete`` or ``in_progress``.
        content: content parts of a message.
        call_id, name, arguments, output: function call fields.
        output_ids: raw LLM output ids of an assistant reply (cut at the truncation point).
        spoken: the assistant reply was spoken.
        audio_samples: samples of assistant audio actually sent to the client, at 24 kHz.
        audio_dropped: stored audio exceeded the retrieve limit and was dropped (transcript kept).
        calls_in_output_ids: ids of the function-call items whose text is inside ``output_ids`` (the model
            wrote them in this reply), so the prompt does not repeat them.
    """

    id: str
    kind: ItemKind
    role: Role | None = None
    status: ItemStatus = "completed"
    content: list[ContentPart] = field(default_factory=list)
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None
    output_ids: tuple[int, ...] | None = None
    spoken: bool = False
    audio_samples: int = 0
    audio_dropped: bool = False
    calls_in_output_ids: tuple[str, ...] = ()


def item_not_found(item_id: str, param: str = "item_id") -> ProtocolViolation:
    """The error for an unknown item id (OpenAI's code is unverified: we use ``invalid_value``)."""
    return ProtocolViolation(
        CODE_INVALID_VALUE, f"Invalid value: '{item_id}'. No item with this id in the conversation.", param
    )


class Conversation:
    """The ordered items of the default conversation.

    Attributes:
        id: conversation id (``conv_...``).
    """

    def __init__(self) -> None:
        self.id = new_id("conv")
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

    def last_id(self) -> str | None:
        """Id of the last item, or None when empty."""
        return self._items[-1].id if self._items else None

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


@dataclass(frozen=True)
class TokenUsage:
    """Token accounting of one response (``response.done.response.usage``)."""

    input_tokens: int
    output_tokens: int
    output_text_tokens: int
    output_audio_tokens: int


@dataclass
class ResponseRecord:
    """What ``response.created`` / ``response.done`` describe about one response.

    Attributes:
        id: ``resp_...``.
        conversation_id: the default conversation's id, or None for an out-of-band response.
        modalities: ``("audio",)`` or ``("text",)``.
        voice: voice name of a spoken response.
        output_format: wire format of its audio.
        max_output_tokens: token cap or ``"inf"``.
        temperature: sampling temperature, if one was set.
        metadata: client metadata (at most 16 string pairs), or None.
        status: ``in_progress``, ``completed``, ``cancelled``, ``incomplete`` or ``failed``.
        reason: ``status_details.reason`` (``turn_detected``, ``client_cancelled``, ``max_output_tokens``).
        error: ``status_details.error`` as (type, code, message) for failed responses.
        output: the items the response produced.
        usage: token usage, once known.
    """

    id: str
    conversation_id: str | None
    modalities: tuple[Literal["text", "audio"], ...]
    voice: str
    output_format: AudioFormat
    max_output_tokens: int | Literal["inf"]
    temperature: float | None = None
    metadata: dict[str, str] | None = None
    status: Literal["in_progress", "completed", "cancelled", "incomplete", "failed"] = "in_progress"
    reason: Literal["turn_detected", "client_cancelled", "max_output_tokens"] | None = None
    error: tuple[str, str, str] | None = None
    output: list[Item] = field(default_factory=list)
    usage: TokenUsage | None = None
