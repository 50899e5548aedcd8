"""Incremental parsing of Step-Audio-2 output: token ids (or their text form) in, typed events out.

Pure standard library, sans-I/O, usable from any thread (one parser per generation). Public API:
`VocabLayout`, `AudioTokenParser`, `TextualAudioParser`, the events and the errors below.
"""

from __future__ import annotations

from streaming_parser.errors import (
    ConflictingToken,
    InvalidTokenType,
    MissingToken,
    NegativeTokenId,
    ParserClosed,
    ParserError,
    TokenIdOutOfRange,
    TokenizerFilesMissing,
    VocabError,
)
from streaming_parser.events import (
    AudioCodes,
    EndOfTurn,
    Event,
    SegmentEnd,
    SegmentStart,
    TextPiece,
    TextTokens,
    normalize_events,
)
from streaming_parser.parser import AudioTokenParser, ParserState
from streaming_parser.textual import TextualAudioParser
from streaming_parser.vocab import VocabLayout

__all__ = [
    "AudioCodes",
    "AudioTokenParser",
    "ConflictingToken",
    "EndOfTurn",
    "Event",
    "InvalidTokenType",
    "MissingToken",
    "NegativeTokenId",
    "ParserClosed",
    "ParserError",
    "ParserState",
    "SegmentEnd",
    "SegmentStart",
    "TextPiece",
    "TextTokens",
    "TextualAudioParser",
    "TokenIdOutOfRange",
    "TokenizerFilesMissing",
    "VocabError",
    "VocabLayout",
    "normalize_events",
]
