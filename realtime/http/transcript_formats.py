"""The timed answers of ``/v1/audio/transcriptions`` and ``/v1/audio/translations``: ``verbose_json``,
``srt`` and ``vtt`` built from timed segments, in the shapes OpenAI's ``whisper-1`` returns.

Segment times come from the server's segmentation of the audio (the server VAD, `speech_segments`), each
segment's text from transcribing (or translating) that stretch alone, so a segment's text is what was said
between its ``start`` and ``end``. Whisper's per-segment statistics that this model cannot give honestly
(``avg_logprob``, ``no_speech_prob``) are ``null``; ``compression_ratio`` is measured on the text, ``tokens`` are the
model's text ids, ``temperature`` is the 0 the model decoded with (docs/PROTOCOL.md §4.7).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, Literal

MS_PER_SECOND = 1000
CENTISECONDS = 100  # Whisper's ``seek`` counts 10 ms frames
# The language names Whisper reports, for the ISO-639-1 hints clients send (and the scripts detected below).
LANGUAGE_NAMES = {
    "en": "english",
    "zh": "chinese",
    "yue": "cantonese",
    "ja": "japanese",
    "ko": "korean",
    "ar": "arabic",
    "fr": "french",
    "de": "german",
    "es": "spanish",
    "it": "italian",
    "pt": "portuguese",
    "ru": "russian",
    "vi": "vietnamese",
    "th": "thai",
    "id": "indonesian",
    "hi": "hindi",
}


@dataclass(frozen=True)
class TimedText:
    """One segment of a timed answer.

    Attributes:
        start_ms: where the segment starts in the audio.
        end_ms: where it ends.
        text: its transcript (or translation), stripped.
        tokens: the model's text ids of ``text``.
    """

    start_ms: int
    end_ms: int
    text: str
    tokens: tuple[int, ...] = ()


def language_name(hint: str | None, text: str) -> str:
    """The ``language`` of a transcription: the client's hint as Whisper names it, else the script of the text.

    Without a hint the model does not say which language it heard; the writing system of its transcript does:
    Han -> chinese, kana -> japanese, Hangul -> korean, Arabic -> arabic, anything else (Latin) -> english.
    A Latin-script language other than English needs the hint (docs/PROTOCOL.md §4.7).
    """
    if hint:
        return LANGUAGE_NAMES.get(hint.lower(), hint.lower())
    if any("\u3040" <= ch <= "\u30ff" for ch in text):
        return "japanese"
    if any("\uac00" <= ch <= "\ud7af" for ch in text):
        return "korean"
    if any("\u4e00" <= ch <= "\u9fff" for ch in text):
        return "chinese"
    if any("\u0600" <= ch <= "\u06ff" for ch in text):
        return "arabic"
    return "english"


def joined_text(segments: list[TimedText]) -> str:
    """The whole answer: the segments' texts joined (with a space between words of spaced scripts)."""
    text = ""
    for segment in segments:
        if text and segment.text and not _unspaced(text[-1]) and not _unspaced(segment.text[0]):
            text += " "
        text += segment.text
    return text


def verbose_json(
    task: Literal["transcribe", "translate"], language: str, duration_s: float, segments: list[TimedText]
) -> dict[str, Any]:
    """``verbose_json``: ``task``, ``language``, ``duration``, ``text``, ``segments`` (and duration usage)."""
    return {
        "task": task,
        "language": language,
        "duration": round(duration_s, 3),
        "text": joined_text(segments),
        "segments": [_segment(index, segment) for index, segment in enumerate(segments)],
        "usage": {"type": "duration", "seconds": math.ceil(duration_s)},
    }


def srt(segments: list[TimedText]) -> str:
    """SubRip subtitles: numbered cues ``HH:MM:SS,mmm --> HH:MM:SS,mmm`` (empty segments left out)."""
    cues = [segment for segment in segments if segment.text]
    return "".join(
        f"{number}\n{_clock(cue.start_ms, ',')} --> {_clock(cue.end_ms, ',')}\n{cue.text}\n\n"
        for number, cue in enumerate(cues, start=1)
    )


def vtt(segments: list[TimedText]) -> str:
    """WebVTT subtitles: the ``WEBVTT`` header, then cues ``HH:MM:SS.mmm --> HH:MM:SS.mmm``."""
    cues = "".join(
        f"{_clock(cue.start_ms, '.')} --> {_clock(cue.end_ms, '.')}\n{cue.text}\n\n"
        for cue in segments
        if cue.text
    )
    return f"WEBVTT\n\n{cues}"


def _segment(index: int, segment: TimedText) -> dict[str, Any]:
    return {
        "id": index,
        "seek": segment.start_ms * CENTISECONDS // MS_PER_SECOND,
        "start": segment.start_ms / MS_PER_SECOND,
        "end": segment.end_ms / MS_PER_SECOND,
        "text": segment.text,
        "tokens": list(segment.tokens),
        "temperature": 0.0,
        "avg_logprob": None,  # the backend returns no log probabilities
        "compression_ratio": _compression_ratio(segment.text),
        "no_speech_prob": None,  # the VAD decided there is speech; it gives no probability per segment
    }


def _compression_ratio(text: str) -> float:
    """Whisper's repetition gauge: UTF-8 length over its zlib-compressed length (0 for no text)."""
    data = text.encode("utf-8")
    return round(len(data) / len(zlib.compress(data)), 3) if data else 0.0


def _clock(ms: int, decimal: str) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, MS_PER_SECOND)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{decimal}{millis:03d}"


def _unspaced(ch: str) -> bool:
    """Characters of scripts written without spaces between words (CJK and kana)."""
    return "\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff" or "\u3000" <= ch <= "\u303f"
