"""TextualAudioParser: markers split at every position, malformed markers, parity with the id parser."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming_parser import (
    AudioCodes,
    EndOfTurn,
    Event,
    ParserClosed,
    SegmentEnd,
    SegmentStart,
    TextPiece,
    TextTokens,
    TextualAudioParser,
    normalize_events,
)
from tests.streaming_parser.support import LAYOUT, run_parser

SAMPLE_TEXT = (
    "Hi<audio_12><audio_0><audio_6560><audio_6561> there<tts_pad><audio_5><audio_6561>"
    "<tts_end><tool_call>get_weather {}</tool_call><|EOT|>"
)
SAMPLE_EVENTS = [
    SegmentStart(),
    TextPiece("Hi", spoken=True),
    AudioCodes((12, 0, 6560)),
    TextPiece(" there", spoken=True),
    AudioCodes((5,)),
    SegmentEnd(),
    TextPiece("<tool_call>get_weather {}</tool_call>", spoken=False),
    EndOfTurn(),
]


def run_textual(chunks: list[str], *, starts_in_speech: bool = True) -> list[Event]:
    parser = TextualAudioParser(LAYOUT, starts_in_speech=starts_in_speech)
    events: list[Event] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.flush())
    return normalize_events(events)


def test_whole_sample() -> None:
    assert run_textual([SAMPLE_TEXT]) == SAMPLE_EVENTS


@pytest.mark.parametrize("cut", range(1, len(SAMPLE_TEXT)))
def test_split_anywhere_matches_whole(cut: int) -> None:
    assert run_textual([SAMPLE_TEXT[:cut], SAMPLE_TEXT[cut:]]) == SAMPLE_EVENTS


def test_one_character_at_a_time() -> None:
    assert run_textual(list(SAMPLE_TEXT)) == SAMPLE_EVENTS


def test_marker_split_three_ways() -> None:
    assert run_textual(["<aud", "io_12", "3>"]) == [
        SegmentStart(),
        AudioCodes((123,)),
        SegmentEnd(),
        EndOfTurn(),
    ]


def test_random_splits() -> None:
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(SAMPLE_TEXT)), rng.randint(1, 8)))
        bounds = [0, *cuts, len(SAMPLE_TEXT)]
        chunks = [SAMPLE_TEXT[a:b] for a, b in itertools.pairwise(bounds)]
        assert run_textual(chunks) == SAMPLE_EVENTS


@pytest.mark.parametrize(
    "malformed",
    [
        "<audio_x>",
        "<audio_>",
        "<audio_007>",
        "<audio_6562>",
        "<audio_12345>",
        "<audio_-1>",
        "<audio 1>",
        "<tts_started>",
        "<|eot|>",
        "<<",
        "a < b > c",
        "<aud",  # unfinished at the end of the stream
    ],
)
def test_malformed_markers_stay_text(malformed: str) -> None:
    text = f"x{malformed}<audio_1>y"
    expected = [SegmentStart(), TextPiece(f"x{malformed}", True), AudioCodes((1,)), TextPiece("y", True)]
    for cut in range(1, len(text)):
        assert run_textual([text[:cut], text[cut:]])[:-2] == expected
    tail = run_textual([f"z{malformed}"])
    assert tail == [SegmentStart(), TextPiece(f"z{malformed}", True), SegmentEnd(), EndOfTurn()]


def test_text_reply_without_segment() -> None:
    events = run_textual(["Sunny, ", "22 degrees.<|E", "OT|>"], starts_in_speech=False)
    assert events == [TextPiece("Sunny, 22 degrees.", spoken=False), EndOfTurn()]


def test_text_after_end_of_turn_is_counted() -> None:
    parser = TextualAudioParser(LAYOUT, starts_in_speech=False)
    assert parser.feed("ok<|EOT|>more") == [TextPiece("ok", False), EndOfTurn()]
    assert parser.anomalies == {"after_end_of_turn": 1}


def test_feed_after_flush_raises_and_type_is_checked() -> None:
    parser = TextualAudioParser(LAYOUT, starts_in_speech=False)
    with pytest.raises(TypeError):
        parser.feed(b"<audio_1>")  # type: ignore[arg-type]
    parser.flush()
    with pytest.raises(ParserClosed):
        parser.feed("x")


# Each text id of the id stream detokenises to one letter; control and audio ids to their markers.
LETTERS = "abcdefgh"


def _as_text(token_id: int) -> str:
    name = LAYOUT.token_name(token_id)
    return name if name is not None else LETTERS[token_id]


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    ids=st.lists(
        st.one_of(
            st.integers(min_value=0, max_value=len(LETTERS) - 1),
            st.integers(min_value=LAYOUT.audio_first, max_value=LAYOUT.audio_pad),
            st.sampled_from(sorted(LAYOUT.special_ids)),
        ),
        max_size=60,
    ),
    starts_in_speech=st.booleans(),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_textual_form_gives_the_same_events_as_ids(ids: list[int], starts_in_speech: bool, seed: int) -> None:
    text = "".join(_as_text(i) for i in ids)
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, 6)))
    bounds = [0, *cuts, len(text)]
    chunks = [text[a:b] for a, b in itertools.pairwise(bounds)]
    from_ids, id_anomalies = run_parser([ids], starts_in_speech=starts_in_speech)
    expected = normalize_events(
        TextPiece("".join(LETTERS[i] for i in e.ids), e.spoken) if isinstance(e, TextTokens) else e
        for e in from_ids
    )
    parser = TextualAudioParser(LAYOUT, starts_in_speech=starts_in_speech)
    got: list[Event] = []
    for chunk in chunks:
        got.extend(parser.feed(chunk))
    got.extend(parser.flush())
    assert normalize_events(got) == expected
    if not id_anomalies.get("after_end_of_turn"):
        assert parser.anomalies == id_anomalies
