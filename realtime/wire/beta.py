"""Beta -> GA shape normalisation of client payloads (docs/PROTOCOL.md §2.3).

Input is read tolerantly in both dialects: beta's flat session fields, response overrides and ``text`` /
``audio`` assistant content are moved into the GA layout before validation against the GA models, so the
rest of the server sees one shape. When a payload carries both spellings, the GA field wins.
"""

from __future__ import annotations

from typing import Any

from realtime.errors import CODE_INVALID_VALUE, ProtocolViolation

_BETA_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
_BETA_ASSISTANT_CONTENT = {"text": "output_text", "audio": "output_audio"}


def beta_session_to_ga(session: dict[str, Any]) -> dict[str, Any]:
    """Move beta's flat session fields into the GA layout (GA fields win when both are present)."""
    flat = dict(session)
    audio: dict[str, Any] = dict(flat.pop("audio", None) or {})
    audio_in: dict[str, Any] = dict(audio.get("input") or {})
    audio_out: dict[str, Any] = dict(audio.get("output") or {})
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
    if value not in _BETA_FORMATS:
        raise ProtocolViolation(
            CODE_INVALID_VALUE,
            f"Invalid value: '{value}'. Supported values are: 'pcm16', 'g711_ulaw', and 'g711_alaw'.",
            param,
        )
    return {"type": _BETA_FORMATS[value]}


def beta_modalities_to_ga(value: Any) -> Any:
    # beta ["text", "audio"] = spoken answer with transcript = GA ["audio"]
    if isinstance(value, list) and "audio" in value:
        return ["audio"]
    return value


def beta_response_to_ga(response: dict[str, Any]) -> dict[str, Any]:
    """Move beta's ``voice``, ``output_audio_format``, ``modalities`` and token cap into the GA layout."""
    params = dict(response)
    audio_out: dict[str, Any] = dict((params.get("audio") or {}).get("output") or {})
    if "voice" in params:
        audio_out.setdefault("voice", params.pop("voice"))
    if "output_audio_format" in params:
        audio_out.setdefault(
            "format", beta_format_to_ga(params.pop("output_audio_format"), "response.output_audio_format")
        )
    if audio_out:
        params["audio"] = {"output": audio_out}
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
