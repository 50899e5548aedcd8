"""Server events, built as the `openai` SDK's own models in the connection's dialect.

`EventBuilder` produces every server event we send: GA models from ``openai.types.realtime`` on GA
connections, beta models from ``openai.types.beta.realtime`` on beta ones (renamed types, flat sessions and
responses, ``audio``/``text`` item content). Each event is validated by its model when built, so nothing we
send can miss a required field; `encode` serialises exactly the fields we set (explicit nulls included).
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, get_args, get_origin

from openai.types.beta.realtime.realtime_server_event import RealtimeServerEvent as BetaServerEvent
from openai.types.realtime.realtime_server_event import RealtimeServerEvent as GaServerEvent
from pydantic import BaseModel

from realtime.audio import PCM_RATE, AudioFormat
from realtime.errors import ErrorReport
from realtime.wire.handshake import Dialect
from realtime.wire.records import ContentPart, Item, ResponseRecord, TokenUsage, new_id
from realtime.wire.session_config import SessionConfig, TurnDetection

# Server frames must stay well under the 1 MiB default max_size of the Python websockets client (docs/PROTOCOL.md §1.6).
MAX_SERVER_FRAME_CHARS = 1024 * 1024
FRAME_ENVELOPE_RESERVE = 16 * 1024
BETA_DEFAULT_TEMPERATURE = 0.8

_BETA_NAMES = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "conversation.item.added": "conversation.item.created",
}
_BETA_CONTENT = {"output_text": "text", "output_audio": "audio"}


def server_event_classes(union: Any) -> dict[str, type[BaseModel]]:
    """Map each ``type`` literal of a server-event union to its model class."""
    inner = get_args(union)[0] if get_origin(union) is Annotated else union
    classes: dict[str, type[BaseModel]] = {}
    for cls in get_args(inner):
        for literal in get_args(cls.model_fields["type"].annotation):
            classes[literal] = cls
    return classes


GA_EVENT_CLASSES = server_event_classes(GaServerEvent)
BETA_EVENT_CLASSES = server_event_classes(BetaServerEvent)


def encode(event: BaseModel) -> str:
    """One JSON text frame: the fields that were set, explicit nulls included."""
    return event.model_dump_json(exclude_unset=True)


class EventBuilder:
    """Builds server events for one connection's dialect. Stateless apart from the dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.beta = dialect is Dialect.BETA
        self._classes = BETA_EVENT_CLASSES if self.beta else GA_EVENT_CLASSES

    def event(self, ga_type: str, **payload: Any) -> BaseModel:
        """Build and validate one server event given its GA type name and fields."""
        name = _BETA_NAMES.get(ga_type, ga_type) if self.beta else ga_type
        return self._classes[name].model_validate({"type": name, "event_id": new_id("event"), **payload})

    # session ---------------------------------------------------------------------------------------------
    def session(self, config: SessionConfig, session_id: str) -> dict[str, Any]:
        """The full effective session in this dialect's shape."""
        return _beta_session(config, session_id) if self.beta else _ga_session(config, session_id)

    def session_created(self, config: SessionConfig, session_id: str) -> list[BaseModel]:
        """``session.created`` (beta: followed by ``conversation.created``)."""
        return [self.event("session.created", session=self.session(config, session_id))]

    def conversation_created(self, conversation_id: str) -> list[BaseModel]:
        """Beta's ``conversation.created`` right after ``session.created``; nothing on GA."""
        if not self.beta:
            return []
        conversation = {"id": conversation_id, "object": "realtime.conversation"}
        return [self.event("conversation.created", conversation=conversation)]

    def session_updated(self, config: SessionConfig, session_id: str) -> BaseModel:
        """``session.updated`` with the full effective session."""
        return self.event("session.updated", session=self.session(config, session_id))

    def error(self, report: ErrorReport) -> BaseModel:
        """An ``error`` event."""
        error = {
            "type": report.error_type,
            "code": report.code,
            "message": report.message,
            "param": report.param,
            "event_id": report.event_id,
        }
        return self.event("error", error=error)

    # items -----------------------------------------------------------------------------------------------
    def item(self, item: Item, *, with_audio: bool = False) -> dict[str, Any]:
        """An item as a JSON dict (audio bytes only when ``with_audio``)."""
        data: dict[str, Any] = {
            "id": item.id,
            "object": "realtime.item",
            "type": item.kind,
            "status": item.status,
        }
        if item.kind == "message":
            data["role"] = item.role
            data["content"] = [self._part(part, with_audio) for part in item.content]
        elif item.kind == "function_call":
            data.update(call_id=item.call_id, name=item.name or "", arguments=item.arguments or "")
        else:
            data.update(call_id=item.call_id, output=item.output or "")
        return data

    def _part(self, part: ContentPart, with_audio: bool) -> dict[str, Any]:
        kind = _BETA_CONTENT.get(part.kind, part.kind) if self.beta else part.kind
        data: dict[str, Any] = {"type": kind}
        if part.kind in ("input_text", "output_text"):
            data["text"] = part.text or ""
        else:
            data["transcript"] = part.transcript
            if with_audio and part.audio is not None:
                data["audio"] = base64.b64encode(part.audio).decode("ascii")
        return data

    def item_added(self, item: Item, previous_item_id: str | None) -> BaseModel:
        """GA ``conversation.item.added`` / beta ``conversation.item.created``."""
        return self.event("conversation.item.added", item=self.item(item), previous_item_id=previous_item_id)

    def item_done(self, item: Item) -> list[BaseModel]:
        """GA ``conversation.item.done``; beta has no such event."""
        return [] if self.beta else [self.event("conversation.item.done", item=self.item(item))]

    def item_retrieved(self, item: Item) -> BaseModel:
        """``conversation.item.retrieved``: audio included only while the frame stays under 1 MiB (docs/PROTOCOL.md §1.6)."""
        audio_chars = sum(4 * ((len(p.audio) + 2) // 3) for p in item.content if p.audio is not None)
        fits = audio_chars + FRAME_ENVELOPE_RESERVE < MAX_SERVER_FRAME_CHARS
        return self.event("conversation.item.retrieved", item=self.item(item, with_audio=fits))

    def item_truncated(self, item_id: str, content_index: int, audio_end_ms: int) -> BaseModel:
        """``conversation.item.truncated``."""
        return self.event(
            "conversation.item.truncated",
            item_id=item_id,
            content_index=content_index,
            audio_end_ms=audio_end_ms,
        )

    def item_deleted(self, item_id: str) -> BaseModel:
        """``conversation.item.deleted``."""
        return self.event("conversation.item.deleted", item_id=item_id)

    # input audio buffer ----------------------------------------------------------------------------------
    def committed(self, item_id: str, previous_item_id: str | None) -> BaseModel:
        """``input_audio_buffer.committed``."""
        return self.event("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous_item_id)

    def cleared(self) -> BaseModel:
        """``input_audio_buffer.cleared``."""
        return self.event("input_audio_buffer.cleared")

    def speech_started(self, item_id: str, audio_start_ms: int) -> BaseModel:
        """``input_audio_buffer.speech_started``."""
        return self.event("input_audio_buffer.speech_started", item_id=item_id, audio_start_ms=audio_start_ms)

    def speech_stopped(self, item_id: str, audio_end_ms: int) -> BaseModel:
        """``input_audio_buffer.speech_stopped``."""
        return self.event("input_audio_buffer.speech_stopped", item_id=item_id, audio_end_ms=audio_end_ms)

    # responses -------------------------------------------------------------------------------------------
    def response(self, record: ResponseRecord) -> dict[str, Any]:
        """A response object in this dialect's shape (no audio bytes)."""
        details: dict[str, Any] | None = None
        if record.status != "in_progress":
            details = {"type": record.status}
            if record.reason is not None:
                details["reason"] = record.reason
            if record.error is not None:
                # `message` is an extra beyond the SDK's {type, code}: the SDK models keep extra fields, and
                # a client cannot tell "stream_cut" from "timeout" in a UI without the human-readable text
                error_type, code, message = record.error
                details["error"] = {"type": error_type, "code": code, "message": message}
        data: dict[str, Any] = {
            "id": record.id,
            "object": "realtime.response",
            "status": record.status,
            "status_details": details,
            "output": [self.item(item) for item in record.output],
            "conversation_id": record.conversation_id,
            "max_output_tokens": record.max_output_tokens,
            "metadata": record.metadata,
            "usage": _usage(record.usage),
        }
        if self.beta:
            data["modalities"] = ["text", "audio"] if "audio" in record.modalities else ["text"]
            data["voice"] = record.voice
            data["output_audio_format"] = record.output_format.value
            data["temperature"] = (
                BETA_DEFAULT_TEMPERATURE if record.temperature is None else record.temperature
            )
        else:
            data["output_modalities"] = list(record.modalities)
            output = {"format": _ga_format(record.output_format), "voice": record.voice}
            data["audio"] = {"output": output}
        return data

    def response_created(self, record: ResponseRecord) -> BaseModel:
        """``response.created``."""
        return self.event("response.created", response=self.response(record))

    def response_done(self, record: ResponseRecord) -> BaseModel:
        """``response.done``."""
        return self.event("response.done", response=self.response(record))

    def output_item_added(self, response_id: str, output_index: int, item: Item) -> BaseModel:
        """``response.output_item.added``."""
        return self.event(
            "response.output_item.added",
            response_id=response_id,
            output_index=output_index,
            item=self.item(item),
        )

    def output_item_done(self, response_id: str, output_index: int, item: Item) -> BaseModel:
        """``response.output_item.done``."""
        return self.event(
            "response.output_item.done",
            response_id=response_id,
            output_index=output_index,
            item=self.item(item),
        )

    def content_part(self, done: bool, ids: PartIds, part: ContentPart) -> BaseModel:
        """``response.content_part.added`` / ``.done``: part type ``audio`` or ``text`` in both dialects."""
        if part.kind == "output_audio":
            body: dict[str, Any] = {"type": "audio", "transcript": part.transcript or ""}
        else:
            body = {"type": "text", "text": part.text or ""}
        name = "response.content_part.done" if done else "response.content_part.added"
        return self.event(name, part=body, **ids.fields())

    def audio_delta(self, ids: PartIds, delta_b64: str) -> BaseModel:
        """``response.output_audio.delta`` (beta ``response.audio.delta``)."""
        return self.event("response.output_audio.delta", delta=delta_b64, **ids.fields())

    def audio_done(self, ids: PartIds) -> BaseModel:
        """``response.output_audio.done``."""
        return self.event("response.output_audio.done", **ids.fields())

    def transcript_delta(self, ids: PartIds, delta: str) -> BaseModel:
        """``response.output_audio_transcript.delta``."""
        return self.event("response.output_audio_transcript.delta", delta=delta, **ids.fields())

    def transcript_done(self, ids: PartIds, transcript: str) -> BaseModel:
        """``response.output_audio_transcript.done``."""
        return self.event("response.output_audio_transcript.done", transcript=transcript, **ids.fields())

    def text_delta(self, ids: PartIds, delta: str) -> BaseModel:
        """``response.output_text.delta``."""
        return self.event("response.output_text.delta", delta=delta, **ids.fields())

    def text_done(self, ids: PartIds, text: str) -> BaseModel:
        """``response.output_text.done``."""
        return self.event("response.output_text.done", text=text, **ids.fields())


class PartIds:
    """The four ids/indices every content event of one part carries."""

    __slots__ = ("content_index", "item_id", "output_index", "response_id")

    def __init__(self, response_id: str, item_id: str, output_index: int, content_index: int) -> None:
        self.response_id = response_id
        self.item_id = item_id
        self.output_index = output_index
        self.content_index = content_index

    def fields(self) -> dict[str, Any]:
        """As event fields."""
        return {
            "response_id": self.response_id,
            "item_id": self.item_id,
            "output_index": self.output_index,
            "content_index": self.content_index,
        }


def _usage(usage: TokenUsage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    rendered: dict[str, Any] = {
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "output_token_details": {
            "text_tokens": usage.output_text_tokens,
            "audio_tokens": usage.output_audio_tokens,
        },
    }
    if usage.cached_tokens is not None:
        # Only a backend that reports its prefix-cache hits (SGLang) fills this; unknown is left out, not 0.
        rendered["input_token_details"] = {"cached_tokens": usage.cached_tokens}
    return rendered


def _ga_format(fmt: AudioFormat) -> dict[str, Any]:
    if fmt is AudioFormat.PCM16:
        return {"type": fmt.ga_type, "rate": PCM_RATE}
    return {"type": fmt.ga_type}


def _ga_turn_detection(td: TurnDetection | None) -> dict[str, Any] | None:
    if td is None:
        return None
    if td.kind == "semantic_vad":
        return {
            "type": "semantic_vad",
            "eagerness": td.eagerness or "auto",
            "create_response": td.create_response,
            "interrupt_response": td.interrupt_response,
        }
    data: dict[str, Any] = {
        "type": "server_vad",
        "threshold": td.threshold,
        "prefix_padding_ms": td.prefix_padding_ms,
        "silence_duration_ms": td.silence_duration_ms,
        "create_response": td.create_response,
        "interrupt_response": td.interrupt_response,
    }
    if td.idle_timeout_ms is not None:
        data["idle_timeout_ms"] = td.idle_timeout_ms
    return data


def _ga_session(config: SessionConfig, session_id: str) -> dict[str, Any]:
    noise = {"type": config.noise_reduction} if config.noise_reduction else None
    data: dict[str, Any] = {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": config.model,
        "output_modalities": list(config.output_modalities),
        "instructions": config.instructions,
        "audio": {
            "input": {
                "format": _ga_format(config.input_format),
                "noise_reduction": noise,
                "transcription": config.transcription,
                "turn_detection": _ga_turn_detection(config.turn_detection),
            },
            "output": {
                "format": _ga_format(config.output_format),
                "voice": config.voice,
                "speed": config.speed,
            },
        },
        "tools": list(config.tools),
        "tool_choice": config.tool_choice,
        "max_output_tokens": config.max_output_tokens,
        "tracing": config.tracing,
        "truncation": config.truncation,
    }
    if config.include is not None:
        data["include"] = list(config.include)
    if config.prompt is not None:
        data["prompt"] = config.prompt
    if config.temperature is not None:
        data["temperature"] = config.temperature  # extension, kept as an extra field
    return data


def _beta_session(config: SessionConfig, session_id: str) -> dict[str, Any]:
    # beta's `model` is a closed list of OpenAI model names: our served model id cannot go there.
    td = _ga_turn_detection(config.turn_detection)
    if td is not None:
        td.pop("idle_timeout_ms", None)
    tool_choice = config.tool_choice if isinstance(config.tool_choice, str) else "required"
    return {
        "id": session_id,
        "object": "realtime.session",
        "modalities": ["text", "audio"] if config.speaks else ["text"],
        "instructions": config.instructions,
        "voice": config.voice,
        "speed": config.speed,
        "input_audio_format": config.input_format.value,
        "output_audio_format": config.output_format.value,
        "input_audio_transcription": config.transcription,
        "input_audio_noise_reduction": {"type": config.noise_reduction} if config.noise_reduction else None,
        "turn_detection": td,
        "tools": list(config.tools),
        "tool_choice": tool_choice,
        "temperature": BETA_DEFAULT_TEMPERATURE if config.temperature is None else config.temperature,
        "max_response_output_tokens": config.max_output_tokens,
        "tracing": config.tracing,
    }
