"""Build TA4-interleaved id streams (1 text id : 4 audio ids), as Step-Audio-2 emits a spoken reply.

The inverse of what `AudioTokenParser` does inside a segment: used by the synthetic backend, the parser
benchmark and the tests. Layout of a group (docs/SGLANG.md §2.2): one text slot, then four audio slots; once
the text has run out the text slot carries ``<tts_pad>``, once the codes have run out the audio slots carry
``<audio_6561>``. Groups continue until both are exhausted.
"""

from __future__ import annotations

from collections.abc import Sequence

from streaming_parser.vocab import VocabLayout

TEXT_PER_GROUP = 1
AUDIO_PER_GROUP = 4


def interleave_ta4(
    layout: VocabLayout,
    text_ids: Sequence[int],
    codes: Sequence[int],
    *,
    audio_per_group: int = AUDIO_PER_GROUP,
) -> list[int]:
    """Interleave text ids and speech codes into the body of a spoken segment.

    Args:
        layout: the vocabulary layout.
        text_ids: transcript text ids (each must satisfy ``layout.is_text``).
        codes: 0-based speech codes in [0, 6561).
        audio_per_group: audio slots per group (4 for TA4).

    Returns:
        The ids between ``<tts_start>`` and ``<tts_end>`` (neither included).

    Raises:
        ValueError: a text id is not text, or a code is out of range.
    """
    for token_id in text_ids:
        if not layout.is_text(token_id):
            raise ValueError(f"{token_id!r} is not a text id of the layout")
    audio_ids = [layout.audio_token_id(code) for code in codes]
    groups = max(len(text_ids), -(-len(audio_ids) // audio_per_group))
    out: list[int] = []
    for group in range(groups):
        out.append(text_ids[group] if group < len(text_ids) else layout.tts_pad)
        chunk = audio_ids[group * audio_per_group : (group + 1) * audio_per_group]
        out.extend(chunk)
        out.extend([layout.audio_pad] * (audio_per_group - len(chunk)))
    return out


def spoken_reply(
    layout: VocabLayout,
    text_ids: Sequence[int],
    codes: Sequence[int],
    *,
    after_text_ids: Sequence[int] = (),
) -> list[int]:
    """A whole spoken reply as generated after a prompt ending in ``<tts_start>``.

    Returns:
        ``interleave_ta4(...) + [<tts_end>] + after_text_ids + [<|EOT|>]``; ``after_text_ids`` is content
        text after the segment, such as a tool call.
    """
    return [*interleave_ta4(layout, text_ids, codes), layout.tts_end, *after_text_ids, layout.eot]
