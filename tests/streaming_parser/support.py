"""Shared helpers of the streaming_parser tests: sample streams, chunkings and a reference parser."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence

from streaming_parser import (
    AudioCodes,
    AudioTokenParser,
    EndOfTurn,
    Event,
    SegmentEnd,
    SegmentStart,
    TextTokens,
    VocabLayout,
    normalize_events,
)
from streaming_parser.ta4 import spoken_reply

LAYOUT = VocabLayout.default()
TOOL_CALL_OPEN = 151_657  # <tool_call> in the Qwen2.5 text vocabulary
TOOL_CALL_CLOSE = 151_658  # </tool_call>

# "Hello there, friend." as text ids, then a code pattern: the shape of a real short spoken reply.
SPOKEN_TEXT = (9707, 1052, 11, 4238, 13)
SPOKEN_CODES = tuple((37 * i + 11) % LAYOUT.audio_codes for i in range(26))
TOOL_CALL_TEXT = (TOOL_CALL_OPEN, 1688, 198, 455, 92, 2497, TOOL_CALL_CLOSE)

# A spoken reply: 5 TA4 groups with text, 2 with <tts_pad> text, the last one padded with <audio_6561>,
# then <tts_end>, a tool call as content text and <|EOT|>.
SAMPLE_IDS: tuple[int, ...] = tuple(
    spoken_reply(LAYOUT, SPOKEN_TEXT, SPOKEN_CODES, after_text_ids=TOOL_CALL_TEXT)
)


def run_parser(
    chunks: Iterable[Sequence[int]], *, starts_in_speech: bool = True, layout: VocabLayout = LAYOUT
) -> tuple[list[Event], Counter[str]]:
    """Feed every chunk, then flush; return the normalised events and the anomaly counts."""
    parser = AudioTokenParser(layout, starts_in_speech=starts_in_speech)
    events: list[Event] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.flush())
    return normalize_events(events), parser.anomalies


def random_chunks(ids: Sequence[int], rng: random.Random, max_size: int = 12) -> list[Sequence[int]]:
    """Split ids into consecutive chunks of 0..max_size ids (empty chunks included on purpose)."""
    chunks: list[Sequence[int]] = []
    position = 0
    while position < len(ids):
        size = rng.randint(0, max_size)
        chunks.append(ids[position : position + size])
        position += size
    return chunks


def reference_parse(
    ids: Sequence[int], *, starts_in_speech: bool, layout: VocabLayout = LAYOUT
) -> tuple[list[Event], Counter[str]]:
    """A deliberately naive, one-id-at-a-time reading of the docs/SGLANG.md §2.3 state table (plus flush)."""
    events: list[Event] = [SegmentStart()] if starts_in_speech else []
    anomalies: Counter[str] = Counter()
    state = "in_tts" if starts_in_speech else "outside"
    specials = {
        layout.audio_start,
        layout.audio_end,
        layout.audio_patch,
        layout.tts_start,
        layout.tts_end,
        layout.tts_pad,
        layout.bot,
        layout.eot,
    }
    for token_id in ids:
        code = layout.audio_code(token_id)
        if state == "ended":
            anomalies["after_end_of_turn"] += 1
        elif token_id == layout.eot:
            if state == "in_tts":
                events.append(SegmentEnd())
            events.append(EndOfTurn())
            state = "ended"
        elif state == "in_tts":
            if code is not None:
                events.append(AudioCodes((code,)))
            elif token_id in (layout.audio_pad, layout.tts_pad):
                pass
            elif token_id == layout.tts_end:
                events.append(SegmentEnd())
                state = "after"
            elif token_id < layout.text_limit and token_id not in specials:
                events.append(TextTokens((token_id,), spoken=True))
            elif token_id > layout.audio_pad:
                anomalies["unused_id"] += 1
            else:
                anomalies[f"stray:{layout.token_name(token_id)}"] += 1
        else:
            if token_id == layout.tts_start:
                events.append(SegmentStart())
                state = "in_tts"
            elif code is not None or token_id == layout.audio_pad:
                anomalies["audio_outside_segment"] += 1
            elif token_id > layout.audio_pad:
                anomalies["unused_id"] += 1
            elif token_id < layout.text_limit and token_id not in specials:
                events.append(TextTokens((token_id,), spoken=False))
            else:
                anomalies[f"stray:{layout.token_name(token_id)}"] += 1
    if state == "in_tts":
        events.append(SegmentEnd())
    if state != "ended":
        events.append(EndOfTurn())
    return normalize_events(events), anomalies
