"""Hypothesis properties: any chunking gives the same events, and generated TA4 streams round-trip."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from streaming_parser import AudioCodes, TextTokens
from streaming_parser.ta4 import spoken_reply
from tests.streaming_parser.support import LAYOUT, reference_parse, run_parser

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True)

text_ids = st.integers(min_value=0, max_value=LAYOUT.pure_text_limit - 1)
codes = st.integers(min_value=0, max_value=LAYOUT.audio_codes - 1)
control_ids = st.sampled_from([*sorted(LAYOUT.special_ids), LAYOUT.audio_pad])
unused_ids = st.integers(min_value=LAYOUT.audio_pad + 1, max_value=LAYOUT.vocab_size - 1)
any_id = st.one_of(
    text_ids,
    codes.map(lambda code: LAYOUT.audio_first + code),
    control_ids,
    unused_ids,
)


@st.composite
def chunked(draw: st.DrawFn, ids: list[int]) -> list[list[int]]:
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(ids)), max_size=12)))
    bounds = [0, *cuts, len(ids)]
    return [ids[a:b] for a, b in itertools.pairwise(bounds)]


@SETTINGS
@given(data=st.data(), ids=st.lists(any_id, max_size=80), starts_in_speech=st.booleans())
def test_any_chunking_matches_the_reference(
    data: st.DataObject, ids: list[int], starts_in_speech: bool
) -> None:
    chunks = data.draw(chunked(ids))
    expected = reference_parse(ids, starts_in_speech=starts_in_speech)
    assert run_parser(chunks, starts_in_speech=starts_in_speech) == expected
    assert run_parser([ids], starts_in_speech=starts_in_speech) == expected


@SETTINGS
@given(
    data=st.data(),
    spoken=st.lists(text_ids, max_size=30),
    audio=st.lists(codes, max_size=120),
    after=st.lists(text_ids, max_size=10),
)
def test_generated_ta4_streams_round_trip(
    data: st.DataObject, spoken: list[int], audio: list[int], after: list[int]
) -> None:
    ids = spoken_reply(LAYOUT, spoken, audio, after_text_ids=after)
    events, anomalies = run_parser(data.draw(chunked(ids)))
    got_spoken = [i for e in events if isinstance(e, TextTokens) and e.spoken for i in e.ids]
    got_after = [i for e in events if isinstance(e, TextTokens) and not e.spoken for i in e.ids]
    got_codes = [c for e in events if isinstance(e, AudioCodes) for c in e.codes]
    assert (got_spoken, got_codes, got_after) == (spoken, audio, after)
    assert anomalies == {}
