"""interleave_ta4 / spoken_reply: the TA4 layout the synthetic backend and the benchmark generate."""

from __future__ import annotations

import pytest

from streaming_parser.ta4 import interleave_ta4, spoken_reply
from tests.streaming_parser.support import LAYOUT

A = LAYOUT.audio_first


def test_groups_pad_text_then_audio() -> None:
    body = interleave_ta4(LAYOUT, [7, 8], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert body == [
        7, A + 0, A + 1, A + 2, A + 3,
        8, A + 4, A + 5, A + 6, A + 7,
        LAYOUT.tts_pad, A + 8, A + 9, LAYOUT.audio_pad, LAYOUT.audio_pad,
    ]  # fmt: skip


def test_more_text_than_audio_pads_the_audio_slots() -> None:
    assert interleave_ta4(LAYOUT, [7, 8], [5]) == [
        7,
        A + 5,
        *[LAYOUT.audio_pad] * 3,
        8,
        *[LAYOUT.audio_pad] * 4,
    ]


def test_spoken_reply_wraps_the_body() -> None:
    assert spoken_reply(LAYOUT, [], [], after_text_ids=[9]) == [LAYOUT.tts_end, 9, LAYOUT.eot]


@pytest.mark.parametrize(("text", "codes"), [([LAYOUT.eot], []), ([A], []), ([], [6561]), ([], [-1])])
def test_invalid_input_is_refused(text: list[int], codes: list[int]) -> None:
    with pytest.raises(ValueError):
        interleave_ta4(LAYOUT, text, codes)
