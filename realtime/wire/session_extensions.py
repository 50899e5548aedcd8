"""Session fields that the pinned ``openai`` models (2.8, held back by SGLang) cannot validate.

The newest SDK (openai 3.x, which the Agents SDK needs) sends session fields that openai 2.8's
`RealtimeSessionCreateRequest` does not know (``parallel_tool_calls``, ``reasoning``, transcription
``languages`` / ``keywords`` / ``delay``, noise reduction ``strength``, a voice given as ``{"id": ...}``, tool
``allowed_callers`` / ``defer_loading`` / ``tunnel_id``), and transcription model names outside 2.8's literal
list (any name is accepted: the server always transcribes with its own model, and echoes the name).

`split_extensions` takes those fields out of a GA-shaped session payload before the 2.8 model validates the
rest, checks their types itself, and returns them as a `SessionExtensions` (docs/PROTOCOL.md §4.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from realtime.errors import (
    CODE_INVALID_TYPE,
    CODE_INVALID_VALUE,
    CODE_STRING_TOO_LONG,
    CODE_UNKNOWN_PARAMETER,
    ProtocolViolation,
)
from realtime.wire.validation import check_range

TRANSCRIPTION_DELAYS = ("minimal", "low", "medium", "high", "xhigh")
REASONING_EFFORTS = ("minimal", "low", "medium", "high", "xhigh")
# Tool fields of the newest schema that concern OpenAI's hosted tool runtime: accepted, not echoed.
TOOL_EXTENSIONS = ("allowed_callers", "defer_loading", "tunnel_id")
_TRANSCRIPTION_KEYS = frozenset({"model", "language", "prompt", "languages", "keywords", "delay"})
MAX_TRANSCRIPTION_PROMPT = 4096  # characters of prompt (with keywords) passed on to the model
MAX_LANGUAGE_CHARS = 32  # language hints are codes such as "en" or "zh-Hans"


@dataclass(frozen=True)
class TranscriptionSettings:
    """``audio.input.transcription`` (beta ``input_audio_transcription``): transcribe committed user audio.

    Attributes:
        model: the name the client asked for; echoed, never used to pick a model.
        language: ISO-639-1 hint passed to the model.
        prompt: spelling/style hint passed to the model.
        languages: several language hints (the first one is passed on when ``language`` is unset).
        keywords: words to spell as given; passed on as part of the prompt.
        delay: latency/accuracy trade-off of OpenAI's streaming models; accepted and echoed.
    """

    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    languages: tuple[str, ...] | None = None
    keywords: tuple[str, ...] | None = None
    delay: str | None = None

    @property
    def language_hint(self) -> str | None:
        """The language passed to the model."""
        return self.language or (self.languages[0] if self.languages else None)

    @property
    def prompt_hint(self) -> str | None:
        """The prompt passed to the model: the client's prompt and keywords."""
        parts = [self.prompt] if self.prompt else []
        if self.keywords:
            parts.append(", ".join(self.keywords))
        return "\n".join(parts) or None

    def to_json(self) -> dict[str, Any]:
        """The fields that are set, as the session echo shows them."""
        data: dict[str, Any] = {}
        for name in ("model", "language", "prompt", "delay"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        for name in ("languages", "keywords"):
            value = getattr(self, name)
            if value is not None:
                data[name] = list(value)
        return data


@dataclass(frozen=True)
class SessionExtensions:
    """The fields `split_extensions` took out; ``present`` names those the payload had (``null`` included).

    Names in ``present``: ``transcription``, ``parallel_tool_calls``, ``reasoning``, ``noise_reduction_strength``.
    """

    present: frozenset[str] = frozenset()
    transcription: TranscriptionSettings | None = None
    parallel_tool_calls: bool | None = None
    reasoning: dict[str, Any] | None = None
    noise_reduction_strength: float | None = None


def split_extensions(session: dict[str, Any]) -> tuple[dict[str, Any], SessionExtensions]:
    """Take the fields listed in the module docstring out of a GA-shaped session payload.

    Returns:
        the payload left for the pinned model (a copy; ``session`` is not modified) and the extensions.

    Raises:
        ProtocolViolation: an extension field with the wrong type or value.
    """
    rest = dict(session)
    present: set[str] = set()
    values: dict[str, Any] = {}
    if "parallel_tool_calls" in rest:
        present.add("parallel_tool_calls")
        values["parallel_tool_calls"] = _optional(
            rest.pop("parallel_tool_calls"), bool, "session.parallel_tool_calls"
        )
    if "reasoning" in rest:
        present.add("reasoning")
        values["reasoning"] = _reasoning(rest.pop("reasoning"))
    audio = rest.get("audio")
    if isinstance(audio, dict):
        audio = rest["audio"] = dict(audio)
        audio_in = audio.get("input")
        if isinstance(audio_in, dict):
            audio_in = audio["input"] = dict(audio_in)
            if "transcription" in audio_in:
                present.add("transcription")
                values["transcription"] = parse_transcription(
                    audio_in.pop("transcription"), "session.audio.input.transcription"
                )
            noise = audio_in.get("noise_reduction")
            if isinstance(noise, dict) and "strength" in noise:
                noise = audio_in["noise_reduction"] = dict(noise)
                present.add("noise_reduction_strength")
                values["noise_reduction_strength"] = _strength(noise.pop("strength"))
        audio_out = audio.get("output")
        if isinstance(audio_out, dict) and isinstance(audio_out.get("voice"), dict):
            audio["output"] = {**audio_out, "voice": _voice_id(audio_out["voice"])}
    tools = rest.get("tools")
    if isinstance(tools, list):
        rest["tools"] = [
            {k: v for k, v in tool.items() if k not in TOOL_EXTENSIONS} if isinstance(tool, dict) else tool
            for tool in tools
        ]
    return rest, SessionExtensions(frozenset(present), **values)


def parse_transcription(value: Any, param: str) -> TranscriptionSettings | None:
    """Validate a transcription settings object (``null`` turns transcription off).

    Raises:
        ProtocolViolation: not an object, an unknown key, or a field of the wrong type.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProtocolViolation(CODE_INVALID_TYPE, f"Invalid type for '{param}': expected an object.", param)
    for key in value:
        if key not in _TRANSCRIPTION_KEYS:
            raise ProtocolViolation(
                CODE_UNKNOWN_PARAMETER, f"Unknown parameter: '{param}.{key}'.", f"{param}.{key}"
            )
    delay = _optional(value.get("delay"), str, f"{param}.delay")
    if delay is not None and delay not in TRANSCRIPTION_DELAYS:
        raise ProtocolViolation(
            CODE_INVALID_VALUE,
            f"Invalid value: '{delay}'. Supported values are: {', '.join(TRANSCRIPTION_DELAYS)}.",
            f"{param}.delay",
        )
    settings = TranscriptionSettings(
        model=_optional(value.get("model"), str, f"{param}.model"),
        language=_optional(value.get("language"), str, f"{param}.language"),
        prompt=_optional(value.get("prompt"), str, f"{param}.prompt"),
        languages=_strings(value.get("languages"), f"{param}.languages"),
        keywords=_strings(value.get("keywords"), f"{param}.keywords"),
        delay=delay,
    )
    for language in (settings.language, *(settings.languages or ())):
        if language is not None and len(language) > MAX_LANGUAGE_CHARS:
            raise ProtocolViolation(
                CODE_STRING_TOO_LONG,
                f"Invalid '{param}.language': a language code has at most {MAX_LANGUAGE_CHARS} characters.",
                f"{param}.language",
            )
    hint = settings.prompt_hint or ""
    if len(hint) > MAX_TRANSCRIPTION_PROMPT:
        raise ProtocolViolation(
            CODE_STRING_TOO_LONG,
            f"Invalid '{param}.prompt': prompt and keywords together exceed {MAX_TRANSCRIPTION_PROMPT} characters.",
            f"{param}.prompt",
        )
    return settings


def _optional(value: Any, kind: type, param: str) -> Any:
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ProtocolViolation(
            CODE_INVALID_TYPE, f"Invalid type for '{param}': expected {kind.__name__}.", param
        )
    return value


def _strings(value: Any, param: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolViolation(
            CODE_INVALID_TYPE, f"Invalid type for '{param}': expected an array of strings.", param
        )
    return tuple(value)


def _reasoning(value: Any) -> dict[str, Any] | None:
    param = "session.reasoning"
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProtocolViolation(CODE_INVALID_TYPE, f"Invalid type for '{param}': expected an object.", param)
    for key in value:
        if key != "effort":
            raise ProtocolViolation(
                CODE_UNKNOWN_PARAMETER, f"Unknown parameter: '{param}.{key}'.", f"{param}.{key}"
            )
    effort = value.get("effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        raise ProtocolViolation(
            CODE_INVALID_VALUE,
            f"Invalid value: '{effort}'. Supported values are: {', '.join(REASONING_EFFORTS)}.",
            f"{param}.effort",
        )
    return dict(value)


def _strength(value: Any) -> float | None:
    param = "session.audio.input.noise_reduction.strength"
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolViolation(CODE_INVALID_TYPE, f"Invalid type for '{param}': expected a number.", param)
    check_range(param, value, 0.0, 1.0)
    return float(value)


def _voice_id(value: dict[str, Any]) -> Any:
    # {"id": "voice_..."} names a custom voice: here, any registered voice name
    param = "session.audio.output.voice"
    if set(value) != {"id"} or not isinstance(value["id"], str):
        raise ProtocolViolation(
            CODE_INVALID_VALUE, 'Invalid value: a voice object must be {"id": "<voice name>"}.', f"{param}.id"
        )
    return value["id"]
