"""AudioTokenParser: the state table, every chunk boundary, and invalid input."""

from __future__ import annotations

import random

import pytest

from streaming_parser import (
    AudioCodes,
    AudioTokenParser,
    EndOfTurn,
    InvalidTokenType,
    NegativeTokenId,
    ParserClosed,
    ParserError,
    ParserState,
    SegmentEnd,
    SegmentStart,
    TextTokens,
    TokenIdOutOfRange,
    VocabLayout,
)
from streaming_parser.ta4 import spoken_reply
from tests.streaming_parser.support import (
    LAYOUT,
    SAMPLE_IDS,
    SPOKEN_CODES,
    SPOKEN_TEXT,
    TOOL_CALL_TEXT,
    random_chunks,
    reference_parse,
    run_parser,
)

WHOLE, WHOLE_ANOMALIES = run_parser([SAMPLE_IDS])


def test_sample_stream_events() -> None:
    spoken = [e for e in WHOLE if isinstance(e, TextTokens) and e.spoken]
    content = [e for e in WHOLE if isinstance(e, TextTokens) and not e.spoken]
    codes = [c for e in WHOLE if isinstance(e, AudioCodes) for c in e.codes]
    assert WHOLE[0] == SegmentStart()
    assert WHOLE[-3:] == [SegmentEnd(), TextTokens(TOOL_CALL_TEXT, spoken=False), EndOfTurn()]
    assert tuple(i for e in spoken for i in e.ids) == SPOKEN_TEXT
    assert content == [TextTokens(TOOL_CALL_TEXT, spoken=False)]
    assert tuple(codes) == SPOKEN_CODES
    assert WHOLE_ANOMALIES == {}
    assert WHOLE == reference_parse(SAMPLE_IDS, starts_in_speech=True)[0]


def test_events_keep_ta4_order() -> None:
    # 1 text : 4 audio: the transcript id of each group comes before its codes
    kinds = [type(e).__name__ for e in WHOLE[1:11]]
    assert kinds == ["TextTokens", "AudioCodes"] * 5


@pytest.mark.parametrize("cut", range(1, len(SAMPLE_IDS)))
def test_split_anywhere_matches_whole(cut: int) -> None:
    assert run_parser([SAMPLE_IDS[:cut], SAMPLE_IDS[cut:]]) == (WHOLE, WHOLE_ANOMALIES)


@pytest.mark.parametrize("first", range(1, len(SAMPLE_IDS) - 1, 3))
def test_two_cuts_anywhere_match_whole(first: int) -> None:
    for second in range(first + 1, len(SAMPLE_IDS)):
        chunks = [SAMPLE_IDS[:first], SAMPLE_IDS[first:second], SAMPLE_IDS[second:]]
        assert run_parser(chunks) == (WHOLE, WHOLE_ANOMALIES)


def test_one_id_at_a_time_matches_whole() -> None:
    assert run_parser([[token_id] for token_id in SAMPLE_IDS]) == (WHOLE, WHOLE_ANOMALIES)


def test_random_chunkings_match_whole() -> None:
    rng = random.Random(1234)
    text = [rng.randrange(LAYOUT.text_limit - 100) for _ in range(60)]
    codes = [rng.randrange(LAYOUT.audio_codes) for _ in range(500)]
    long_ids = spoken_reply(LAYOUT, text, codes, after_text_ids=TOOL_CALL_TEXT)
    whole = run_parser([long_ids])
    assert whole == reference_parse(long_ids, starts_in_speech=True)
    for _ in range(200):
        assert run_parser(random_chunks(long_ids, rng)) == whole


def test_feed_merges_consecutive_ids_of_one_kind() -> None:
    parser = AudioTokenParser(LAYOUT, starts_in_speech=True)
    a = LAYOUT.audio_first
    events = parser.feed([a + 1, a + 2, LAYOUT.tts_pad, a + 3, LAYOUT.audio_pad, a + 4, 10, 11])
    assert events == [SegmentStart(), AudioCodes((1, 2, 3, 4)), TextTokens((10, 11), spoken=True)]
    # chunks never merge: the next call starts new events
    assert parser.feed([12, a]) == [TextTokens((12,), spoken=True), AudioCodes((0,))]


def test_text_only_reply() -> None:
    ids = [9707, 0, 1052, 13, LAYOUT.eot]
    events, anomalies = run_parser([ids], starts_in_speech=False)
    assert events == [TextTokens((9707, 0, 1052, 13), spoken=False), EndOfTurn()]
    assert anomalies == {}


def test_tts_start_in_the_output_opens_a_segment() -> None:
    a = LAYOUT.audio_first
    ids = [5, LAYOUT.tts_start, 6, a, a + 6560, LAYOUT.tts_end, 7, LAYOUT.eot]
    events, _ = run_parser([ids], starts_in_speech=False)
    assert events == [
        TextTokens((5,), spoken=False),
        SegmentStart(),
        TextTokens((6,), spoken=True),
        AudioCodes((0, 6560)),
        SegmentEnd(),
        TextTokens((7,), spoken=False),
        EndOfTurn(),
    ]


def test_eot_inside_the_segment_ends_segment_then_turn() -> None:
    events, _ = run_parser([[LAYOUT.audio_first + 3, LAYOUT.eot]])
    assert events == [SegmentStart(), AudioCodes((3,)), SegmentEnd(), EndOfTurn()]


@pytest.mark.parametrize("starts_in_speech", [True, False])
def test_flush_without_eot_closes_segment_and_turn(starts_in_speech: bool) -> None:
    parser = AudioTokenParser(LAYOUT, starts_in_speech=starts_in_speech)
    parser.feed([42])
    expected = [SegmentEnd(), EndOfTurn()] if starts_in_speech else [EndOfTurn()]
    assert parser.flush() == expected
    assert parser.flush() == []
    assert parser.state is ParserState.ENDED


def test_flush_of_an_empty_spoken_reply_still_opens_and_closes() -> None:
    parser = AudioTokenParser(LAYOUT, starts_in_speech=True)
    assert parser.flush() == [SegmentStart(), SegmentEnd(), EndOfTurn()]


def test_segment_start_is_the_first_event_even_for_empty_chunks() -> None:
    parser = AudioTokenParser(LAYOUT, starts_in_speech=True)
    assert parser.feed([]) == [SegmentStart()]
    assert parser.feed([]) == []


def test_anomalies_are_counted_not_emitted() -> None:
    a = LAYOUT.audio_first
    ids = [
        a + 1,  # audio before any segment
        LAYOUT.audio_pad,  # pad outside
        LAYOUT.tts_end,  # stray end
        LAYOUT.tts_start,
        LAYOUT.tts_start,  # nested start
        LAYOUT.bot,
        LAYOUT.audio_pad + 1,  # unused row of the embedding table
        LAYOUT.tts_end,
        a + 2,  # audio after the segment
        LAYOUT.eot,
        5,  # after the end of the turn
        LAYOUT.vocab_size - 1,
    ]
    events, anomalies = run_parser([ids], starts_in_speech=False)
    assert events == [SegmentStart(), SegmentEnd(), EndOfTurn()]
    assert anomalies == {
        "audio_outside_segment": 3,
        "stray:<tts_end>": 1,
        "stray:<tts_start>": 1,
        "stray:<|BOT|>": 1,
        "unused_id": 1,
        "after_end_of_turn": 2,
    }


def test_pads_inside_the_segment_are_dropped_silently() -> None:
    events, anomalies = run_parser([[LAYOUT.tts_pad, LAYOUT.audio_pad] * 3])
    assert events == [SegmentStart(), SegmentEnd(), EndOfTurn()]
    assert anomalies == {}


def test_control_ids_inside_the_text_range_are_not_text() -> None:
    # a tokenizer may put <|BOT|>/<|EOT|> among the text ids; the layout must still treat them as control
    layout = VocabLayout(bot=151_665, eot=151_666)
    events, _ = run_parser([[10, layout.bot, 11, layout.eot, 12]], starts_in_speech=False, layout=layout)
    assert events == [TextTokens((10, 11), spoken=False), EndOfTurn()]


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (-1, NegativeTokenId),
        (LAYOUT.vocab_size, TokenIdOutOfRange),
        (10**12, TokenIdOutOfRange),
        (True, InvalidTokenType),
        (1.0, InvalidTokenType),
        ("5", InvalidTokenType),
        (None, InvalidTokenType),
    ],
)
@pytest.mark.parametrize("state_ids", [[], [LAYOUT.tts_end], [LAYOUT.eot]])
def test_invalid_ids_raise_and_leave_the_parser_unchanged(
    bad: object, error: type[ParserError], state_ids: list[int]
) -> None:
    parser = AudioTokenParser(LAYOUT, starts_in_speech=True)
    reference = AudioTokenParser(LAYOUT, starts_in_speech=True)
    first = [*state_ids]
    assert parser.feed(first) == reference.feed(first)
    chunk = [7, LAYOUT.audio_first, bad, 8]
    with pytest.raises(error) as info:
        parser.feed(chunk)  # type: ignore[arg-type]
    assert info.value.index == 2  # type: ignore[attr-defined]
    assert isinstance(info.value, ParserError) and isinstance(info.value, ValueError)
    rest = [9, LAYOUT.audio_first + 1, LAYOUT.eot]
    assert parser.feed(rest) == reference.feed(rest)
    assert parser.anomalies == reference.anomalies
    assert parser.flush() == reference.flush()


def test_a_rejected_first_chunk_keeps_the_segment_start() -> None:
    parser = AudioTokenParser(LAYOUT, starts_in_speech=True)
    with pytest.raises(NegativeTokenId):
        parser.feed([5, -3])
    assert parser.feed([5]) == [SegmentStart(), TextTokens((5,), spoken=True)]


def test_an_iterator_is_refused() -> None:
    parser = AudioTokenParser(LAYOUT, starts_in_speech=False)
    with pytest.raises(TypeError):
        parser.feed(iter([1, 2]))  # type: ignore[arg-type]
    assert parser.feed([1]) == [TextTokens((1,), spoken=False)]


def test_feed_after_flush_raises() -> None:
    parser = AudioTokenParser(LAYOUT, starts_in_speech=False)
    parser.flush()
    with pytest.raises(ParserClosed):
        parser.feed([1])


def test_accepts_any_sequence() -> None:
    a = LAYOUT.audio_first
    assert run_parser([(5, a), range(a + 1, a + 3)]) == run_parser([[5, a, a + 1, a + 2]])
