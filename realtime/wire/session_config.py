"""The effective configuration of one session, and how a ``session.update`` changes it.

`SessionConfig` is immutable; `apply_session_update` returns a new one or raises `ProtocolViolation` and
leaves the old one in force (updates are all-or-nothing, docs/PROTOCOL.md §4.2). The update arrives as a
GA `RealtimeSessionCreateRequest` (realtime/wire/client_events.py normalises beta's flat shape into it), so presence of a
field is `model_fields_set` and ``null`` means "clear". A transcription session's update (PROTOCOL.md §4.8)
shares the input-audio part (`input_audio_changes`); the rest of it lives in
realtime/wire/transcription_session.py.

Size: over 400 lines because it validates every field of a realtime session update, each against OpenAI's
bounds and wording.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from openai.types.realtime import RealtimeSessionCreateRequest
from openai.types.realtime.realtime_audio_config_input import RealtimeAudioConfigInput
from openai.types.realtime.realtime_audio_formats import AudioPCM, AudioPCMA, AudioPCMU
from openai.types.realtime.realtime_transcription_session_audio_input import (
    RealtimeTranscriptionSessionAudioInput,
)

from realtime.audio import AudioFormat
from realtime.errors import (
    CODE_CANNOT_UPDATE_VOICE,
    CODE_INVALID_TYPE,
    CODE_INVALID_VALUE,
    CODE_STRING_TOO_LONG,
    ProtocolViolation,
    quote,
)
from realtime.wire.session_extensions import SessionExtensions, TranscriptionSettings
from realtime.wire.validation import check_range

MAX_TOOL_DESCRIPTION = 1024  # OpenAI's limit (livekit/agents#1183)
MAX_OUTPUT_TOKENS_LIMIT = 4096
SPEED_RANGE = (0.25, 1.5)
BETA_TEMPERATURE_RANGE = (0.6, 1.2)
GA_TEMPERATURE_RANGE = (0.0, 2.0)
# semantic_vad has no semantic model here: it maps to server VAD with a longer silence window per eagerness.
SEMANTIC_SILENCE_MS = {"low": 1500, "medium": 800, "auto": 800, "high": 500}
LOGPROBS_INCLUDE = "item.input_audio_transcription.logprobs"
UNUSABLE_VARIABLES = frozenset({"input_image", "input_file"})  # prompt variables the model cannot use
DEFAULT_INSTRUCTIONS = "You are a helpful voice assistant. Answer briefly."
SessionType = Literal["realtime", "transcription"]


@dataclass(frozen=True)
class TurnDetection:
    """Server-side turn detection settings (``server_vad``, or ``semantic_vad`` mapped onto it)."""

    kind: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: int | None = None
    eagerness: Literal["low", "medium", "high", "auto"] | None = None

    @property
    def effective_silence_ms(self) -> int:
        """Silence that ends a turn: the configured one, or the eagerness window for semantic VAD."""
        if self.kind == "semantic_vad":
            return SEMANTIC_SILENCE_MS[self.eagerness or "auto"]
        return self.silence_duration_ms


@dataclass(frozen=True)
class Truncation:
    """The session's ``truncation`` read from its wire shape (which `check_truncation` validated).

    Attributes:
        mode: ``auto``, ``retention_ratio`` or ``disabled`` (realtime/session/context_fit.py applies it).
        retention_ratio: fraction of the post-instruction room kept when a cut is needed.
        post_instructions_tokens: ``token_limits.post_instructions``, or None.
    """

    mode: Literal["auto", "retention_ratio", "disabled"] = "auto"
    retention_ratio: float = 1.0
    post_instructions_tokens: int | None = None

    @classmethod
    def from_wire(cls, value: str | dict[str, Any]) -> Truncation:
        """The setting of a validated ``truncation`` value (``"auto"``, ``"disabled"`` or the object)."""
        if value == "disabled":
            return cls("disabled")
        if isinstance(value, dict) and value.get("type") == "retention_ratio":
            post = (value.get("token_limits") or {}).get("post_instructions")
            return cls(
                "retention_ratio", float(value["retention_ratio"]), None if post is None else int(post)
            )
        return cls()


@dataclass(frozen=True)
class SessionConfig:
    """Everything a client can configure on a session (GA names; the beta view is built in server_events.py).

    Attributes documented in docs/PROTOCOL.md §4.1 and its coverage table. ``type`` is fixed when the session
    opens (``transcription`` with ``?intent=transcription``, PROTOCOL.md §4.8); a transcription session uses
    only the input audio fields and ``include``. Accepted-and-ignored fields (``noise_reduction``,
    ``tracing``, ``reasoning``, ``speed``) are kept as plain JSON values and echoed back;
    ``transcription``, ``tools``, ``tool_choice``, ``parallel_tool_calls``, ``prompt`` and ``max_output_tokens``
    are honoured by the session and response layers. ``truncation`` is validated JSON (`check_truncation`),
    echoed back, and read by the session as the context truncation policy (realtime/session/context_fit.py);
    beta has no such field.
    """

    model: str
    voice: str
    type: SessionType = "realtime"
    instructions: str = DEFAULT_INSTRUCTIONS
    output_modalities: tuple[Literal["text", "audio"], ...] = ("audio",)
    input_format: AudioFormat = AudioFormat.PCM16
    output_format: AudioFormat = AudioFormat.PCM16
    speed: float = 1.0
    turn_detection: TurnDetection | None = TurnDetection()
    transcription: TranscriptionSettings | None = None
    noise_reduction: str | None = None
    noise_reduction_strength: float | None = None
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: Any = "auto"
    max_output_tokens: int | Literal["inf"] = "inf"
    temperature: float | None = None
    tracing: Any = None
    truncation: str | dict[str, Any] = "auto"
    include: tuple[str, ...] | None = None
    prompt: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    reasoning: dict[str, Any] | None = None

    @property
    def speaks(self) -> bool:
        """True when responses are spoken (audio + transcript), False for text only."""
        return "audio" in self.output_modalities

    @property
    def context_truncation(self) -> Truncation:
        """``truncation`` as a typed setting (the stored value stays the JSON the client sent, for echoes)."""
        return Truncation.from_wire(self.truncation)


VoiceResolver = Callable[[str], str]
AudioInputUpdate = RealtimeAudioConfigInput | RealtimeTranscriptionSessionAudioInput


def resolve_voice(name: str, accepted: Collection[str], param: str) -> str:
    """Check a requested voice name and return it as the session keeps and echoes it.

    ``accepted`` is every name the server takes (its voices and OpenAI's, which the speech layer maps to
    the default voice: `realtime.speech.voices.VoiceRegistry.speaker`).

    Raises:
        ProtocolViolation: ``invalid_value`` for any other name, listing the accepted ones.
    """
    if name in accepted:
        return name
    supported = ", ".join(f"'{voice}'" for voice in sorted(accepted))
    raise ProtocolViolation(
        CODE_INVALID_VALUE, f"Invalid value: '{quote(name)}'. Supported values are: {supported}.", param
    )


def parse_modalities(values: Sequence[str] | None, param: str) -> tuple[Literal["text", "audio"], ...]:
    """``["audio"]`` (also beta ``["text", "audio"]``) -> spoken; ``["text"]`` -> text only."""
    if not values:
        raise ProtocolViolation(CODE_INVALID_VALUE, "Invalid value: modalities must not be empty.", param)
    return ("audio",) if "audio" in values else ("text",)


def check_max_output_tokens(value: int | str | None, param: str) -> int | Literal["inf"]:
    """Validate ``max_output_tokens``: 1..4096 or ``"inf"`` (None also means inf)."""
    if value is None or value == "inf":
        return "inf"
    if isinstance(value, int) and not isinstance(value, bool):
        check_range(param, value, 1, MAX_OUTPUT_TOKENS_LIMIT)
        return value
    raise ProtocolViolation(
        CODE_INVALID_VALUE,
        f"Invalid value: {value!r}. Expected an integer between 1 and {MAX_OUTPUT_TOKENS_LIMIT}, or 'inf'.",
        param,
    )


def check_temperature(value: Any, *, beta: bool, param: str) -> float:
    """Validate the sampling temperature (a GA extension; clamped to beta's range on beta connections)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolViolation(CODE_INVALID_VALUE, "Invalid value: temperature must be a number.", param)
    low, high = BETA_TEMPERATURE_RANGE if beta else GA_TEMPERATURE_RANGE
    if beta:
        return min(max(float(value), low), high)
    check_range(param, value, low, high)
    return float(value)


def check_tools(tools: list[Any], param: str) -> tuple[dict[str, Any], ...]:
    """Validate tool descriptions (<= 1024 characters) and return them as JSON dicts."""
    out: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        data: dict[str, Any] = (
            tool.model_dump(exclude_unset=True) if hasattr(tool, "model_dump") else dict(tool)
        )
        description = data.get("description")
        if isinstance(description, str) and len(description) > MAX_TOOL_DESCRIPTION:
            raise ProtocolViolation(
                CODE_STRING_TOO_LONG,
                f"Invalid '{param}[{index}].description': string too long. Expected a string with maximum "
                f"length {MAX_TOOL_DESCRIPTION}, but got a string with length {len(description)} instead.",
                f"{param}[{index}].description",
            )
        out.append(data)
    return tuple(out)


def check_truncation(value: Any, param: str) -> str | dict[str, Any]:
    """Validate a GA ``truncation`` the schema already shaped: ``"auto"`` (also for null), ``"disabled"``, or
    ``{"type": "retention_ratio", "retention_ratio": 0..1, "token_limits": {"post_instructions": >= 0}}``.

    Returns:
        The value to store and echo (JSON).

    Raises:
        ProtocolViolation: ``invalid_value`` for a ratio outside 0..1 or a negative token limit.
    """
    if value is None:
        return "auto"
    if isinstance(value, str):
        return value
    ratio = value.get("retention_ratio")
    if not isinstance(ratio, int | float):
        raise ProtocolViolation(
            CODE_INVALID_TYPE, f"Invalid type for '{param}.retention_ratio'.", f"{param}.retention_ratio"
        )
    check_range(f"{param}.retention_ratio", ratio, 0.0, 1.0)
    limits = value.get("token_limits") or {}
    post = limits.get("post_instructions")
    if post is not None:
        check_range(f"{param}.token_limits.post_instructions", post, 0, None)
    return dict(value)


def check_include(values: Sequence[str] | None) -> tuple[str, ...] | None:
    """Validate ``include``: transcription logprobs are refused (no backend here returns logprobs)."""
    if values is None:
        return None
    if LOGPROBS_INCLUDE in values:
        raise ProtocolViolation(
            CODE_INVALID_VALUE,
            f"Invalid value: '{LOGPROBS_INCLUDE}'. This server's transcription model does not return log "
            "probabilities; remove it from 'include'.",
            "session.include",
        )
    return tuple(values)


def render_instructions(
    instructions: str, prompt: dict[str, Any] | None, param: str = "session.prompt"
) -> str:
    """``instructions`` with each ``{{name}}`` replaced by the text of ``prompt.variables[name]``.

    A prompt's ``id`` / ``version`` refer to OpenAI's stored prompts, which this server does not have: they
    are echoed and ignored; its variables fill the session (or response) instructions. An image or file
    variable (OpenAI accepts them) is content the model cannot use: it fills its place with nothing.

    Raises:
        ProtocolViolation: a variable of another kind (the schema admits none today; kept as a guard).
    """
    variables = (prompt or {}).get("variables") or {}
    for name, value in variables.items():
        kind = value.get("type") if isinstance(value, dict) else None
        text = value.get("text") if kind == "input_text" else "" if kind in UNUSABLE_VARIABLES else value
        if not isinstance(text, str):
            raise ProtocolViolation(
                CODE_INVALID_VALUE,
                f"Invalid value for prompt variable '{name}': expected text, an image or a file.",
                f"{param}.variables.{name}",
            )
        instructions = instructions.replace("{{" + name + "}}", text)
    return instructions


def _dump(value: Any) -> Any:
    return value.model_dump(exclude_unset=True) if hasattr(value, "model_dump") else value


def apply_session_update(
    config: SessionConfig,
    update: RealtimeSessionCreateRequest,
    *,
    voice_locked: bool,
    resolve: VoiceResolver,
    beta: bool,
    extensions: SessionExtensions | None = None,
) -> SessionConfig:
    """Return ``config`` with the fields present in ``update`` applied (``null`` clears).

    Args:
        config: the session's current configuration.
        update: the validated, GA-shaped ``session`` of a ``session.update``.
        extensions: the fields newer than ``update``'s model (realtime/wire/session_extensions.py).
        voice_locked: True once the session has produced audio: the voice can no longer change.
        resolve: maps a requested voice name to a registered one or raises `ProtocolViolation`.
        beta: the connection speaks beta (temperature is clamped instead of rejected).

    Raises:
        ProtocolViolation: any invalid field; the caller keeps ``config`` unchanged.
    """
    fields = update.model_fields_set
    changes: dict[str, Any] = {}
    if "instructions" in fields:
        changes["instructions"] = update.instructions or ""
    if "output_modalities" in fields:
        changes["output_modalities"] = parse_modalities(update.output_modalities, "session.output_modalities")
    if "max_output_tokens" in fields:
        changes["max_output_tokens"] = check_max_output_tokens(
            update.max_output_tokens, "session.max_output_tokens"
        )
    if "tools" in fields:
        changes["tools"] = check_tools(list(update.tools or []), "session.tools")
    if "tool_choice" in fields:
        changes["tool_choice"] = _dump(update.tool_choice) if update.tool_choice is not None else "auto"
    for name in ("tracing", "prompt"):
        if name in fields:
            changes[name] = _dump(getattr(update, name))
    if "truncation" in fields:
        changes["truncation"] = check_truncation(_dump(update.truncation), "session.truncation")
    if "include" in fields:
        changes["include"] = check_include(update.include)
    if "prompt" in fields and update.prompt is not None:
        render_instructions("", changes["prompt"])  # refuses unusable variables now, not at response time
    ext = extensions or SessionExtensions()
    for name in ("transcription", "parallel_tool_calls", "reasoning", "noise_reduction_strength"):
        if name in ext.present:
            changes[name] = getattr(ext, name)
    extra = update.model_extra or {}
    if "temperature" in extra:
        value = extra["temperature"]
        changes["temperature"] = (
            None if value is None else check_temperature(value, beta=beta, param="session.temperature")
        )
    if "audio" in fields and update.audio is not None:
        changes.update(_audio_changes(config, update, voice_locked=voice_locked, resolve=resolve))
    return replace(config, **changes)


def _audio_changes(
    config: SessionConfig, update: RealtimeSessionCreateRequest, *, voice_locked: bool, resolve: VoiceResolver
) -> dict[str, Any]:
    assert update.audio is not None
    changes: dict[str, Any] = {}
    audio_in, audio_out = update.audio.input, update.audio.output
    if audio_in is not None:
        changes.update(input_audio_changes(audio_in))
    if audio_out is not None:
        present = audio_out.model_fields_set
        if "format" in present:
            changes["output_format"] = _format(audio_out.format)
        if "speed" in present:
            speed = 1.0 if audio_out.speed is None else audio_out.speed
            check_range("session.audio.output.speed", speed, *SPEED_RANGE)
            changes["speed"] = speed
        if "voice" in present and audio_out.voice is not None:
            voice = resolve(str(audio_out.voice))
            if voice != config.voice and voice_locked:
                raise ProtocolViolation(
                    CODE_CANNOT_UPDATE_VOICE,
                    "Cannot update a conversation's voice if assistant audio is present.",
                    "session.audio.output.voice",
                )
            changes["voice"] = voice
    return changes


def input_audio_changes(audio_in: AudioInputUpdate) -> dict[str, Any]:
    """The `SessionConfig` changes of the ``audio.input`` fields present in an update (either session type):
    ``format``, ``turn_detection``, ``noise_reduction`` (``transcription`` is an extension, read apart)."""
    changes: dict[str, Any] = {}
    present = audio_in.model_fields_set
    if "format" in present:
        changes["input_format"] = _format(audio_in.format)
    if "turn_detection" in present:
        changes["turn_detection"] = _turn_detection(audio_in.turn_detection)
    if "noise_reduction" in present:
        nr = audio_in.noise_reduction
        changes["noise_reduction"] = nr.type if nr is not None else None
    return changes


def _format(value: AudioPCM | AudioPCMU | AudioPCMA | None) -> AudioFormat:
    return AudioFormat.PCM16 if value is None else AudioFormat.from_ga_type(value.type)


def _turn_detection(value: Any) -> TurnDetection | None:
    if value is None:
        return None
    base = TurnDetection()
    if value.type == "semantic_vad":
        return TurnDetection(
            kind="semantic_vad",
            create_response=_or(value.create_response, base.create_response),
            interrupt_response=_or(value.interrupt_response, base.interrupt_response),
            eagerness=value.eagerness or "auto",
        )
    threshold = _or(value.threshold, base.threshold)
    check_range("session.audio.input.turn_detection.threshold", threshold, 0.0, 1.0)
    for name in ("prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms"):
        number = getattr(value, name)
        if number is not None:
            check_range(f"session.audio.input.turn_detection.{name}", number, 0, None)
    return TurnDetection(
        kind="server_vad",
        threshold=threshold,
        prefix_padding_ms=_or(value.prefix_padding_ms, base.prefix_padding_ms),
        silence_duration_ms=_or(value.silence_duration_ms, base.silence_duration_ms),
        create_response=_or(value.create_response, base.create_response),
        interrupt_response=_or(value.interrupt_response, base.interrupt_response),
        idle_timeout_ms=value.idle_timeout_ms,
    )


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value
