"""Client-frame parsing onto the `openai.types.realtime` models (the handshake is realtime/wire/handshake.py).

All JSON parsing of client frames happens here (server events are built in realtime/wire/server_events.py). Past this
module, code handles typed events only: GA models from ``openai.types.realtime`` for every client event, with
beta-shaped payloads (flat sessions, ``modalities``, ``voice``, ``pcm16`` ...) normalised into the GA shape
first, so the session layer is dialect-free (docs/PROTOCOL.md §2.1, §2.3). Mistakes raise
`ProtocolViolation` with the exact OpenAI code, the offending ``param`` and the client's ``event_id``.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from dataclasses import dataclass, field
from typing import Any, TypeAlias, cast

from openai.types.realtime import (
    ConversationItemDeleteEvent,
    ConversationItemRetrieveEvent,
    ConversationItemTruncateEvent,
    InputAudioBufferClearEvent,
    InputAudioBufferCommitEvent,
    OutputAudioBufferClearEvent,
    RealtimeConversationItemAssistantMessage,
    RealtimeConversationItemFunctionCall,
    RealtimeConversationItemFunctionCallOutput,
    RealtimeConversationItemSystemMessage,
    RealtimeConversationItemUserMessage,
    RealtimeResponseCreateParams,
    RealtimeSessionCreateRequest,
    ResponseCancelEvent,
)
from pydantic import BaseModel

from realtime.errors import (
    CODE_INVALID_EVENT,
    CODE_INVALID_JSON,
    CODE_INVALID_TYPE,
    CODE_INVALID_VALUE,
    CODE_MISSING_PARAMETER,
    CODE_STRING_TOO_LONG,
    ProtocolViolation,
    quote,
)
from realtime.wire.beta import beta_assistant_content_to_ga, beta_response_to_ga, beta_session_to_ga
from realtime.wire.handshake import Dialect
from realtime.wire.json_text import is_valid_text, load_untrusted_json, refuse_unpaired_surrogates
from realtime.wire.session_extensions import SessionExtensions, split_extensions
from realtime.wire.transcription_session import TranscriptionSessionUpdate, decode_transcription_session
from realtime.wire.validation import check_keys, missing_or_invalid, reject_extras, validate_model

# input_audio_buffer.append carries at most 15 MiB of base64 audio (OpenAI docs, docs/PROTOCOL.md §1.6).
MAX_APPEND_AUDIO_CHARS = 15 * 1024 * 1024
# Room for the JSON envelope around the largest legal append.
MAX_CLIENT_FRAME_CHARS = MAX_APPEND_AUDIO_CHARS + 64 * 1024

ConversationItemModel: TypeAlias = (
    RealtimeConversationItemSystemMessage
    | RealtimeConversationItemUserMessage
    | RealtimeConversationItemAssistantMessage
    | RealtimeConversationItemFunctionCall
    | RealtimeConversationItemFunctionCallOutput
)


@dataclass(frozen=True)
class AudioAppend:
    """``input_audio_buffer.append`` with its payload already base64-decoded (wire format bytes)."""

    event_id: str | None
    audio: bytes


@dataclass(frozen=True)
class ItemReference:
    """A ``{"type": "item_reference", "id": ...}`` entry of ``response.create`` input."""

    id: str


@dataclass(frozen=True)
class ResponseCreate:
    """``response.create`` with its overrides parsed.

    Attributes:
        event_id: the client's event id.
        params: GA overrides (``input`` removed; see ``input``), or None when none were given.
        input: the response's own input (items or references) replacing the conversation, or None.
        temperature: sampling temperature (beta field; a GA extension), or None.
    """

    event_id: str | None
    params: RealtimeResponseCreateParams | None
    input: tuple[ConversationItemModel | ItemReference, ...] | None
    temperature: float | None

    @classmethod
    def with_session_defaults(cls) -> ResponseCreate:
        """A response the server starts itself (a server-VAD turn end, the idle timeout): no overrides."""
        return cls(event_id=None, params=None, input=None, temperature=None)


@dataclass(frozen=True)
class SessionUpdate:
    """``session.update`` with the session normalised to the GA `RealtimeSessionCreateRequest`, and the
    fields newer than that model (realtime/wire/session_extensions.py)."""

    event_id: str | None
    session: RealtimeSessionCreateRequest
    extensions: SessionExtensions = field(default_factory=SessionExtensions)


@dataclass(frozen=True)
class ItemCreate:
    """``conversation.item.create`` with the item validated as its specific GA item model."""

    event_id: str | None
    item: ConversationItemModel
    previous_item_id: str | None


ClientEvent: TypeAlias = (
    SessionUpdate
    | TranscriptionSessionUpdate
    | AudioAppend
    | InputAudioBufferCommitEvent
    | InputAudioBufferClearEvent
    | ItemCreate
    | ConversationItemRetrieveEvent
    | ConversationItemTruncateEvent
    | ConversationItemDeleteEvent
    | ResponseCreate
    | ResponseCancelEvent
    | OutputAudioBufferClearEvent
)

_SIMPLE_EVENTS: dict[str, type[BaseModel]] = {
    "input_audio_buffer.commit": InputAudioBufferCommitEvent,
    "input_audio_buffer.clear": InputAudioBufferClearEvent,
    "conversation.item.retrieve": ConversationItemRetrieveEvent,
    "conversation.item.truncate": ConversationItemTruncateEvent,
    "conversation.item.delete": ConversationItemDeleteEvent,
    "response.cancel": ResponseCancelEvent,
    # decoded on every transport; a session whose transport does not play the audio itself refuses it
    # (`unsupported_event_type`), as OpenAI refuses it over a WebSocket
    "output_audio_buffer.clear": OutputAudioBufferClearEvent,
}
# The event types a WebSocket session accepts, in the order OpenAI lists them when it refuses another one
# (``output_audio_buffer.clear`` is WebRTC/SIP only: over a WebSocket OpenAI refuses it like any unknown type).
SUPPORTED_EVENT_TYPES = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "response.create",
    "response.cancel",
)
_MESSAGE_MODELS: dict[str, type[BaseModel]] = {
    "system": RealtimeConversationItemSystemMessage,
    "user": RealtimeConversationItemUserMessage,
    "assistant": RealtimeConversationItemAssistantMessage,
}
# Fields clients echo back from session.created that are read-only: accepted and ignored.
_SESSION_READ_ONLY = frozenset({"id", "object", "expires_at", "client_secret", "temperature"})


def decode_client_frame(text: str, dialect: Dialect) -> ClientEvent:
    """Parse one client text frame into a typed event.

    Raises:
        ProtocolViolation: malformed JSON, unknown type, missing/invalid/unknown fields, bad base64, or an
            oversized frame. ``event_id`` of the client event is attached when it could be read.
    """
    if len(text) > MAX_CLIENT_FRAME_CHARS:
        raise ProtocolViolation(
            CODE_STRING_TOO_LONG,
            f"Message too large: {len(text)} characters; the maximum is {MAX_CLIENT_FRAME_CHARS}.",
        )
    try:
        raw = load_untrusted_json(text)
    except ValueError as exc:
        raise ProtocolViolation(
            CODE_INVALID_JSON, f"Invalid event: failed to parse JSON value. {quote(str(exc))}"
        ) from None
    if not isinstance(raw, dict):
        raise ProtocolViolation(CODE_INVALID_EVENT, "Invalid event: expected a JSON object.")
    sent_id = raw.get("event_id")
    # echoed in any error, so only when it is text UTF-8 can carry
    event_id = sent_id if isinstance(sent_id, str) and is_valid_text(sent_id) else None
    try:
        refuse_unpaired_surrogates(text, raw)
        return _decode(raw, dialect)
    except ProtocolViolation as exc:
        exc.event_id = event_id
        raise


def unsupported_event_type(kind: str) -> ProtocolViolation:
    """OpenAI's refusal of an event type a WebSocket session does not take (docs/PROTOCOL.md §8.3)."""
    supported = ", ".join(f"'{name}'" for name in SUPPORTED_EVENT_TYPES[:-1])
    return ProtocolViolation(
        CODE_INVALID_VALUE,
        f"Invalid value: '{quote(kind)}'. Supported values are: {supported}, and '{SUPPORTED_EVENT_TYPES[-1]}'.",
        "type",
    )


def _decode(raw: dict[str, Any], dialect: Dialect) -> ClientEvent:
    kind = raw.get("type")
    if kind is None:  # OpenAI's own example of an error event (API reference, `error`)
        raise ProtocolViolation(CODE_INVALID_EVENT, "The 'type' field is missing.")
    if not isinstance(kind, str):
        raise missing_or_invalid(raw, "type")
    event_id = raw.get("event_id")
    if event_id is not None and not isinstance(event_id, str):
        raise ProtocolViolation(
            CODE_INVALID_TYPE, "Invalid type for 'event_id': expected a string.", "event_id"
        )
    if kind == "input_audio_buffer.append":
        return _decode_append(raw)
    if kind == "session.update":
        check_keys(raw, {"type", "event_id", "session"}, "")
        return decode_session(raw.get("session"), dialect, event_id)
    if kind == "transcription_session.update" and dialect is Dialect.BETA:  # GA refuses it as unknown (R7)
        check_keys(raw, {"type", "event_id", "session"}, "")
        session = raw.get("session")
        if not isinstance(session, dict):
            raise missing_or_invalid(raw, "session")
        return TranscriptionSessionUpdate(event_id, *decode_transcription_session(session, beta_shape=True))
    if kind == "conversation.item.create":
        check_keys(raw, {"type", "event_id", "item", "previous_item_id"}, "")
        if not isinstance(raw.get("item"), dict):
            raise missing_or_invalid(raw, "item")
        previous = raw.get("previous_item_id")
        return ItemCreate(event_id, decode_item(raw["item"], "item", dialect), previous)
    if kind == "response.create":
        return _decode_response_create(raw, dialect)
    model = _SIMPLE_EVENTS.get(kind)
    if model is None:
        raise unsupported_event_type(kind)
    event = validate_model(model, raw, "")
    reject_extras(event, "", frozenset())
    return cast(ClientEvent, event)


def _decode_append(raw: dict[str, Any]) -> AudioAppend:
    check_keys(raw, {"type", "event_id", "audio"}, "")
    audio = raw.get("audio")
    if not isinstance(audio, str):
        raise missing_or_invalid(raw, "audio")
    if len(audio) > MAX_APPEND_AUDIO_CHARS:
        raise ProtocolViolation(
            CODE_STRING_TOO_LONG,
            f"Invalid 'audio': string too long. Expected a string with maximum length {MAX_APPEND_AUDIO_CHARS}, "
            f"but got a string with length {len(audio)} instead.",
            "audio",
        )
    try:
        data = b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolViolation(
            CODE_INVALID_VALUE, "Invalid value: 'audio' is not valid base64.", "audio"
        ) from None
    return AudioAppend(raw.get("event_id"), data)


def decode_session(
    session: Any, dialect: Dialect, event_id: str | None = None
) -> SessionUpdate | TranscriptionSessionUpdate:
    """A GA (or beta) ``session`` object as the update it makes (a realtime or a transcription session): the
    ``session`` of a ``session.update``, and of ``POST /v1/realtime/client_secrets`` (errors name
    ``session.<field>``).

    Raises:
        ProtocolViolation: a missing or invalid field, an unknown one, or a session type not served.
    """
    if not isinstance(session, dict):
        raise missing_or_invalid({"session": session}, "session")
    kind = session.get("type")
    if kind == "transcription":
        return TranscriptionSessionUpdate(
            event_id, *decode_transcription_session(session, beta_shape=dialect is Dialect.BETA)
        )
    session = beta_session_to_ga(session)
    if kind is None:
        if dialect is Dialect.GA:
            raise ProtocolViolation(
                CODE_MISSING_PARAMETER, "Missing required parameter: 'session.type'.", "session.type"
            )
        session["type"] = "realtime"
    elif kind != "realtime":
        raise ProtocolViolation(
            CODE_INVALID_VALUE,
            f"Invalid value: '{quote(kind)}'. Supported values are: 'realtime' and 'transcription'.",
            "session.type",
        )
    session, extensions = split_extensions(session)
    model = validate_model(RealtimeSessionCreateRequest, session, "session")
    reject_extras(model, "session", _SESSION_READ_ONLY)
    return SessionUpdate(event_id, model, extensions)


def decode_item(raw: dict[str, Any], param: str, dialect: Dialect = Dialect.GA) -> ConversationItemModel:
    """Validate one conversation item (GA or beta shape) as its specific GA item model.

    Raises:
        ProtocolViolation: unsupported item type or invalid fields; an image on a beta connection (images
            came with GA: beta's content types do not have them).
    """
    item = dict(raw)
    kind = item.get("type") or ("message" if "role" in item else None)
    model: type[BaseModel]
    if kind == "message":
        role = item.get("role")
        if not isinstance(role, str) or role not in _MESSAGE_MODELS:
            raise missing_or_invalid(item, "role", param)
        model = _MESSAGE_MODELS[role]
        if role == "assistant":
            item = beta_assistant_content_to_ga(item)
    elif kind == "function_call":
        model = RealtimeConversationItemFunctionCall
    elif kind == "function_call_output":
        model = RealtimeConversationItemFunctionCallOutput
    elif kind is None:
        raise ProtocolViolation(
            CODE_MISSING_PARAMETER, f"Missing required parameter: '{param}.type'.", f"{param}.type"
        )
    else:
        raise ProtocolViolation(
            CODE_INVALID_VALUE,
            f"Invalid value: '{quote(kind)}'. Supported item types are 'message', 'function_call' and "
            "'function_call_output'.",
            f"{param}.type",
        )
    item["type"] = kind
    validated = validate_model(model, item, param)
    reject_extras(validated, param, frozenset({"id"}))
    if dialect is Dialect.BETA:
        for index, content in enumerate(getattr(validated, "content", None) or ()):
            if getattr(content, "type", None) == "input_image":
                raise ProtocolViolation(
                    CODE_INVALID_VALUE,
                    "Invalid value: 'input_image'. Supported values are: 'input_text', 'input_audio', "
                    "'item_reference', 'text', and 'audio'.",
                    f"{param}.content[{index}].type",
                )
    return cast(ConversationItemModel, validated)


def _decode_response_create(raw: dict[str, Any], dialect: Dialect) -> ResponseCreate:
    check_keys(raw, {"type", "event_id", "response"}, "")
    response = raw.get("response")
    event_id = raw.get("event_id")
    if response is None:
        return ResponseCreate(event_id, None, None, None)
    if not isinstance(response, dict):
        raise missing_or_invalid(raw, "response")
    params = dict(response)
    temperature = params.pop("temperature", None)
    items: tuple[ConversationItemModel | ItemReference, ...] | None = None
    if "input" in params:
        items = _decode_input(params.pop("input"), dialect)
    params = beta_response_to_ga(params)
    model = validate_model(RealtimeResponseCreateParams, params, "response")
    reject_extras(model, "response", frozenset())
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, int | float)
    ):
        raise ProtocolViolation(
            CODE_INVALID_TYPE, "Invalid type for 'response.temperature'.", "response.temperature"
        )
    return ResponseCreate(event_id, model, items, None if temperature is None else float(temperature))


def _decode_input(value: Any, dialect: Dialect) -> tuple[ConversationItemModel | ItemReference, ...]:
    if not isinstance(value, list):
        raise ProtocolViolation(
            CODE_INVALID_TYPE, "Invalid type for 'response.input': expected an array.", "response.input"
        )
    out: list[ConversationItemModel | ItemReference] = []
    for index, entry in enumerate(value):
        param = f"response.input[{index}]"
        if not isinstance(entry, dict):
            raise ProtocolViolation(
                CODE_INVALID_TYPE, f"Invalid type for '{param}': expected an object.", param
            )
        if entry.get("type") == "item_reference":
            if not isinstance(entry.get("id"), str):
                raise missing_or_invalid(entry, "id", param)
            out.append(ItemReference(entry["id"]))
        else:
            out.append(decode_item(entry, param, dialect))
    return tuple(out)
