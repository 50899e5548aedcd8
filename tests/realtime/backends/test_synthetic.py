"""The synthetic backend: a well-formed TA4 stream, deterministic, prompt-aware, abortable."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from realtime.backends.base import (
    FinishReason,
    GenerationInput,
    LLMBackend,
    PromptTurn,
    SamplingParams,
    TextCodec,
)
from realtime.backends.synthetic import SyntheticBackend, WordCodec
from streaming_parser import AudioCodes, AudioTokenParser, EndOfTurn, SegmentEnd, TextTokens, VocabLayout

FAST = 50_000.0


def _request(text: str = "how are you today", *, speak: bool = True, **kw: Any) -> GenerationInput:
    return GenerationInput(rid=kw.pop("rid", "r1"), turns=[PromptTurn("user", text)], speak=speak, **kw)


def test_satisfies_the_backend_protocols() -> None:
    backend: LLMBackend = SyntheticBackend()
    assert backend.name == "synthetic"
    assert isinstance(backend.text_codec, TextCodec)


def test_spoken_reply_is_well_formed_ta4() -> None:
    backend = SyntheticBackend(seed=3)
    lay = backend.vocab
    ids = backend.reply_ids(_request())
    assert ids[-2:] == [lay.tts_end, lay.eot]
    body = ids[:-2]
    assert len(body) % 5 == 0
    for g in range(0, len(body), 5):
        assert body[g] < lay.text_limit or body[g] == lay.tts_pad  # one text slot
        for audio_id in body[g + 1 : g + 5]:  # four audio slots
            assert lay.audio_first <= audio_id <= lay.audio_pad
    events = AudioTokenParser(lay, starts_in_speech=True).feed(ids)
    assert isinstance(events[-1], EndOfTurn) and isinstance(events[-2], SegmentEnd)
    codes = [c for e in events if isinstance(e, AudioCodes) for c in e.codes]
    assert codes and all(0 <= c < lay.audio_codes for c in codes)
    text = [i for e in events if isinstance(e, TextTokens) for i in e.ids]
    words = backend.text_codec.decode(text).split()
    assert len(words) >= 8 and all(w.strip(".,").isalpha() or w in {",", "."} for w in words)


def test_text_only_reply_has_no_audio_and_ends_with_eot() -> None:
    backend = SyntheticBackend()
    ids = backend.reply_ids(_request(speak=False))
    lay = backend.vocab
    assert ids[-1] == lay.eot
    assert all(i < lay.text_limit for i in ids[:-1])


def test_deterministic_per_seed_and_prompt() -> None:
    a, b, c = SyntheticBackend(seed=1), SyntheticBackend(seed=1), SyntheticBackend(seed=2)
    assert a.reply_ids(_request()) == b.reply_ids(_request())
    assert a.reply_ids(_request()) != c.reply_ids(_request())
    assert a.reply_ids(_request()) != a.reply_ids(_request("something else entirely"))


def test_longer_prompts_get_longer_replies() -> None:
    backend = SyntheticBackend()
    short = backend.reply_ids(_request("hi"))
    long = backend.reply_ids(_request(" ".join(["word"] * 20)))
    assert len(long) > len(short)


def test_spoken_prompt_length_counts() -> None:
    backend = SyntheticBackend()
    speech = GenerationInput(rid="a", turns=[PromptTurn("user", audio_pcm16=bytes(2 * 24_000 * 8))])
    assert len(backend.reply_ids(speech)) > len(backend.reply_ids(_request("hi")))


async def _drain(backend: SyntheticBackend, request: GenerationInput) -> list[Any]:
    return [chunk async for chunk in backend.generate(request)]


async def test_stream_matches_reply_ids_with_usage() -> None:
    backend = SyntheticBackend(tokens_per_second=FAST, prefill_seconds=0)
    request = _request()
    chunks = await _drain(backend, request)
    assert [i for c in chunks for i in c.ids] == backend.reply_ids(request)
    assert chunks[-1].finish_reason is FinishReason.STOP
    assert all(c.finish_reason is None for c in chunks[:-1])
    assert chunks[0].prompt_tokens is not None and chunks[0].prompt_tokens > 0
    assert chunks[-1].completion_tokens == len(backend.reply_ids(request))


async def test_max_new_tokens_stops_with_length() -> None:
    backend = SyntheticBackend(tokens_per_second=FAST, prefill_seconds=0)
    chunks = await _drain(backend, _request(sampling=SamplingParams(max_new_tokens=17)))
    assert sum(len(c.ids) for c in chunks) == 17
    assert chunks[-1].finish_reason is FinishReason.LENGTH


async def test_abort_stops_the_stream() -> None:
    backend = SyntheticBackend(tokens_per_second=500.0, prefill_seconds=0)
    request = _request(rid="to-abort")
    seen: list[Any] = []
    async for chunk in backend.generate(request):
        seen.append(chunk)
        if len(seen) == 3:
            await backend.abort("to-abort")
    assert seen[-1].finish_reason is FinishReason.ABORT
    assert sum(len(c.ids) for c in seen) < len(backend.reply_ids(request))
    await backend.abort("unknown-rid")  # idempotent, never raises


async def test_slow_rate_yields_progressively() -> None:
    backend = SyntheticBackend(tokens_per_second=200.0, prefill_seconds=0)
    gen = backend.generate(_request())
    first = await gen.__anext__()
    assert 0 < len(first.ids) < 5  # not the whole reply at once
    await gen.aclose()  # type: ignore[attr-defined]


def test_word_codec_round_trip_and_specials() -> None:
    layout = VocabLayout.default()
    codec = WordCodec(layout)
    ids = codec.encode("This is the voice.")
    assert codec.decode(ids) == "this is the voice."
    assert codec.decode([layout.tts_start]) == "<tts_start>"
    assert codec.decode([layout.audio_token_id(12)]) == "<audio_12>"
    assert len(codec.encode("zzzunknown")) == 1


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_rejects_bad_rates(bad: float) -> None:
    with pytest.raises(ValueError):
        SyntheticBackend(tokens_per_second=bad)


async def test_aclose_aborts_active_streams() -> None:
    backend = SyntheticBackend(tokens_per_second=200.0, prefill_seconds=0)
    gen = backend.generate(_request(rid="x"))
    await gen.__anext__()
    await backend.aclose()
    rest = [c async for c in gen]
    assert rest[-1].finish_reason is FinishReason.ABORT
    await asyncio.sleep(0)
