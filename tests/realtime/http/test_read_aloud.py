"""Read-aloud generations: the TTS prompt (Step-Audio-2's system prompt plus style) and the synthetic voice
speaking exactly the input, through the real reply pipeline."""

from __future__ import annotations

import pytest

from realtime.backends.base import READ_ALOUD_INSTRUCTION
from realtime.backends.context import TruncationPolicy, fit
from realtime.backends.sglang.prompt import PromptBuilder, system_text
from realtime.backends.synthetic import SyntheticBackend
from realtime.http.sampling import speech_sampling
from realtime.http.speech import read_aloud_input
from realtime.metrics import Metrics
from realtime.speech.pipeline import stream_reply
from realtime.speech.reply import GenerationDone, TranscriptDelta

TEXTS = ["Hello, world.", "Ünïcode ✓ and 中文, read verbatim!", "  spaces  and\nnewlines  ", "x" * 4096]


@pytest.mark.parametrize("text", TEXTS, ids=["ascii", "unicode", "whitespace", "max-length"])
async def test_the_synthetic_backend_speaks_exactly_the_input(text: str) -> None:
    backend = SyntheticBackend(tokens_per_second=1e6, prefill_seconds=0)
    transcript: list[str] = []
    done = None
    request = fit(read_aloud_input(text, "calm"), backend, TruncationPolicy(mode="disabled")).request
    async for event in stream_reply(backend, None, request, Metrics()):
        if isinstance(event, TranscriptDelta):
            transcript.append(event.text)
        elif isinstance(event, GenerationDone):
            done = event
    assert "".join(transcript) == text
    assert done is not None and done.finish.value == "stop"  # the token budget fits the longest input


def test_the_tts_prompt_carries_the_read_aloud_instruction_then_the_style() -> None:
    request = read_aloud_input("Read me.", "whisper, slowly")
    assert system_text(request) == READ_ALOUD_INSTRUCTION + "\nwhisper, slowly"
    assert system_text(read_aloud_input("Read me.", "")) == READ_ALOUD_INSTRUCTION


def test_the_sglang_prompt_is_system_then_the_text_as_the_user_turn() -> None:
    backend = SyntheticBackend()
    codec = backend.text_codec
    prompt = PromptBuilder(backend.vocab, codec).build(read_aloud_input("Read me.", ""))
    lay = backend.vocab
    ids = list(prompt.input_ids)
    assert ids[0] == lay.bot and ids[-1] == lay.tts_start  # ends in the spoken prefill
    assert prompt.starts_in_speech


def test_the_budget_grows_with_the_text() -> None:
    assert speech_sampling("x" * 4096).max_new_tokens > speech_sampling("x").max_new_tokens


@pytest.mark.parametrize("text", TEXTS[:3], ids=["ascii", "unicode", "whitespace"])
def test_byte_pair_ids_detokenize_exactly_one_id_at_a_time(text: str) -> None:
    from realtime.speech.detokenizer import IncrementalDetokenizer

    codec = SyntheticBackend().text_codec
    ids = codec.encode_bytes(text)
    assert len(ids) == (len(text.encode()) + 1) // 2  # two bytes a token
    detok = IncrementalDetokenizer(codec)
    pieces = [detok.feed([i]) for i in ids]
    assert "".join(pieces) + detok.flush() == text
    assert "\ufffd" not in "".join(pieces)  # a split character is held back, never shown half
