"""A response's lifecycle: its phases with guarded transitions, and the status and usage it closes with.

`realtime.session.response.ResponseRun` drives one response through ``created -> streaming -> closing ->
done``; `settle` turns how the generation ended (finished, cancelled, failed) into the ``response.done`` status,
status details and usage (docs/PROTOCOL.md §5.3). Pure bookkeeping: no I/O, event loop only.
"""

from __future__ import annotations

import enum
import logging
from typing import Literal

from realtime.backends.base import FinishReason
from realtime.errors import CODE_INTERNAL, INTERNAL_MESSAGE, SERVER_ERROR, ResponseFailure
from realtime.metrics import Metrics
from realtime.speech.reply import GenerationDone, UsageMeter
from realtime.wire.records import ResponseRecord, TokenUsage
from streaming_parser import VocabLayout

log = logging.getLogger(__name__)

CancelReason = Literal["turn_detected", "client_cancelled"]


class ResponsePhase(enum.Enum):
    """Lifecycle of a response."""

    CREATED = "created"
    STREAMING = "streaming"
    CLOSING = "closing"
    DONE = "done"


_ALLOWED = {
    ResponsePhase.CREATED: {ResponsePhase.STREAMING, ResponsePhase.CLOSING},
    ResponsePhase.STREAMING: {ResponsePhase.CLOSING},
    ResponsePhase.CLOSING: {ResponsePhase.DONE},
}


def advance(phase: ResponsePhase, target: ResponsePhase) -> ResponsePhase:
    """``target`` if the lifecycle allows going there from ``phase``.

    Raises:
        RuntimeError: a transition the lifecycle forbids (a bug, never a client's doing).
    """
    if target not in _ALLOWED.get(phase, set()):
        raise RuntimeError(f"response cannot go from {phase.value} to {target.value}")
    return target


def settle(
    record: ResponseRecord,
    done: GenerationDone | None,
    error: BaseException | None,
    cancel_reason: CancelReason,
    meter: UsageMeter,
    vocab: VocabLayout,
    metrics: Metrics,
) -> None:
    """Set ``record``'s status, status details and usage from how its generation ended.

    Args:
        record: the response record (written).
        done: the generation's last event, None when it was cancelled or failed.
        error: the failure, if any (a `ResponseFailure` is reported as is; anything else is a logged bug).
        cancel_reason: why a cancelled response was cancelled.
        meter: tokens consumed and produced so far (the usage of a response that did not finish).
        vocab: the id layout (audio ids are counted apart from text ids).
        metrics: where the error or cancel is counted.
    """
    if error is not None:
        if isinstance(error, ResponseFailure):
            kind, code, message = error.error_type, error.code, error.message
        else:  # a bug: details go to the log, never to the client
            log.error("response %s failed", record.id, exc_info=error)
            kind, code, message = SERVER_ERROR, CODE_INTERNAL, INTERNAL_MESSAGE
        record.status, record.error = "failed", (kind, code, message)
        metrics.error(code)
    elif done is None:
        record.status, record.reason = "cancelled", cancel_reason
        metrics.response_cancelled(cancel_reason)
    elif done.finish is FinishReason.LENGTH:
        record.status, record.reason = "incomplete", "max_output_tokens"
    elif done.finish is FinishReason.ABORT:
        record.status = "cancelled"
    else:
        record.status = "completed"
    if done is not None:
        input_tokens, output_tokens, output_ids = (
            done.usage.input_tokens,
            done.usage.output_tokens,
            done.output_ids,
        )
        cached_tokens = done.usage.cached_tokens
    elif meter.input_tokens or meter.output_ids:
        # cancelled or failed: report what the LLM consumed and produced up to the end, as OpenAI does
        output_ids = tuple(meter.output_ids)
        input_tokens, output_tokens = meter.input_tokens, len(output_ids)
        cached_tokens = meter.cached_tokens
    else:
        return
    audio = sum(1 for i in output_ids if vocab.audio_code(i) is not None or i == vocab.audio_pad)
    record.usage = TokenUsage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        output_text_tokens=max(output_tokens - audio, 0),
        output_audio_tokens=audio,
        cached_tokens=cached_tokens,
    )
