"""The small error taxonomy of the realtime server, and how it becomes a session's ``error`` event.

Everything that can go wrong while serving a connection is one of:

- `ProtocolViolation`: the client sent something we cannot accept (bad JSON, unknown event, invalid value,
  wrong state). An ``error`` event with an exact OpenAI code; the socket stays open.
- `SessionClosing`: the session must end (expired, over capacity, bad key): an ``error`` event, then a close
  with a specific WebSocket close code.
- `ResponseFailure`: one response failed in the backend or the speech pipeline. It never reaches the client
  as an ``error`` event of its own: `response.done` carries it in ``status_details.error``.
- anything else is a bug: it is logged with its traceback here and reported to the client as a generic
  ``server_error`` without details.

`describe_exception` maps exceptions (including `ExceptionGroup`s from task groups) to a session's ``error``
event and close code (docs/PROTOCOL.md §8). The same taxonomy has two more mappers, one per kind of answer
(docs/ARCHITECTURE.md §6): `realtime.session.response_lifecycle.settle` (a response's ``response.done``) and
`realtime.http.errors.as_http_error` (an HTTP error).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"

# WebSocket close codes (docs/PROTOCOL.md §1.5).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013

# OpenAI's codes (docs/PROTOCOL.md §8.3 says where each was read): real clients end their session on a code
# they do not know, so a refusal OpenAI also makes carries OpenAI's code, type and param.
CODE_ACTIVE_RESPONSE = "conversation_already_has_active_response"
CODE_CANCEL_NOT_ACTIVE = "response_cancel_not_active"
CODE_COMMIT_EMPTY = "input_audio_buffer_commit_empty"
CODE_MISSING_PARAMETER = "missing_required_parameter"
CODE_UNKNOWN_PARAMETER = "unknown_parameter"
CODE_INVALID_VALUE = "invalid_value"
CODE_INVALID_TYPE = "invalid_type"
CODE_INVALID_JSON = "invalid_json"
CODE_INVALID_EVENT = "invalid_event"
CODE_STRING_TOO_LONG = "string_above_max_length"
CODE_INTEGER_BELOW_MIN = "integer_below_min_value"
CODE_INTEGER_ABOVE_MAX = "integer_above_max_value"
CODE_DECIMAL_BELOW_MIN = "decimal_below_min_value"
CODE_DECIMAL_ABOVE_MAX = "decimal_above_max_value"
CODE_ITEM_RETRIEVE_UNKNOWN = "item_retrieve_invalid_item_id"
CODE_ITEM_DELETE_UNKNOWN = "item_delete_invalid_item_id"
CODE_ITEM_TRUNCATE_UNKNOWN = "item_truncate_invalid_item_id"
CODE_ITEM_DUPLICATE_ID = "item_create_duplicate_item_id"
CODE_ITEM_UNKNOWN_PREVIOUS = "item_create_invalid_previous_item_id"
CODE_SESSION_EXPIRED = "session_expired"
CODE_SESSION_LIMIT = "session_limit_reached"
# an event that does not fit the session type (PROTOCOL.md §8.3 R23, R55-R58)
CODE_INVALID_PARAMETER = "invalid_parameter"
CODE_CANNOT_UPDATE_VOICE = "cannot_update_voice"
CODE_INVALID_API_KEY = "invalid_api_key"
CODE_INTERNAL = "internal_error"
CODE_NULL = ""  # OpenAI sends ``"code": null`` for this refusal; the report carries None
INTERNAL_MESSAGE = "The server had an internal error."
# Our limits (README "Security and limits"): OpenAI publishes no codes for these.
CODE_TOO_MANY_RESPONSES = "too_many_out_of_band_responses"
CODE_DECODER_CAPACITY = "decoder_capacity_reached"
CODE_CONVERSATION_LIMIT = "conversation_limit_reached"
CODE_BUFFER_FULL = "input_audio_buffer_full"
CODE_NESTING_TOO_DEEP = "nesting_too_deep"
CODE_SHUTTING_DOWN = "server_shutting_down"
CODE_ORIGIN_NOT_ALLOWED = "origin_not_allowed"
CODE_SEND_TIMEOUT = "send_timeout"
CODE_PENDING_CALLS = "pending_calls_limit_reached"  # WebRTC calls not yet connected, beyond the cap
CODE_EVENT_TOO_LARGE = "event_too_large"  # a server event larger than the peer's data channel messages
CODE_WEBRTC_UNAVAILABLE = "webrtc_unavailable"  # the server has no network interface for ICE candidates

MAX_QUOTED_CHARS = 200  # how much of a client's value an error message repeats
MAX_MESSAGE_CHARS = 1000  # no error message is longer (a safety net behind `quote`)


ELLIPSIS = "..."


def quote(value: object) -> str:
    """The client's ``value`` as an error message may show it: at most `MAX_QUOTED_CHARS` characters."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= MAX_QUOTED_CHARS:
        return text
    return f"{text[:MAX_QUOTED_CHARS]}{ELLIPSIS} ({len(text)} characters)"


def bounded_message(message: str, *client_values: str | None) -> str:
    """``message`` as a client may get it: each long ``client_values`` it repeats (a ``param`` built from the
    client's keys) shortened by `quote`, and the whole at most `MAX_MESSAGE_CHARS` characters, the ellipsis
    included. Every error message leaves the server through here (WebSocket and HTTP)."""
    for value in client_values:
        if value is not None and len(value) > MAX_QUOTED_CHARS and value in message:
            message = message.replace(value, quote(value))
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - len(ELLIPSIS)] + ELLIPSIS
    return message


class RealtimeError(Exception):
    """Base of every error the server reports to a client.

    Attributes:
        code: OpenAI error code (``error.code``); `CODE_NULL` where OpenAI sends ``null`` for the same refusal.
        message: text safe to show to the client; never internal details.
        param: the offending parameter path (``error.param``), e.g. ``session.audio.output.voice``.
        error_type: ``invalid_request_error`` or ``server_error``.
    """

    error_type: str = INVALID_REQUEST

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.event_id: str | None = None  # the failing client event's id, echoed in error.event_id


class ProtocolViolation(RealtimeError):
    """A client mistake: reported as an ``error`` event; the session continues unchanged."""


class SessionClosing(RealtimeError):
    """The session must end: report, then close the socket with `close_code`.

    Attributes:
        close_code: WebSocket close code sent after the ``error`` event.
    """

    def __init__(
        self, code: str, message: str, *, close_code: int, error_type: str = INVALID_REQUEST
    ) -> None:
        super().__init__(code, message)
        self.close_code = close_code
        self.error_type = error_type


class PeerStalled(Exception):
    """The client stopped reading: a frame or a producer waited `send_timeout` for room.

    Not a `RealtimeError`: no ``error`` event can reach such a client. The connection ends the session and
    closes with `CLOSE_POLICY_VIOLATION` and reason ``send_timeout``.
    """


class PeerGone(Exception):
    """Writing to the socket failed: the client is gone. The connection ends the session at once."""


class ResponseFailure(RealtimeError):
    """One response failed (LLM backend or speech pipeline); reported in ``response.done``, the session lives.

    The response layer maps this one base; the two families are `SpeechError` here and
    `realtime.backends.base.BackendError`.
    """

    error_type = SERVER_ERROR


class SpeechError(ResponseFailure):
    """The speech side of a response failed (unknown voice, Token2Wav error, worker closed).

    ``code`` is ``unknown_voice``, ``speech_failed``, ``worker_closed``, ``voice_load_failed`` or
    ``voice_not_found``; ``message`` is safe to show to a client.
    """


@dataclass(frozen=True)
class ErrorReport:
    """What the client gets for one failure.

    Attributes:
        error_type: ``error.type``.
        code: ``error.code``.
        message: ``error.message``.
        param: ``error.param``.
        event_id: ``error.event_id`` (the client event that failed).
        close_code: WebSocket close code to send after the event, or None to keep the socket open.
    """

    error_type: str
    code: str | None
    message: str
    param: str | None = None
    event_id: str | None = None
    close_code: int | None = None


def describe_exception(exc: BaseException) -> ErrorReport:
    """Map any exception to the report the client sees; unexpected ones are logged with their traceback.

    An `ExceptionGroup` is unwrapped to its first `RealtimeError` if it holds one (a task group failing
    because one task raised it), else treated as a bug.
    """
    found = _first_realtime_error(exc)
    if found is None:
        log.error("internal error while serving a session", exc_info=exc)
        return ErrorReport(SERVER_ERROR, CODE_INTERNAL, INTERNAL_MESSAGE, close_code=CLOSE_INTERNAL_ERROR)
    close_code = found.close_code if isinstance(found, SessionClosing) else None
    message = bounded_message(found.message, found.param, found.event_id)
    param = found.param if found.param is None or len(found.param) <= MAX_QUOTED_CHARS else quote(found.param)
    event_id = found.event_id if isinstance(found.event_id, str) else None
    if event_id is not None and len(event_id) > MAX_QUOTED_CHARS:
        event_id = quote(event_id)
    return ErrorReport(found.error_type, found.code or None, message, param, event_id, close_code)


def _first_realtime_error(exc: BaseException) -> RealtimeError | None:
    if isinstance(exc, RealtimeError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_realtime_error(inner)
            if found is not None:
                return found
    return None
