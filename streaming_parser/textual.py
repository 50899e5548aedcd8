"""Parser for backends that only return decoded text, with audio tokens spelled as ``<audio_123>``.

Some serving stacks detokenise everything, so the speech codes arrive as markers inside the text. This
parser finds the markers of the Step-Audio-2 control tokens and audio codes, even when a marker is split
across chunks (``<aud`` | ``io_12`` | ``3>``), and drives the same state machine as `AudioTokenParser`, so
both forms give the same control and audio events; text comes out as `TextPiece` instead of `TextTokens`.

A ``<`` that cannot start a marker, or a marker that is malformed (``<audio_x>``, ``<audio_007>``,
``<audio_9999>``), is plain text. Only the unfinished tail of a chunk that could still become a marker is
held back, at most `MAX_MARKER_LENGTH` characters; `flush` releases it as text.
"""

from __future__ import annotations

import re
from collections import Counter

from streaming_parser.events import AudioCodes, Event, TextPiece
from streaming_parser.parser import AFTER_END_OF_TURN, AudioTokenParser, ParserState
from streaming_parser.vocab import SPECIAL_TOKENS, VocabLayout

_AUDIO_PREFIX = "<audio_"
_MAX_CODE_DIGITS = 4  # the largest marker is <audio_6561>
_NAMED_MARKERS = tuple(SPECIAL_TOKENS.values())
MAX_MARKER_LENGTH = max(len(m) for m in (*_NAMED_MARKERS, f"{_AUDIO_PREFIX}{'9' * _MAX_CODE_DIGITS}>"))

_CODE = f"0|[1-9][0-9]{{0,{_MAX_CODE_DIGITS - 1}}}"  # no leading zeros, at most four digits
_MARKER = re.compile(f"<audio_(?P<code>{_CODE})>|" + "|".join(re.escape(m) for m in _NAMED_MARKERS))
_AUDIO_PARTIAL = re.compile(f"<audio_(?:{_CODE})?")


def _could_become_marker(tail: str) -> bool:
    """Whether ``tail`` (starting with ``<``) is an unfinished prefix of some valid marker."""
    if any(marker.startswith(tail) and marker != tail for marker in _NAMED_MARKERS):
        return True
    return _AUDIO_PREFIX.startswith(tail) or _AUDIO_PARTIAL.fullmatch(tail) is not None


class TextualAudioParser:
    """Incremental parser of one generation's decoded text into `Event`s.

    Args:
        layout: the vocabulary layout (maps marker names to the ids the state machine uses).
        starts_in_speech: as for `AudioTokenParser`.

    Attributes:
        anomalies: as for `AudioTokenParser`, plus ``after_end_of_turn`` for text after ``<|EOT|>``.
    """

    def __init__(self, layout: VocabLayout | None = None, *, starts_in_speech: bool) -> None:
        self._layout = layout if layout is not None else VocabLayout.default()
        self._ids = AudioTokenParser(self._layout, starts_in_speech=starts_in_speech)
        self._held = ""
        self._named_ids = {token: getattr(self._layout, name) for name, token in SPECIAL_TOKENS.items()}

    @property
    def anomalies(self) -> Counter[str]:
        """Counts of unexpected, dropped input (shared with the inner id parser)."""
        return self._ids.anomalies

    @property
    def state(self) -> ParserState:
        """The current state of the underlying state machine."""
        return self._ids.state

    def feed(self, text: str) -> list[Event]:
        """Parse the next piece of decoded text (new text only, any split, empty allowed).

        Returns:
            Events in stream order; within this call adjacent text and adjacent audio are merged.

        Raises:
            TypeError: ``text`` is not a str.
            ParserClosed: called after `flush`.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        events = self._ids.feed(())  # SegmentStart on the first call of a spoken reply; ParserClosed check
        buffer = self._held + text
        self._held = ""
        position = 0
        while position < len(buffer):
            start = buffer.find("<", position)
            if start < 0:
                self._text(buffer[position:], events)
                break
            self._text(buffer[position:start], events)
            match = _MARKER.match(buffer, start)
            if match is not None:
                self._marker(match, events)
                position = match.end()
            elif _could_become_marker(buffer[start:]):
                self._held = buffer[start:]
                break
            else:
                self._text("<", events)
                position = start + 1
        return events

    def flush(self) -> list[Event]:
        """The stream ended: release held text, close the segment and the turn (as `AudioTokenParser.flush`)."""
        events: list[Event] = []
        if self._held:
            events.extend(self._ids.feed(()))
            self._text(self._held, events)
            self._held = ""
        events.extend(self._ids.flush())
        return events

    def _text(self, text: str, events: list[Event]) -> None:
        if not text:
            return
        state = self._ids.state
        if state is ParserState.ENDED:
            self._ids.anomalies[AFTER_END_OF_TURN] += 1
            return
        spoken = state is ParserState.IN_TTS
        last = events[-1] if events else None
        if isinstance(last, TextPiece) and last.spoken == spoken:
            events[-1] = TextPiece(last.text + text, spoken)
        else:
            events.append(TextPiece(text, spoken))

    def _marker(self, match: re.Match[str], events: list[Event]) -> None:
        code = match.group("code")
        token_id = (
            self._layout.audio_first + int(code) if code is not None else self._named_ids[match.group(0)]
        )
        if code is not None and token_id > self._layout.audio_pad:
            self._text(match.group(0), events)  # <audio_6562> .. <audio_9999>: not a token
            return
        for event in self._ids.feed((token_id,)):
            last = events[-1] if events else None
            if isinstance(event, AudioCodes) and isinstance(last, AudioCodes):
                events[-1] = AudioCodes(last.codes + event.codes)
            else:
                events.append(event)
