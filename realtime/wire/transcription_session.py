"""Transcription sessions on the wire: the update a client sends, how it changes the session, what the server
echoes in beta, and the refusals of events that do not fit the session's type (docs/PROTOCOL.md §4.8).

A session opened with ``?intent=transcription`` (realtime/wire/handshake.py) is a transcription session for its
whole life. It takes GA ``session.update`` with ``session.type: "transcription"`` (the openai model
`RealtimeTranscriptionSessionCreateRequest`) or, on beta connections, ``transcription_session.update`` (beta's
flat fields, moved into the GA layout by realtime/wire/beta.py first). Only the input audio fields
(``format``, ``transcription``, ``turn_detection``, ``noise_reduction``) and ``include`` exist in it; an update
naming anything else gets ``unknown_parameter``. A realtime update sent to a transcription session, or the other
way round, gets OpenAI's ``invalid_parameter`` refusal, and so does ``response.create``: a transcription session
never responds.

Beta's ``transcription_session.created`` / ``.updated`` are typed here (`BetaTranscriptionSessionEvent`): the
openai SDK's beta union has no ``.created``, and its ``.updated`` model requires the ``client_secret`` that
OpenAI's API reference says is absent from sessions updated over a WebSocket.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from openai.types.realtime import RealtimeTranscriptionSessionCreateRequest
from pydantic import BaseModel, ConfigDict

from realtime.errors import CODE_INVALID_PARAMETER, CODE_UNKNOWN_PARAMETER, ProtocolViolation
from realtime.wire.beta import beta_session_to_ga
from realtime.wire.session_config import SessionConfig, SessionType, check_include, input_audio_changes
from realtime.wire.session_extensions import SessionExtensions, split_extensions
from realtime.wire.validation import reject_extras, validate_model

# Fields clients echo back from the session object: read-only, accepted and ignored.
_READ_ONLY = frozenset({"id", "object", "expires_at"})
# Beta transcription-session fields with no effect here: the ephemeral key's lifetime (this server has no
# ephemeral keys) and the output modalities (a transcription session only ever writes text).
_BETA_IGNORED = ("client_secret", "modalities")
# Extensions (realtime/wire/session_extensions.py) that exist in a transcription session; the others are
# realtime-session fields.
_TRANSCRIPTION_EXTENSIONS = frozenset({"transcription", "noise_reduction_strength"})


@dataclass(frozen=True)
class TranscriptionSessionUpdate:
    """A transcription session's update as realtime/wire/client_events.py decodes it: GA ``session.update`` with
    ``session.type: "transcription"``, or beta ``transcription_session.update``, as the GA model."""

    event_id: str | None
    session: RealtimeTranscriptionSessionCreateRequest
    extensions: SessionExtensions = field(default_factory=SessionExtensions)


def decode_transcription_session(
    session: dict[str, Any], *, beta_shape: bool
) -> tuple[RealtimeTranscriptionSessionCreateRequest, SessionExtensions]:
    """Validate the ``session`` of a transcription session's update.

    Args:
        session: the JSON object the client sent (not modified).
        beta_shape: the fields may be beta's flat ones (``input_audio_transcription`` ...): a beta connection.

    Returns:
        The GA model of the update and the fields newer than it (``transcription``, noise ``strength``).

    Raises:
        ProtocolViolation: a field a transcription session does not have (``unknown_parameter``), or an
            invalid value (the codes of docs/PROTOCOL.md §8.3).
    """
    payload = dict(session)
    if beta_shape:
        for name in _BETA_IGNORED:
            payload.pop(name, None)
        payload = beta_session_to_ga(payload)
    payload["type"] = "transcription"
    payload, extensions = split_extensions(payload)
    for name in sorted(extensions.present - _TRANSCRIPTION_EXTENSIONS):
        param = f"session.{name}"
        raise ProtocolViolation(CODE_UNKNOWN_PARAMETER, f"Unknown parameter: '{param}'.", param)
    model = validate_model(RealtimeTranscriptionSessionCreateRequest, payload, "session")
    reject_extras(model, "session", _READ_ONLY)
    return model, extensions


def apply_transcription_update(
    config: SessionConfig, update: RealtimeTranscriptionSessionCreateRequest, extensions: SessionExtensions
) -> SessionConfig:
    """``config`` with the fields present in a transcription session's update applied (``null`` clears).

    Raises:
        ProtocolViolation: an invalid field; the caller keeps ``config`` unchanged.
    """
    changes: dict[str, Any] = {}
    if "include" in update.model_fields_set:
        changes["include"] = check_include(update.include)
    audio = update.audio
    if audio is not None and audio.input is not None:
        changes.update(input_audio_changes(audio.input))
    for name in _TRANSCRIPTION_EXTENSIONS:
        if name in extensions.present:
            changes[name] = getattr(extensions, name)
    return replace(config, **changes)


def session_type_mismatch(session_type: SessionType, *, beta: bool) -> ProtocolViolation:
    """OpenAI's refusal of an update of the other session type (``session_type`` is the session's own).

    GA's wording has no "event"; beta's names the event (docs/PROTOCOL.md §8.3 R23, R55, R56).
    """
    sent = "realtime" if session_type == "transcription" else "transcription"
    event = " event" if beta else ""
    return ProtocolViolation(
        CODE_INVALID_PARAMETER,
        f"Passing a {sent} session update{event} to a {session_type} session is not allowed.",
    )


def responses_refused() -> ProtocolViolation:
    """The refusal of ``response.create`` in a transcription session (docs/PROTOCOL.md §8.3 R57)."""
    return ProtocolViolation(
        CODE_INVALID_PARAMETER,
        "Passing a response.create event to a transcription session is not allowed: a transcription session "
        "only transcribes its input audio.",
    )


class _Echo(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BetaTranscriptionSettings(_Echo):
    """Beta ``input_audio_transcription`` as echoed (openai 3.x ``languages`` / ``keywords`` / ``delay`` too)."""

    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    languages: list[str] | None = None
    keywords: list[str] | None = None
    delay: str | None = None


class BetaTranscriptionTurnDetection(_Echo):
    """Beta ``turn_detection`` of a transcription session: no response settings (it never responds)."""

    type: Literal["server_vad", "semantic_vad"]
    threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    eagerness: Literal["low", "medium", "high", "auto"] | None = None


class BetaNoiseReduction(_Echo):
    """Beta ``input_audio_noise_reduction``."""

    type: Literal["near_field", "far_field"]
    strength: float | None = None


class BetaTranscriptionSession(_Echo):
    """The beta transcription session object (``realtime.transcription_session``), without ``client_secret``."""

    id: str
    object: Literal["realtime.transcription_session"]
    input_audio_format: Literal["pcm16", "g711_ulaw", "g711_alaw"]
    input_audio_transcription: BetaTranscriptionSettings | None
    turn_detection: BetaTranscriptionTurnDetection | None
    input_audio_noise_reduction: BetaNoiseReduction | None
    include: list[str] | None


class BetaTranscriptionSessionEvent(_Echo):
    """Beta ``transcription_session.created`` (first event of a beta transcription session) / ``.updated``."""

    type: Literal["transcription_session.created", "transcription_session.updated"]
    event_id: str
    session: BetaTranscriptionSession


BETA_TRANSCRIPTION_EVENTS: dict[str, type[BaseModel]] = {
    "transcription_session.created": BetaTranscriptionSessionEvent,
    "transcription_session.updated": BetaTranscriptionSessionEvent,
}
