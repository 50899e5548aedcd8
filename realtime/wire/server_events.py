"""Server events, built as the `openai` SDK's own models in the connection's dialect.

`EventBuilder` produces every server event we send: GA models from ``openai.types.realtime`` on GA
connections, beta models from ``openai.types.beta.realtime`` on beta ones (renamed types, flat sessions and
responses, ``audio``/``text`` item content). Each event is validated by its model when built, so nothing we
send can miss a required field; `encode` serialises exactly the fields we set (explicit nulls included).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args, get_origin

from openai.types.beta.realtime.realtime_server_event import RealtimeServerEvent as BetaServerEvent
from openai.types.realtime.audio_transcription import AudioTranscription
from openai.types.realtime.realtime_server_event import RealtimeServerEvent as GaServerEvent
from pydantic import BaseModel

from realtime.errors import ErrorReport
from realtime.wire.handshake import Dialect
from realtime.wire.records import ContentPart, Item, ResponseRecord, TokenUsage, new_id
from realtime.wire.session_config import SessionConfig
from realtime.wire.session_echo import (
    BETA_DEFAULT_TEMPERATURE,
    beta_session,
    beta_transcription_session,
    ga_format,
    ga_session,
    ga_transcription_session,
)
from realtime.wire.transcription_session import BETA_TRANSCRIPTION_EVENTS

# Server frames must stay well under the 1 MiB default max_size of the Python websockets client
# (docs/PROTOCOL.md §1.6).
MAX_SERVER_FRAME_CHARS = 1024 * 1024
FRAME_ENVELOPE_RESERVE = 16 * 1024

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


def _literals(annotation: Any) -> frozenset[str]:
    args = get_args(annotation)
    if not args:
        return frozenset({annotation}) if isinstance(annotation, str) else frozenset()
    return frozenset().union(*(_literals(arg) for arg in args))


GA_TRANSCRIPTION_MODELS = _literals(AudioTranscription.model_fields["model"].annotation)
_SESSION_EVENTS = frozenset({"session.created", "session.updated"})
_KNOWN = "whisper-1"  # stands for "no model given" in the membership test
GA_EVENT_CLASSES = server_event_classes(GaServerEvent)
# beta's transcription session events are ours (realtime/wire/transcription_session.py says why)
BETA_EVENT_CLASSES = server_event_classes(BetaServerEvent) | BETA_TRANSCRIPTION_EVENTS


def encode(event: BaseModel) -> str:
    """One JSON text frame: the fields that were set, explicit nulls included.

    Session events may carry a transcription model name outside the pinned models' literal list (see
    `EventBuilder._session_event`): pydantic's serializer warnings are silenced for them only.
    """
    quiet = getattr(event, "type", None) in _SESSION_EVENTS
    return event.model_dump_json(exclude_unset=True, warnings=not quiet)


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
        """The full effective session in this dialect's shape, for its session type."""
        if config.type == "transcription":
            render = beta_transcription_session if self.beta else ga_transcription_session
        else:
            render = beta_session if self.beta else ga_session
        return render(config, session_id)

    def _session_name(self, config: SessionConfig, change: Literal["created", "updated"]) -> str:
        # beta names a transcription session's events after it; GA uses session.* for both types
        prefix = "transcription_session" if self.beta and config.type == "transcription" else "session"
        return f"{prefix}.{change}"

    def session_created(self, config: SessionConfig, session_id: str) -> list[BaseModel]:
        """``session.created`` (beta transcription session: ``transcription_session.created``)."""
        return [self._session_event(self._session_name(config, "created"), config, session_id)]

    def _session_event(self, name: str, config: SessionConfig, session_id: str) -> BaseModel:
        data = self.session(config, session_id)
        custom: str | None = None
        transcription = None if self.beta else data["audio"]["input"]["transcription"]
        if transcription is not None and transcription.get("model", _KNOWN) not in GA_TRANSCRIPTION_MODELS:
            custom = transcription.pop("model")
        event = self.event(name, session=data)
        if custom is not None:
            # the pinned openai 2.8 lists OpenAI's transcription models only (3.x takes any string): the
            # session is validated without the name, which is then echoed as the client sent it
            target: Any = event
            target.session.audio.input.transcription.model = custom
        return event

    def conversation_created(self, config: SessionConfig, conversation_id: str) -> list[BaseModel]:
        """Beta's ``conversation.created`` right after ``session.created``; nothing on GA, nothing in a
        transcription session (OpenAI's beta sent none there)."""
        if not self.beta or config.type == "transcription":
            return []
        conversation = {"id": conversation_id, "object": "realtime.conversation"}
        return [self.event("conversation.created", conversation=conversation)]

    def session_updated(self, config: SessionConfig, session_id: str) -> BaseModel:
        """``session.updated`` (beta transcription session: ``transcription_session.updated``), the full
        effective session."""
        return self._session_event(self._session_name(config, "updated"), config, session_id)

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
    def item(self, item: Item, *, with_media: bool = False) -> dict[str, Any]:
        """An item as a JSON dict (audio and image bytes only when ``with_media``)."""
        data: dict[str, Any] = {
            "id": item.id,
            "object": "realtime.item",
            "type": item.kind,
            "status": item.status,
        }
        if item.kind == "message":
            data["role"] = item.role
            data["content"] = [self._part(part, with_media) for part in item.content]
        elif item.kind == "function_call":
            data.update(call_id=item.call_id, name=item.name or "", arguments=item.arguments or "")
        else:
            data.update(call_id=item.call_id, output=item.output or "")
        return data

    def _part(self, part: ContentPart, with_media: bool) -> dict[str, Any]:
        kind = _BETA_CONTENT.get(part.kind, part.kind) if self.beta else part.kind
        data: dict[str, Any] = {"type": kind}
        if part.kind in ("input_text", "output_text"):
            data["text"] = part.text or ""
        elif part.kind == "input_image":  # the image itself only in a retrieve, like audio
            data["detail"] = part.detail
            if with_media:
                data["image_url"] = part.image_url
        else:
            data["transcript"] = part.transcript
            if with_media and part.audio is not None:
                data["audio"] = base64.b64encode(part.audio).decode("ascii")
        return data

    def item_added(self, item: Item, previous_item_id: str | None) -> BaseModel:
        """GA ``conversation.item.added`` / beta ``conversation.item.created``."""
        return self.event("conversation.item.added", item=self.item(item), previous_item_id=previous_item_id)

    def item_done(self, item: Item) -> list[BaseModel]:
        """GA ``conversation.item.done``; beta has no such event."""
        return [] if self.beta else [self.event("conversation.item.done", item=self.item(item))]

    def item_retrieved(self, item: Item) -> BaseModel:
        """``conversation.item.retrieved``: audio and images only while the frame stays under 1 MiB.

        See docs/PROTOCOL.md §1.6.
        """
        audio_chars = sum(4 * ((len(p.audio) + 2) // 3) for p in item.content if p.audio is not None)
        image_chars = sum(len(p.image_url or "") for p in item.content)
        fits = audio_chars + image_chars + FRAME_ENVELOPE_RESERVE < MAX_SERVER_FRAME_CHARS
        return self.event("conversation.item.retrieved", item=self.item(item, with_media=fits))

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

    def output_audio_buffer(
        self, change: Literal["started", "stopped", "cleared"], response_id: str
    ) -> BaseModel:
        """``output_audio_buffer.started`` / ``.stopped`` / ``.cleared`` (transports that play audio: WebRTC)."""
        return self.event(f"output_audio_buffer.{change}", response_id=response_id)

    def speech_started(self, item_id: str, audio_start_ms: int) -> BaseModel:
        """``input_audio_buffer.speech_started``."""
        return self.event("input_audio_buffer.speech_started", item_id=item_id, audio_start_ms=audio_start_ms)

    def speech_stopped(self, item_id: str, audio_end_ms: int) -> BaseModel:
        """``input_audio_buffer.speech_stopped``."""
        return self.event("input_audio_buffer.speech_stopped", item_id=item_id, audio_end_ms=audio_end_ms)

    def timeout_triggered(self, item_id: str, audio_start_ms: int, audio_end_ms: int) -> BaseModel:
        """GA ``input_audio_buffer.timeout_triggered`` (the server VAD's idle timeout fired)."""
        return self.event(
            "input_audio_buffer.timeout_triggered",
            item_id=item_id,
            audio_start_ms=audio_start_ms,
            audio_end_ms=audio_end_ms,
        )

    # input audio transcription ---------------------------------------------------------------------------
    def transcription_delta(self, item_id: str, content_index: int, delta: str) -> BaseModel:
        """``conversation.item.input_audio_transcription.delta``."""
        return self.event(
            "conversation.item.input_audio_transcription.delta",
            item_id=item_id,
            content_index=content_index,
            delta=delta,
        )

    def transcription_completed(
        self, item_id: str, content_index: int, transcript: str, usage: TranscriptionUsage
    ) -> BaseModel:
        """``conversation.item.input_audio_transcription.completed`` with token usage."""
        return self.event(
            "conversation.item.input_audio_transcription.completed",
            item_id=item_id,
            content_index=content_index,
            transcript=transcript,
            usage={
                "type": "tokens",
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
            },
        )

    def transcription_failed(self, item_id: str, content_index: int, code: str, message: str) -> BaseModel:
        """``conversation.item.input_audio_transcription.failed`` (the response, if any, is unaffected)."""
        error = {"type": "transcription_error", "code": code, "message": message, "param": None}
        return self.event(
            "conversation.item.input_audio_transcription.failed",
            item_id=item_id,
            content_index=content_index,
            error=error,
        )

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
            output = {"format": ga_format(record.output_format), "voice": record.voice}
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


@dataclass(frozen=True)
class TranscriptionUsage:
    """Token usage of one input transcription."""

    input_tokens: int
    output_tokens: int


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
