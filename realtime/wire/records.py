"""Our records of the Realtime API's objects: items, their content parts, responses and usage.

They are mutable, loop-owned dataclasses, not wire models: `realtime.wire.server_events` renders them in the
connection's dialect, and the session layer (`realtime.session`) creates and edits them. Audio is kept once:
``audio`` holds the wire bytes (session format) for ``conversation.item.retrieved``; the PCM16 the prompt
needs is derived from it on demand (`ContentPart.pcm16`: the same bytes for ``pcm16``, decoded for G.711).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

from realtime.audio import AudioFormat, wire_to_pcm16

ItemKind = Literal["message", "function_call", "function_call_output"]
Role = Literal["system", "user", "assistant"]
ItemStatus = Literal["completed", "incomplete", "in_progress"]
ContentKind = Literal["input_text", "input_audio", "input_image", "output_text", "output_audio"]
# Content OpenAI accepts that this model cannot use: stored and echoed, left out of the prompt
# (docs/PROTOCOL.md §3.1).
UNUSED_CONTENT: frozenset[ContentKind] = frozenset({"input_image"})
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
        audio_format: the wire format of ``audio`` (input audio: the session's input format).
        image_url: the data URI of an ``input_image`` (stored and returned, never shown to the model).
        detail: the ``detail`` of an ``input_image`` as the client sent it.
    """

    kind: ContentKind
    text: str | None = None
    transcript: str | None = None
    audio: bytes | None = None
    audio_format: AudioFormat = AudioFormat.PCM16
    image_url: str | None = None
    detail: str | None = None

    @property
    def pcm16(self) -> bytes | None:
        """User speech as PCM16 LE at `pcm_rate` for the prompt (input audio only, else None)."""
        if self.kind != "input_audio" or not self.audio:
            return None
        return wire_to_pcm16(self.audio, self.audio_format, "audio")

    @property
    def pcm_rate(self) -> int:
        """Sample rate of `pcm16`."""
        return self.audio_format.sample_rate

    @property
    def stored_bytes(self) -> int:
        """Bytes of text, audio and images this part holds (conversation caps)."""
        texts = (self.text, self.transcript, self.image_url)
        return sum(len(text or "") for text in texts) + len(self.audio or b"")

    @property
    def audio_seconds(self) -> float:
        """Seconds of input audio stored in this part (assistant audio is counted on its item)."""
        if self.kind != "input_audio" or not self.audio:
            return 0.0
        fmt = self.audio_format
        return len(self.audio) / (fmt.bytes_per_sample * fmt.sample_rate)


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
    calls_in_output_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class TokenUsage:
    """Token accounting of one response (``response.done.response.usage``).

    ``cached_tokens`` is the part of ``input_tokens`` the LLM found in its prefix cache (SGLang's
    ``meta_info.cached_tokens``); None when the backend does not report it.
    """

    input_tokens: int
    output_tokens: int
    output_text_tokens: int
    output_audio_tokens: int
    cached_tokens: int | None = None


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
