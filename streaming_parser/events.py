"""Events a parser returns: immutable values, compared by content.

Event boundaries follow the chunks fed to a parser: within one ``feed`` call consecutive ids of the same
kind are merged into one event, but two calls never merge. `normalize_events` removes that difference, so
for any chunking of the same stream ``normalize_events(events)`` is identical (the chunking invariant the
tests check).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias


@dataclass(frozen=True, slots=True)
class TextTokens:
    """Text token ids in generation order (detokenise them together: a character may span ids).

    Attributes:
        ids: text token ids, never empty.
        spoken: True inside the speech segment (the transcript of the audio), False for text outside it
            (a text-only reply, or text after ``<tts_end>`` such as a tool call).
    """

    ids: tuple[int, ...]
    spoken: bool


@dataclass(frozen=True, slots=True)
class TextPiece:
    """Decoded text from a text-only backend (`TextualAudioParser`); the string form of `TextTokens`.

    Attributes:
        text: the text, never empty.
        spoken: as for `TextTokens`.
    """

    text: str
    spoken: bool


@dataclass(frozen=True, slots=True)
class AudioCodes:
    """Speech codes for Token2Wav, in order.

    Attributes:
        codes: 0-based codes in [0, 6561), never empty; pads already dropped.
    """

    codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SegmentStart:
    """The spoken segment began (``<tts_start>``, or the prompt ended with it)."""


@dataclass(frozen=True, slots=True)
class SegmentEnd:
    """The spoken segment ended (``<tts_end>``, ``<|EOT|>`` or end of stream): decode the last audio."""


@dataclass(frozen=True, slots=True)
class EndOfTurn:
    """The turn is over (``<|EOT|>``, or the stream ended); nothing follows."""


Event: TypeAlias = TextTokens | TextPiece | AudioCodes | SegmentStart | SegmentEnd | EndOfTurn

# Shared instances of the field-less events (they are immutable and compare equal anyway).
SEGMENT_START = SegmentStart()
SEGMENT_END = SegmentEnd()
END_OF_TURN = EndOfTurn()


def normalize_events(events: Iterable[Event]) -> list[Event]:
    """Merge adjacent events of the same kind so that the result does not depend on chunking.

    Adjacent `AudioCodes` are concatenated; adjacent `TextTokens` (or `TextPiece`) with the same ``spoken``
    flag are concatenated. Control events are kept as they are.
    """
    out: list[Event] = []
    for event in events:
        last = out[-1] if out else None
        if isinstance(event, AudioCodes) and isinstance(last, AudioCodes):
            out[-1] = AudioCodes(last.codes + event.codes)
        elif isinstance(event, TextTokens) and isinstance(last, TextTokens) and last.spoken == event.spoken:
            out[-1] = TextTokens(last.ids + event.ids, event.spoken)
        elif isinstance(event, TextPiece) and isinstance(last, TextPiece) and last.spoken == event.spoken:
            out[-1] = TextPiece(last.text + event.text, event.spoken)
        else:
            out.append(event)
    return out
