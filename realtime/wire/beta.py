"""Beta -> GA shape normalisation of client payloads (docs/PROTOCOL.md §2.3).

Input is read tolerantly in both dialects: beta's flat session fields, response overrides and ``text`` /
``audio`` assistant content are moved into the GA layout before validation against the GA models, so the
rest of the server sees one shape. When a payload carries both spellings, the GA field wins. Every value is
type-checked before it is reshaped: a wrong type is an ``invalid_type`` error naming the field.
"""

from __future__ import annotations

from typing import Any

from realtime.errors import CODE_INVALID_TYPE, CODE_INVALID_VALUE, ProtocolViolation, quote

_BETA_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
_BETA_ASSISTANT_CONTENT = {"text": "output_text", "audio": "output_audio"}


def _object(value: Any, param: str) -> dict[str, Any]:
    """``value`` as a (copied) JSON object; None is an empty one.

    Raises:
        ProtocolViolation: ``invalid_type`` when it is anything else.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolViolation(CODE_INVALID_TYPE, f"Invalid type for '{param}': expected an object.", param)
    return dict(value)


def beta_session_to_ga(session: dict[str, Any]) -> dict[str, Any]:
    """Move beta's flat session fields into the GA layout (GA fields win when both are present).

    Raises:
        ProtocolViolation: ``audio``, ``audio.input`` or ``audio.output`` is not an object, or a beta
            format name is unknown.
    """
    flat = dict(session)
    audio = _object(flat.pop("audio", None), "session.audio")
    audio_in = _object(audio.get("input"), "session.audio.input")
    audio_out = _object(audio.get("output"), "session.audio.output")
    moves = {
        "input_audio_transcription": (audio_in, "transcription"),
        "input_audio_noise_reduction": (audio_in, "noise_reduction"),
        "turn_detection": (audio_in, "turn_detection"),
        "voice": (audio_out, "voice"),
        "speed": (audio_out, "speed"),
    }
    for beta_name, (target, ga_name) in moves.items():
        if beta_name in flat:
            value = flat.pop(beta_name)
            if beta_name == "turn_detection" and isinstance(value, dict) and "type" not in value:
                value = {**value, "type": "server_vad"}
            target.setdefault(ga_name, value)
    for beta_name, target in (("input_audio_format", audio_in), ("output_audio_format", audio_out)):
        if beta_name in flat:
            target.setdefault("format", beta_format_to_ga(flat.pop(beta_name), f"session.{beta_name}"))
    if "modalities" in flat:
        flat.setdefault("output_modalities", beta_modalities_to_ga(flat.pop("modalities")))
    if "max_response_output_tokens" in flat:
        flat.setdefault("max_output_tokens", flat.pop("max_response_output_tokens"))
    if audio_in:
        audio["input"] = audio_in
    if audio_out:
        audio["output"] = audio_out
    if audio or "audio" in session:
        flat["audio"] = audio
    return flat


def beta_format_to_ga(value: Any, param: str) -> dict[str, Any]:
    """A beta format name (``pcm16``, ``g711_ulaw``, ``g711_alaw``) as the GA format object."""
    if not isinstance(value, str) or value not in _BETA_FORMATS:
        raise ProtocolViolation(
            CODE_INVALID_VALUE,
            f"Invalid value: '{quote(value)}'. Supported values are: 'pcm16', 'g711_ulaw', and 'g711_alaw'.",
            param,
        )
    return {"type": _BETA_FORMATS[value]}


def beta_modalities_to_ga(value: Any) -> Any:
    # beta ["text", "audio"] = spoken answer with transcript = GA ["audio"]
    if isinstance(value, list) and "audio" in value:
        return ["audio"]
    return value


def beta_response_to_ga(response: dict[str, Any]) -> dict[str, Any]:
    """Move beta's ``voice``, ``output_audio_format``, ``modalities`` and token cap into the GA layout.

    Raises:
        ProtocolViolation: ``audio`` or ``audio.output`` is not an object, or a beta format name is unknown.
    """
    params = dict(response)
    audio = _object(params.get("audio"), "response.audio")
    audio_out = _object(audio.get("output"), "response.audio.output")
    if "voice" in params:
        audio_out.setdefault("voice", params.pop("voice"))
    if "output_audio_format" in params:
        audio_out.setdefault(
            "format", beta_format_to_ga(params.pop("output_audio_format"), "response.output_audio_format")
        )
    if audio_out:
        params["audio"] = {**audio, "output": audio_out}
    if "modalities" in params:
        params.setdefault("output_modalities", beta_modalities_to_ga(params.pop("modalities")))
    if "max_response_output_tokens" in params:
        params.setdefault("max_output_tokens", params.pop("max_response_output_tokens"))
    return params


def beta_assistant_content_to_ga(item: dict[str, Any]) -> dict[str, Any]:
    """Rename beta assistant content types ``text`` / ``audio`` to ``output_text`` / ``output_audio``."""
    content = item.get("content")
    if not isinstance(content, list):
        return item
    renamed = [
        {**part, "type": _BETA_ASSISTANT_CONTENT.get(str(part.get("type")), part.get("type"))}
        if isinstance(part, dict)
        else part
        for part in content
    ]
    return {**item, "content": renamed}
