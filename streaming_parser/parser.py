"""The incremental, sans-I/O parser of Step-Audio-2 output ids (state table of docs/SGLANG.md §2.3).

``AudioTokenParser`` turns the ids an LLM streams into `events`: transcript and content text ids, speech
codes for Token2Wav, the start and end of the spoken segment and the end of the turn. It keeps no clock, does
no I/O and never blocks; one instance serves one generation and is not thread-safe (one owner at a time).

States and transitions:

    outside  --<tts_start>-->  in_tts  --<tts_end>-->  after  --<tts_start>-->  in_tts ...
    any state --<|EOT|>--> ended (in_tts emits SegmentEnd first); flush() ends the stream the same way.

Policy on ids that do not fit the state (one place, here): the documented pads (``<tts_pad>`` and
``<audio_6561>``) inside the segment are dropped silently; everything else that is dropped is counted in
``anomalies``: audio or pads outside the segment, stray control tokens (a nested ``<tts_start>``,
``<|BOT|>``, ``<audio_start>``, ...), unused ids above the audio pad and ids after the end of the turn.
Invalid input (not an int, negative, beyond the vocabulary) raises a `ParserError` and leaves the parser
exactly as it was.

Speed matters (a server runs one parser per response): the hot loop classifies by two range comparisons,
keeps runs in plain lists and builds each event once per run, so a TA4 stream parses at millions of ids per
second (``realtime bench parser``).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Sequence
from typing import Any

from streaming_parser.errors import (
    InvalidTokenType,
    NegativeTokenId,
    ParserClosed,
    ParserError,
    TokenIdOutOfRange,
)
from streaming_parser.events import (
    END_OF_TURN,
    SEGMENT_END,
    SEGMENT_START,
    AudioCodes,
    Event,
    TextTokens,
)
from streaming_parser.vocab import VocabLayout

_INT_ONLY = frozenset({int})

# Anomaly counter keys.
AUDIO_OUTSIDE_SEGMENT = "audio_outside_segment"
UNUSED_ID = "unused_id"
AFTER_END_OF_TURN = "after_end_of_turn"
STRAY_PREFIX = "stray:"  # + the token string, e.g. "stray:<tts_end>"

# Events are frozen slotted dataclasses; their generated __init__ goes through object.__setattr__, which is
# the dominant cost when a TA4 stream alternates one text id with four codes. The hot loop builds them
# through the slot descriptors instead; the result is identical to calling the constructor.
_new_object = object.__new__
_set_text_ids: Any = TextTokens.__dict__["ids"].__set__
_set_text_spoken: Any = TextTokens.__dict__["spoken"].__set__
_set_audio_codes: Any = AudioCodes.__dict__["codes"].__set__


class ParserState(enum.Enum):
    """Where the parser is in the reply."""

    OUTSIDE = "outside"  # before any <tts_start>: text reply or text before the speech
    IN_TTS = "in_tts"  # inside the spoken TA4 segment
    AFTER = "after"  # after <tts_end>: content text such as a tool call
    ENDED = "ended"  # after <|EOT|> or flush(): nothing more is expected


def check_types(ids: Sequence[int]) -> None:
    """Raise `InvalidTokenType` for the first element of ``ids`` that is not an int (bools are not ints)."""
    if set(map(type, ids)) <= _INT_ONLY:
        return
    for index, value in enumerate(ids):
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidTokenType(index, value)


def first_invalid(ids: Sequence[int], vocab_size: int) -> ParserError:
    """The error for the first id of ``ids`` outside [0, vocab_size) (the caller knows there is one)."""
    for index, value in enumerate(ids):
        if value < 0:
            return NegativeTokenId(index, value)
        if value >= vocab_size:
            return TokenIdOutOfRange(index, value, vocab_size)
    raise AssertionError("first_invalid() called on valid ids")


class AudioTokenParser:
    """Incremental parser of one generation's output ids into `Event`s.

    Args:
        layout: the vocabulary layout of the model that produced the ids.
        starts_in_speech: True when the prompt ended with ``<tts_start>`` (a spoken reply): the parser starts
            inside the segment and its first output is `SegmentStart`.

    Attributes:
        anomalies: counts of dropped ids that the state table calls unexpected (module docstring).
    """

    def __init__(self, layout: VocabLayout, *, starts_in_speech: bool) -> None:
        self._layout = layout
        self._state = ParserState.IN_TTS if starts_in_speech else ParserState.OUTSIDE
        self._pending_start = starts_in_speech
        self._closed = False
        # Everything the hot loop reads, unpacked in one step per call (small chunks are common).
        self._constants = (
            layout.audio_first,
            layout.audio_pad,
            layout.text_limit,
            layout.vocab_size,
            layout.pure_text_limit,
            layout.tts_pad,
            layout.tts_start,
            layout.tts_end,
            layout.eot,
            layout.special_ids,
        )
        self.anomalies: Counter[str] = Counter()

    @property
    def layout(self) -> VocabLayout:
        """The layout ids are classified with."""
        return self._layout

    @property
    def state(self) -> ParserState:
        """The current state (after the last ``feed``)."""
        return self._state

    def feed(self, ids: Sequence[int]) -> list[Event]:
        """Parse the next ids of the stream (new ids only, in order, any chunk size, empty allowed).

        Returns:
            The events these ids complete, in stream order. Consecutive ids of one kind in this call form one
            event; events never span two calls (see `normalize_events`).

        Raises:
            InvalidTokenType, NegativeTokenId, TokenIdOutOfRange: an id is invalid; the parser is unchanged.
            ParserClosed: called after `flush`.
            TypeError: ``ids`` is not a sequence (an iterator would be consumed by the type check).
        """
        if self._closed:
            raise ParserClosed("feed() after flush(): a parser serves one generation")
        if not isinstance(ids, (list, tuple, range)) and not isinstance(ids, Sequence):
            raise TypeError(f"ids must be a sequence of int, got {type(ids).__name__}")
        check_types(ids)
        events: list[Event] = [SEGMENT_START] if self._pending_start else []
        if ids:
            stray: list[str] = []
            self._state = self._parse(ids, self._state, events, stray)
            if stray:
                self.anomalies.update(stray)
        self._pending_start = False
        return events

    def flush(self) -> list[Event]:
        """The stream ended (stop, length limit or abort): close the segment and the turn.

        Returns:
            `SegmentStart` if nothing was fed to a spoken reply, then `SegmentEnd` if the segment is open, then
            `EndOfTurn` unless ``<|EOT|>`` already ended the turn. Empty on a second call.
        """
        if self._closed:
            return []
        self._closed = True
        events: list[Event] = []
        if self._pending_start:
            events.append(SEGMENT_START)
            self._pending_start = False
        if self._state is ParserState.IN_TTS:
            events.append(SEGMENT_END)
        if self._state is not ParserState.ENDED:
            events.append(END_OF_TURN)
        self._state = ParserState.ENDED
        return events

    # ------------------------------------------------------------------------------------------ hot loop

    def _parse(
        self, ids: Sequence[int], state: ParserState, events: list[Event], stray: list[str]
    ) -> ParserState:
        """Consume ``ids`` (all ints) from ``state``; append events and anomaly keys; return the new state.

        Touches nothing but its arguments, so an invalid id found half-way (raised from here) leaves the
        parser unchanged. Range checks sit in the rare branches: a negative id can only take the text branch
        and an id beyond the vocabulary only the above-the-pad branch.
        """
        (
            audio_first,
            audio_pad,
            text_limit,
            vocab_size,
            pure_text,
            tts_pad,
            tts_start,
            tts_end,
            eot,
            specials,
        ) = self._constants
        append_event = events.append
        new, set_ids, set_spoken, set_codes = _new_object, _set_text_ids, _set_text_spoken, _set_audio_codes
        in_tts, after, ended = ParserState.IN_TTS, ParserState.AFTER, ParserState.ENDED
        run: list[int] = []  # pending text run outside the segment
        add = run.append
        codes: list[int] = []  # pending audio run inside the segment
        add_code = codes.append
        it = iter(ids)

        while True:
            spoken = state is in_tts
            if state is ended:
                for t in it:
                    if t < 0 or t >= vocab_size:
                        raise first_invalid(ids, vocab_size)
                    stray.append(AFTER_END_OF_TURN)
                return state
            special = -1
            if spoken:
                # Audio ids (four in five) take the shortest path: two comparisons and an append. A text id
                # closes the pending audio run, then an inner loop collects the text run and hands the first
                # id after it back to this loop's logic.
                for t in it:
                    if t >= audio_first:
                        if t < audio_pad:
                            add_code(t - audio_first)
                        elif t != audio_pad:
                            if t >= vocab_size:
                                raise first_invalid(ids, vocab_size)
                            stray.append(UNUSED_ID)
                        continue
                    if t < pure_text or (t < text_limit and t not in specials):
                        if t < 0:
                            raise first_invalid(ids, vocab_size)
                        if codes:
                            audio_ev = new(AudioCodes)
                            set_codes(audio_ev, tuple(codes))
                            append_event(audio_ev)
                            del codes[:]
                        texts = [t]
                        for t in it:
                            if t < pure_text or (t < text_limit and t not in specials):
                                if t < 0:
                                    raise first_invalid(ids, vocab_size)
                                texts.append(t)
                            else:
                                break
                        else:
                            text_ev = new(TextTokens)
                            set_ids(text_ev, tuple(texts))
                            set_spoken(text_ev, True)
                            append_event(text_ev)
                            break  # the chunk ended inside the text run
                        text_ev = new(TextTokens)
                        set_ids(text_ev, tuple(texts))
                        set_spoken(text_ev, True)
                        append_event(text_ev)
                        if t >= audio_first:
                            if t < audio_pad:
                                add_code(t - audio_first)
                            elif t != audio_pad:
                                if t >= vocab_size:
                                    raise first_invalid(ids, vocab_size)
                                stray.append(UNUSED_ID)
                            continue
                    if t != tts_pad:
                        special = t
                        break
                if codes:
                    audio_ev = new(AudioCodes)
                    set_codes(audio_ev, tuple(codes))
                    append_event(audio_ev)
                    del codes[:]
            else:
                for t in it:
                    if t < pure_text or (t < text_limit and t not in specials):
                        if t < 0:
                            raise first_invalid(ids, vocab_size)
                        add(t)
                    elif t >= audio_first:
                        if t >= vocab_size:
                            raise first_invalid(ids, vocab_size)
                        stray.append(AUDIO_OUTSIDE_SEGMENT if t <= audio_pad else UNUSED_ID)
                    else:
                        special = t
                        break
                if run:
                    text_ev = new(TextTokens)
                    set_ids(text_ev, tuple(run))
                    set_spoken(text_ev, False)
                    append_event(text_ev)
                    del run[:]
            if special < 0:
                return state
            if special == eot:
                if spoken:
                    append_event(SEGMENT_END)
                append_event(END_OF_TURN)
                state = ended
            elif spoken and special == tts_end:
                append_event(SEGMENT_END)
                state = after
            elif not spoken and special == tts_start:
                append_event(SEGMENT_START)
                state = in_tts
            else:
                stray.append(STRAY_PREFIX + (self._layout.token_name(special) or str(special)))
