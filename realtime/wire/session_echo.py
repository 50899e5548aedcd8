"""The session object as ``session.created`` / ``session.updated`` show it, in either dialect.

Pure rendering of a `SessionConfig` into the JSON shape of the dialect (GA nested ``audio``; beta flat
fields), for both session types (a transcription session has its own object, docs/PROTOCOL.md §4.8). Fields of
the newest SDK that the pinned openai 2.8 models keep as extras (``parallel_tool_calls``,
``reasoning``, noise reduction ``strength``) are added here; realtime/wire/server_events.py validates the result.
"""

from __future__ import annotations

from typing import Any

from realtime.audio import PCM_RATE, AudioFormat
from realtime.wire.session_config import SessionConfig, TurnDetection

BETA_DEFAULT_TEMPERATURE = 0.8


def ga_format(fmt: AudioFormat) -> dict[str, Any]:
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


def _noise(config: SessionConfig) -> dict[str, Any] | None:
    if not config.noise_reduction:
        return None
    noise: dict[str, Any] = {"type": config.noise_reduction}
    if config.noise_reduction_strength is not None:
        noise["strength"] = config.noise_reduction_strength  # openai 3.x field, an extra for 2.8
    return noise


def _extensions(config: SessionConfig, data: dict[str, Any]) -> dict[str, Any]:
    # openai 3.x session fields, kept as extras by the 2.8 models
    if config.parallel_tool_calls is not None:
        data["parallel_tool_calls"] = config.parallel_tool_calls
    if config.reasoning is not None:
        data["reasoning"] = config.reasoning
    return data


def ga_session(config: SessionConfig, session_id: str) -> dict[str, Any]:
    noise = _noise(config)
    data: dict[str, Any] = {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": config.model,
        "output_modalities": list(config.output_modalities),
        "instructions": config.instructions,
        "audio": {
            "input": {
                "format": ga_format(config.input_format),
                "noise_reduction": noise,
                "transcription": config.transcription.to_json() if config.transcription else None,
                "turn_detection": _ga_turn_detection(config.turn_detection),
            },
            "output": {
                "format": ga_format(config.output_format),
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
    return _extensions(config, data)


def _transcription_turn_detection(td: TurnDetection | None) -> dict[str, Any] | None:
    # a transcription session never responds: its turn detection has no response settings (OpenAI's echo)
    if td is None:
        return None
    if td.kind == "semantic_vad":
        return {"type": "semantic_vad", "eagerness": td.eagerness or "auto"}
    return {
        "type": "server_vad",
        "threshold": td.threshold,
        "prefix_padding_ms": td.prefix_padding_ms,
        "silence_duration_ms": td.silence_duration_ms,
    }


def ga_transcription_session(config: SessionConfig, session_id: str) -> dict[str, Any]:
    """A GA transcription session object (``session.type: "transcription"``, docs/PROTOCOL.md §4.8)."""
    return {
        "type": "transcription",
        "object": "realtime.transcription_session",
        "id": session_id,
        "audio": {
            "input": {
                "format": ga_format(config.input_format),
                "transcription": config.transcription.to_json() if config.transcription else None,
                "noise_reduction": _noise(config),
                "turn_detection": _transcription_turn_detection(config.turn_detection),
            }
        },
        "include": None if config.include is None else list(config.include),
    }


def beta_transcription_session(config: SessionConfig, session_id: str) -> dict[str, Any]:
    """A beta transcription session object (``transcription_session.created`` / ``.updated``)."""
    return {
        "id": session_id,
        "object": "realtime.transcription_session",
        "input_audio_format": config.input_format.value,
        "input_audio_transcription": config.transcription.to_json() if config.transcription else None,
        "turn_detection": _transcription_turn_detection(config.turn_detection),
        "input_audio_noise_reduction": _noise(config),
        "include": None if config.include is None else list(config.include),
    }


def beta_session(config: SessionConfig, session_id: str) -> dict[str, Any]:
    # beta's `model` is a closed list of OpenAI model names: our served model id cannot go there.
    td = _ga_turn_detection(config.turn_detection)
    if td is not None:
        td.pop("idle_timeout_ms", None)
    tool_choice = config.tool_choice if isinstance(config.tool_choice, str) else "required"
    data: dict[str, Any] = {
        "id": session_id,
        "object": "realtime.session",
        "modalities": ["text", "audio"] if config.speaks else ["text"],
        "instructions": config.instructions,
        "voice": config.voice,
        "speed": config.speed,
        "input_audio_format": config.input_format.value,
        "output_audio_format": config.output_format.value,
        "input_audio_transcription": config.transcription.to_json() if config.transcription else None,
        "input_audio_noise_reduction": _noise(config),
        "turn_detection": td,
        "tools": list(config.tools),
        "tool_choice": tool_choice,
        "temperature": BETA_DEFAULT_TEMPERATURE if config.temperature is None else config.temperature,
        "max_response_output_tokens": config.max_output_tokens,
        "tracing": config.tracing,
    }
    return _extensions(config, data)
