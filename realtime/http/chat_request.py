"""The body of ``POST /v1/chat/completions``, validated, and its messages as prompt turns.

Accepted (OpenAI's request shape): ``model``, ``messages``, ``modalities`` (``["text"]`` or
``["text", "audio"]``), ``audio`` (``voice``, ``format`` of ``wav|mp3|flac|opus|aac|pcm16``), ``stream``,
``stream_options.include_usage``, ``max_completion_tokens`` / ``max_tokens``, ``temperature``, ``top_p``,
``n`` (1 only), ``tools`` (function tools) and ``tool_choice``. Parameters that do not change what this model
produces (``user``, ``seed``, ``store``, ``metadata``, penalties, ``parallel_tool_calls``, ...) are accepted and
ignored; OpenAI parameters it cannot honour (``stop``, ``logprobs``, ``response_format``, ...) are
``unsupported_parameter`` with the reason; anything else is ``unknown_parameter``. A ``null`` value counts as absent.

Messages: ``system``/``developer`` text becomes the instructions; ``user`` content is text and ``input_audio``
parts (base64 ``wav`` or ``mp3``; the model hears them); ``assistant`` turns come back as the ids of an earlier
spoken answer (``audio.id``, see realtime/http/audio_store.py), else as their text, plus their ``tool_calls``;
``tool`` messages are function results. Audio decoding runs off the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from realtime.audio import PCM_RATE
from realtime.backends.base import PromptTurn
from realtime.codecs import UndecodableAudio, decode_audio
from realtime.errors import CODE_INVALID_TYPE, CODE_INVALID_VALUE, CODE_MISSING_PARAMETER, ProtocolViolation
from realtime.http.audio_store import AudioStore
from realtime.session.tool_calls import ForcedFunction, ToolChoice, ToolsPrompt, call_text, tools_prompt

MAX_INPUT_AUDIO_SECONDS = 600.0  # all input_audio parts of one request together (bounds decoded PCM: 29 MB)
IGNORED_PARAMETERS = frozenset(
    {
        "user",
        "seed",
        "store",
        "metadata",
        "frequency_penalty",
        "presence_penalty",
        "parallel_tool_calls",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
        "logit_bias",
    }
)
# OpenAI parameters this server knows but cannot honour: refused as unsupported (OpenAI's code for a known
# parameter a model does not take) with the reason, rather than as "unrecognized".
UNSUPPORTED_PARAMETERS = {
    "logprobs": "log probabilities are not returned",
    "top_logprobs": "log probabilities are not returned",
    "stop": "the backend streams token ids without text, so stop sequences cannot be matched",
    "response_format": "structured output (JSON mode, JSON schema) is not available for this model",
    "reasoning_effort": "the model has no reasoning setting",
    "verbosity": "the model has no verbosity setting",
    "prediction": "predicted outputs are not available",
    "web_search_options": "web search is not available",
    "functions": "use 'tools'",
    "function_call": "use 'tool_choice'",
}
CODE_UNSUPPORTED_PARAMETER = "unsupported_parameter"
# User content parts OpenAI's chat accepts that this model cannot use (docs/PROTOCOL.md §3.1).
UNUSABLE_PARTS = frozenset({"image_url", "file"})
AudioOutFormat = Literal["wav", "mp3", "flac", "opus", "aac", "pcm16"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # no "yes" -> True, no "1" -> 1


class AudioOutput(_Strict):
    """``audio``: the voice and file format of a spoken answer."""

    voice: str
    format: AudioOutFormat


class StreamOptions(_Strict):
    """``stream_options``."""

    include_usage: bool = False
    include_obfuscation: bool | None = None  # accepted; we never pad chunks


class FunctionSpec(_Strict):
    """``tools[].function``."""

    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolSpec(_Strict):
    """``tools[]``: function tools only (the model calls nothing else)."""

    type: Literal["function"]
    function: FunctionSpec


class ChatRequest(_Strict):
    """The validated body (``messages`` are checked in detail by `prompt_from_messages`)."""

    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioOutput | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_completion_tokens: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1, le=1)
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None

    @property
    def speaks(self) -> bool:
        """True when a spoken answer was asked for."""
        return self.modalities is not None and "audio" in self.modalities


def clean_body(data: dict[str, Any]) -> dict[str, Any]:
    """Drop ``null`` values and the accepted-but-ignored parameters before validation.

    Raises:
        ProtocolViolation: ``unsupported_parameter`` for a parameter in `UNSUPPORTED_PARAMETERS` (``false``
            counts as absent for ``logprobs``, which some clients send by default).
    """
    kept = {k: v for k, v in data.items() if v is not None and k not in IGNORED_PARAMETERS}
    if kept.get("logprobs") is False:
        del kept["logprobs"]
    unsupported = sorted(kept.keys() & UNSUPPORTED_PARAMETERS.keys())
    if unsupported:
        name = unsupported[0]
        raise ProtocolViolation(
            CODE_UNSUPPORTED_PARAMETER,
            f"Unsupported parameter: '{name}' is not supported by this server: {UNSUPPORTED_PARAMETERS[name]}.",
            name,
        )
    return kept


def check_audio_options(body: ChatRequest) -> None:
    """``audio`` is required with the audio modality, and meaningless without it.

    Raises:
        ProtocolViolation: one of the two mistakes.
    """
    if body.speaks and body.audio is None:
        raise ProtocolViolation(
            CODE_MISSING_PARAMETER,
            "The 'audio' parameter is required when 'modalities' includes 'audio'.",
            "audio",
        )
    if body.audio is not None and not body.speaks:
        raise ProtocolViolation(
            CODE_INVALID_VALUE, "The 'audio' parameter needs 'modalities' to include 'audio'.", "modalities"
        )


def chat_tool_choice(value: str | dict[str, Any] | None) -> ToolChoice:
    """Chat's ``tool_choice`` (``"auto"``, ``{"type": "function", "function": {"name": ...}}``, ...) as the
    shared `ToolChoice`; absent means ``auto``, a choice that names no function leaves the tools optional."""
    if value in ("auto", "none", "required"):
        return value  # type: ignore[return-value]
    if isinstance(value, dict) and value.get("type") == "function":
        name = (value.get("function") or {}).get("name")
        if isinstance(name, str) and name:
            return ForcedFunction(name)
    return "auto"


def tools_part(body: ChatRequest) -> ToolsPrompt:
    """The tools turn and directives of the prompt: `realtime.session.tool_calls.tools_prompt`, the builder the
    Realtime door uses too.

    Raises:
        ProtocolViolation: ``tool_choice`` forces a function that is not among ``tools``.
    """
    tools = [{"type": "function", **t.function.model_dump(exclude_none=True)} for t in body.tools or []]
    return tools_prompt(tools, chat_tool_choice(body.tool_choice), param="tool_choice")


def _ignore(kind: str) -> None:
    """Default `prompt_from_messages` hook: unusable parts go uncounted."""


async def prompt_from_messages(
    messages: list[dict[str, Any]], store: AudioStore, on_unused: Callable[[str], None] = _ignore
) -> tuple[str, list[PromptTurn], float]:
    """(instructions, turns, seconds of input audio) for ``messages``.

    ``image_url`` and ``file`` parts of user messages (OpenAI accepts them; this model cannot see) are
    checked, reported to ``on_unused`` by type, and left out of the turns (docs/PROTOCOL.md §3.1); a user
    message holding nothing else gives no turn.

    Raises:
        ProtocolViolation: a malformed message, an unsupported content part, undecodable audio, or an
            ``audio.id`` that is unknown or expired (with no text to fall back on).
    """
    instructions: list[str] = []
    turns: list[PromptTurn] = []
    call_names: dict[str, str] = {}
    audio_seconds = 0.0
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise ProtocolViolation(
                CODE_INVALID_TYPE, f"Invalid type for '{where}': expected an object.", where
            )
        role = message.get("role")
        if role in ("system", "developer"):
            instructions.append(_text_of(message.get("content"), f"{where}.content"))
        elif role == "user":
            budget = MAX_INPUT_AUDIO_SECONDS - audio_seconds
            text, pcm, only_unused = await _user_content(
                message.get("content"), f"{where}.content", budget, on_unused
            )
            audio_seconds += len(pcm) / (2 * PCM_RATE)
            if not only_unused:
                turns.append(PromptTurn(role="user", text=text or None, audio_pcm16=pcm or None))
        elif role == "assistant":
            turns.extend(_assistant_turns(message, where, store, call_names))
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str):
                raise ProtocolViolation(
                    CODE_MISSING_PARAMETER,
                    f"Missing required parameter: '{where}.tool_call_id'.",
                    f"{where}.tool_call_id",
                )
            text = _text_of(message.get("content"), f"{where}.content")
            turns.append(PromptTurn(role="tool", text=text, name=call_names.get(call_id)))
        else:
            raise ProtocolViolation(
                CODE_INVALID_VALUE,
                f"Invalid value for '{where}.role': {role!r}; supported roles are system, developer, user, "
                "assistant and tool.",
                f"{where}.role",
            )
    return "\n".join(i for i in instructions if i), turns, audio_seconds


def _text_of(content: Any, where: str) -> str:
    """Text content: a string or a list of ``text`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
                raise ProtocolViolation(
                    CODE_INVALID_VALUE,
                    f"Invalid content part at '{where}[{j}]': only text is accepted here.",
                    f"{where}[{j}]",
                )
            value = part.get("text", part.get("refusal"))
            if not isinstance(value, str):
                raise ProtocolViolation(
                    CODE_INVALID_TYPE, f"Invalid type for '{where}[{j}].text'.", f"{where}[{j}].text"
                )
            texts.append(value)
        return "".join(texts)
    raise ProtocolViolation(
        CODE_INVALID_TYPE, f"Invalid type for '{where}': expected a string or parts.", where
    )


async def _user_content(
    content: Any, where: str, budget_s: float, on_unused: Callable[[str], None]
) -> tuple[str, bytes, bool]:
    """(text, PCM16, whether the parts were all unusable ones) of a user message's content."""
    if isinstance(content, str):
        return content, b"", False
    if not isinstance(content, list):
        raise ProtocolViolation(
            CODE_INVALID_TYPE, f"Invalid type for '{where}': expected a string or parts.", where
        )
    texts: list[str] = []
    audio: list[bytes] = []
    unused = 0
    for j, part in enumerate(content):
        here = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "input_audio":
            pcm = await _input_audio(part.get("input_audio"), f"{here}.input_audio", budget_s)
            budget_s -= len(pcm) / (2 * PCM_RATE)
            audio.append(pcm)
        elif kind in UNUSABLE_PARTS:
            _check_unusable(part, kind, here)
            on_unused(kind)
            unused += 1
        else:
            raise ProtocolViolation(
                CODE_INVALID_VALUE,
                f"Invalid value: '{kind}'. Supported values are: 'text', 'image_url', 'input_audio', and "
                "'file'.",
                f"{here}.type",
            )
    return "".join(texts), b"".join(audio), bool(content) and unused == len(content)


def _check_unusable(part: dict[str, Any], kind: str, where: str) -> None:
    """The shape OpenAI requires of an ``image_url`` / ``file`` part (its data is never read here)."""
    spec = part.get(kind)
    if not isinstance(spec, dict):
        raise ProtocolViolation(
            CODE_MISSING_PARAMETER, f"Missing required parameter: '{where}.{kind}'.", f"{where}.{kind}"
        )
    if kind == "image_url" and not isinstance(spec.get("url"), str):
        raise ProtocolViolation(
            CODE_MISSING_PARAMETER,
            f"Missing required parameter: '{where}.image_url.url'.",
            f"{where}.image_url.url",
        )


async def _input_audio(spec: Any, where: str, budget_s: float) -> bytes:
    if not isinstance(spec, dict) or not isinstance(spec.get("data"), str):
        raise ProtocolViolation(
            CODE_MISSING_PARAMETER, f"Missing required parameter: '{where}.data'.", f"{where}.data"
        )
    if spec.get("format") not in ("wav", "mp3"):
        raise ProtocolViolation(
            CODE_INVALID_VALUE,
            f"Invalid value for '{where}.format': expected 'wav' or 'mp3'.",
            f"{where}.format",
        )
    try:
        raw = base64.b64decode(spec["data"], validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolViolation(
            CODE_INVALID_VALUE, f"Invalid value for '{where}.data': not base64.", f"{where}.data"
        ) from None
    try:
        pcm, _ = await asyncio.to_thread(decode_audio, raw, PCM_RATE, max_seconds=max(budget_s, 0.0))
    except UndecodableAudio as exc:
        raise ProtocolViolation(
            CODE_INVALID_VALUE, f"Invalid audio at '{where}.data': {exc}.", f"{where}.data"
        ) from None
    if not pcm:
        raise ProtocolViolation(
            CODE_INVALID_VALUE, f"Invalid audio at '{where}.data': it holds no samples.", f"{where}.data"
        )
    return pcm


def _assistant_turns(
    message: dict[str, Any], where: str, store: AudioStore, call_names: dict[str, str]
) -> list[PromptTurn]:
    turns: list[PromptTurn] = []
    content = message.get("content")
    text = _text_of(content, f"{where}.content") if content is not None else ""
    audio = message.get("audio")
    from_ids = False  # the answer's own ids already hold any call it wrote
    if audio is not None:
        audio_id = audio.get("id") if isinstance(audio, dict) else None
        if not isinstance(audio_id, str):
            raise ProtocolViolation(
                CODE_MISSING_PARAMETER,
                f"Missing required parameter: '{where}.audio.id'.",
                f"{where}.audio.id",
            )
        stored = store.get(audio_id)
        if stored is not None:
            ids = tuple(int(i) for i in stored.output_ids)
            turns.append(PromptTurn(role="assistant", output_ids=ids, spoken=True))
            from_ids = True
        elif text:
            turns.append(PromptTurn(role="assistant", text=text))
        else:
            raise ProtocolViolation(
                CODE_INVALID_VALUE,
                f"Invalid value for '{where}.audio.id': audio {audio_id!r} is unknown or has expired; send the "
                "answer's text as 'content' instead.",
                f"{where}.audio.id",
            )
    elif text:
        turns.append(PromptTurn(role="assistant", text=text))
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        here = f"{where}.tool_calls"
        raise ProtocolViolation(CODE_INVALID_TYPE, f"Invalid type for '{here}': expected an array.", here)
    for k, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            here = f"{where}.tool_calls[{k}].function.name"
            raise ProtocolViolation(CODE_MISSING_PARAMETER, f"Missing required parameter: '{here}'.", here)
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        if isinstance(call.get("id"), str):
            call_names[call["id"]] = function["name"]
        if not from_ids:
            turns.append(PromptTurn(role="assistant", text=call_text(function["name"], arguments)))
    return turns
