"""What both SGLang backends share: request body, SSE lines, chunk -> `TokenChunk` (docs/SGLANG.md §6.2-§6.3).

SGLang's ``/generate`` stream (and ``Engine.async_generate(stream=True)``) yields dicts
``{"output_ids": [...], "meta_info": {"completion_tokens": N, "prompt_tokens": P, "finish_reason": ...}}``
where ``output_ids`` is cumulative by default and a delta with ``--incremental-streaming-output``.
`ChunkDecoder` turns either into new ids only, using ``completion_tokens`` so no mode has to be assumed, and
records the mode it observed. Pure and synchronous; one decoder per generation.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from realtime.backends.base import BackendError, FinishReason, SamplingParams, TokenChunk
from realtime.backends.context import ContextLengthExceeded
from realtime.backends.sglang.prompt import Prompt

SSE_DATA_PREFIX = "data:"
SSE_DONE = "[DONE]"

_FINISH_TYPES: dict[str, FinishReason] = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "abort": FinishReason.ABORT,
}


class StreamMode(enum.Enum):
    """How the server sends ``output_ids``; UNKNOWN until a chunk tells them apart."""

    UNKNOWN = "unknown"
    CUMULATIVE = "cumulative"  # every chunk repeats all ids so far (SGLang's default)
    INCREMENTAL = "incremental"  # each chunk holds only the new ids (--incremental-streaming-output)


@dataclass(frozen=True)
class ServerSampling:
    """Server-wide sampling values the Realtime API has no field for (``--top-p``, ``--repetition-penalty``).

    None keeps the per-request value of `SamplingParams` (Step-Audio-2's 0.9 and 1.05 by default).
    """

    top_p: float | None = None
    repetition_penalty: float | None = None


def sampling_payload(
    sampling: SamplingParams, stop_token_id: int, server: ServerSampling | None = None, *, max_new_tokens: int
) -> dict[str, Any]:
    """``sampling_params`` for one request: every value we rely on is explicit (docs/SGLANG.md §6.2).

    SGLang's own defaults (128 new tokens, skip_special_tokens true) would cut speech after ~4 s and hide the
    special ids the parser needs, so nothing is left to the server or the model's generation_config.
    ``max_new_tokens`` is the answer budget (`realtime.backends.base.answer_budget`).
    """
    server = server or ServerSampling()
    return {
        "max_new_tokens": max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p if server.top_p is None else server.top_p,
        "repetition_penalty": (
            sampling.repetition_penalty if server.repetition_penalty is None else server.repetition_penalty
        ),
        "stop_token_ids": [stop_token_id],
        "skip_special_tokens": False,
    }


# smg relays a worker stream that broke mid-response as one error chunk with this prefix.
GATEWAY_STREAM_ERROR = "Stream error:"


def sse_payload(line: str) -> str | None:
    """The payload of one SSE line, or None for blank lines, comments and non-data fields."""
    if not line.startswith(SSE_DATA_PREFIX):
        return None
    payload = line[len(SSE_DATA_PREFIX) :]
    return payload[1:] if payload.startswith(" ") else payload


def parse_chunk_json(payload: str) -> dict[str, Any]:
    """Decode one chunk; a mid-stream ``{"error": ...}`` becomes a BackendError.

    Raises:
        BackendError: ``protocol_error`` for non-JSON or non-object payloads, ``server_error`` for an
            error chunk (its message is passed on), ``stream_cut`` for the error chunk a gateway sends when
            its worker's stream broke (the worker died or was cut off mid-response).
    """
    try:
        chunk = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise BackendError(
            "protocol_error", f"SGLang sent a chunk that is not JSON: {payload[:200]!r}"
        ) from exc
    if not isinstance(chunk, dict):
        raise BackendError("protocol_error", f"SGLang sent a chunk that is not an object: {payload[:200]!r}")
    if "error" in chunk:
        message = error_message(chunk["error"])
        if message.startswith(GATEWAY_STREAM_ERROR):
            raise BackendError(
                "stream_cut", f"the SGLang worker's stream broke mid-response (the gateway says: {message})"
            )
        raise sglang_error(message)
    return chunk


def sglang_error(message: str, status: int | None = None) -> BackendError:
    """The precise failure for an error SGLang reported about a request we built.

    SGLang 0.5.23 refuses a prompt that leaves no room (``Requested token count exceeds the model's maximum
    context length of N tokens. You requested a total of M tokens: P tokens from the input messages and C
    tokens for the completion...``, or ``The input (P tokens) is longer than the model's context length``)
    and a reused ``rid``; those get their own codes. Anything else is ``http_<status>`` (HTTP refusal) or
    ``server_error`` (an error reported inside the stream or by the engine).
    """
    lowered = message.lower()
    if any(marker in lowered for marker in _CONTEXT_MARKERS):
        found = _PROMPT_TOKENS.search(message)
        prompt = int(next(g for g in found.groups() if g)) if found else None
        return ContextLengthExceeded(f"SGLang refused the request: {message}", prompt)
    if "duplicate request id" in lowered:
        return BackendError("duplicate_request_id", f"SGLang refused the request: {message}")
    if status is not None:
        return BackendError(f"http_{status}", f"SGLang returned HTTP {status}: {message}")
    return BackendError("server_error", f"SGLang error: {message}")


def server_abort_error(detail: Mapping[str, Any]) -> BackendError:
    """The failure for a stream SGLang ended with ``finish_reason {"type": "abort"}`` that we did not ask for
    (its scheduler refuses over-long prompts this way, after the tokenizer manager accepted them)."""
    message = str(detail.get("message") or "no reason given")
    if any(marker in message.lower() for marker in _CONTEXT_MARKERS):
        return sglang_error(message)
    status = detail.get("status_code")
    suffix = f" (status {status})" if status else ""
    return BackendError("aborted_by_server", f"SGLang aborted the request: {message}{suffix}")


_CONTEXT_MARKERS = (
    "maximum context length",  # tokenizer manager: prompt + max_new_tokens > context length
    "longer than the model's context length",  # tokenizer manager: prompt alone
    "exceeds the maximum allowed length",  # scheduler: prompt >= max_req_input_len
    "prompt is too long after expanding",  # scheduler: prompt with audio patches expanded
)
_PROMPT_TOKENS = re.compile(
    r"(\d+) tokens from the input messages|The input \((\d+) tokens\)|Input length \((\d+) tokens\)"
)


def error_message(error: object) -> str:
    """The human-readable part of SGLang's error shapes (``{"message": ...}``, a string, or anything)."""
    if isinstance(error, Mapping):
        message = error.get("message")
        if message:
            return str(message)
    return str(error)


class ChunkDecoder:
    """Normalises one generation's chunks to `TokenChunk`s with only the new ids.

    Args:
        prompt: the prompt that was sent; when it carries audio, the first reported ``prompt_tokens`` must
            equal `Prompt.expected_prompt_tokens` (SGLang drops unexpandable audio placeholders silently).
        check_audio: set False to skip that comparison (e.g. a model whose processor expands differently).
    """

    def __init__(self, prompt: Prompt, *, check_audio: bool = True) -> None:
        self._prompt = prompt
        self._check_audio = check_audio and bool(prompt.audio)
        self._seen = 0
        self._prompt_checked = False
        self.mode = StreamMode.UNKNOWN
        self.finish_reason: FinishReason | None = None
        self.finish_detail: Mapping[str, Any] = {}

    @property
    def seen(self) -> int:
        """Output ids received so far."""
        return self._seen

    def decode(self, chunk: Mapping[str, Any]) -> TokenChunk:
        """New ids of ``chunk`` (an SGLang stream dict without ``error``).

        Raises:
            BackendError: ``protocol_error`` when the chunk is malformed or inconsistent with earlier ones;
                ``audio_dropped`` when the reported prompt length shows the audio was not expanded.
        """
        meta = chunk.get("meta_info")
        ids = chunk.get("output_ids")
        if not isinstance(meta, Mapping) or not isinstance(ids, list):
            raise BackendError("protocol_error", f"SGLang chunk without output_ids/meta_info: {_keys(chunk)}")
        total = meta.get("completion_tokens")
        if not isinstance(total, int):
            raise BackendError(
                "protocol_error", "SGLang chunk without an integer meta_info.completion_tokens"
            )
        prompt_tokens = meta.get("prompt_tokens")
        prompt_tokens = prompt_tokens if isinstance(prompt_tokens, int) else None
        if prompt_tokens is not None and not self._prompt_checked:
            self._prompt_checked = True
            self._check_prompt_tokens(prompt_tokens)
        fresh = total - self._seen
        if fresh < 0 or fresh > len(ids):
            raise BackendError(
                "protocol_error",
                f"inconsistent SGLang chunk: {len(ids)} ids, completion_tokens={total}, already seen={self._seen}",
            )
        self._observe_mode(len(ids), fresh, total)
        new_ids = tuple(int(i) for i in ids[len(ids) - fresh :])
        self._seen = total
        finish = self._finish(meta.get("finish_reason"))
        cached = meta.get("cached_tokens")
        return TokenChunk(
            ids=new_ids,
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            completion_tokens=total,
            cached_tokens=cached if isinstance(cached, int) and cached >= 0 else None,
        )

    def _observe_mode(self, count: int, fresh: int, total: int) -> None:
        if self._seen == 0 or fresh == total:
            return  # the first ids look the same in both modes
        observed = StreamMode.CUMULATIVE if count == total else StreamMode.INCREMENTAL
        if count not in (total, fresh):
            raise BackendError(
                "protocol_error", f"SGLang chunk holds {count} ids: neither all {total} nor new {fresh}"
            )
        if self.mode is StreamMode.UNKNOWN:
            self.mode = observed
        elif self.mode is not observed:
            raise BackendError(
                "protocol_error", f"SGLang switched from {self.mode.value} to {observed.value} ids"
            )

    def _finish(self, raw: object) -> FinishReason | None:
        if raw is None:
            return None
        kind = raw.get("type") if isinstance(raw, Mapping) else raw
        reason = _FINISH_TYPES.get(str(kind))
        if reason is None:
            raise BackendError("protocol_error", f"unknown SGLang finish_reason: {raw!r}")
        self.finish_reason = reason
        self.finish_detail = raw if isinstance(raw, Mapping) else {"type": kind}
        return reason

    def _check_prompt_tokens(self, reported: int) -> None:
        if not self._check_audio:
            return
        expected = self._prompt.expected_prompt_tokens
        if reported == expected:
            return
        sent = len(self._prompt.input_ids)
        blocks = len(self._prompt.audio)
        if reported == sent:
            message = (
                f"SGLang ignored the {blocks} audio block(s): prompt_tokens={reported} equals the unexpanded "
                f"prompt; the served model has no Step-Audio-2 audio processor, or its tokenizer does not "
                f"round-trip <audio_start><audio_patch><audio_end> (install the streamvoice SGLang plugin)"
            )
        else:
            message = (
                f"SGLang expanded the audio differently: prompt_tokens={reported}, expected {expected} "
                f"({sent} ids + {blocks} block(s) of audio patches)"
            )
        raise BackendError("audio_dropped", message)


def _keys(chunk: Mapping[str, Any]) -> str:
    return ", ".join(sorted(str(k) for k in chunk)) or "(empty)"
