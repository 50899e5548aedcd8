"""The transcription path (realtime/speech/transcribe.py) against scripted backends, and its prompt form."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest

from realtime.audio import AudioFormat
from realtime.backends.base import BackendError, FinishReason, GenerationInput, TokenChunk
from realtime.backends.synthetic import SyntheticBackend
from realtime.session.items import prompt_turns, user_audio_item
from realtime.speech.transcribe import (
    ASR_PROMPT,
    TranscriptionDelta,
    TranscriptionDone,
    TranscriptionRequest,
    asr_instructions,
    transcribe,
)

RATE = 24_000


class Scripted(SyntheticBackend):
    """The synthetic backend's vocabulary with a scripted token stream; records requests and aborts."""

    def __init__(self, chunks: Sequence[TokenChunk], delay_s: float = 0.0) -> None:
        super().__init__()
        self.chunks, self.delay_s = chunks, delay_s
        self.requests: list[GenerationInput] = []
        self.closed = False

    async def generate(self, request: GenerationInput) -> AsyncIterator[TokenChunk]:
        self.requests.append(request)
        try:
            for chunk in self.chunks:
                await asyncio.sleep(self.delay_s)
                yield chunk
        finally:
            self.closed = True


def speechlike(seconds: float) -> bytes:
    rng = np.random.default_rng(1)
    return bytes((rng.standard_normal(int(seconds * RATE)) * 3000).astype("<i2").tobytes())


async def collect(backend: SyntheticBackend, request: TranscriptionRequest) -> list[object]:
    return [event async for event in transcribe(backend, request)]


async def test_request_is_the_models_asr_prompt_and_text_comes_back_in_pieces() -> None:
    backend = Scripted([])
    codec, eot = backend.text_codec, backend.vocab.eot
    ids = codec.encode("hello , i am a test signal .")
    backend.chunks = [
        TokenChunk(tuple(ids[:3]), prompt_tokens=40),
        TokenChunk(tuple(ids[3:]), completion_tokens=len(ids)),
        TokenChunk((eot,), FinishReason.STOP, completion_tokens=len(ids) + 1),
    ]
    pcm = speechlike(1.0)
    events = await collect(backend, TranscriptionRequest("asr_1", pcm, RATE, language="en", prompt="Step"))
    (request,) = backend.requests
    assert request.purpose == "transcription" and not request.speak and request.rid == "asr_1"
    assert request.instructions.startswith(ASR_PROMPT) and "en" in request.instructions
    assert "Step" in request.instructions and request.sampling.temperature == 0.0
    assert [(t.role, t.text, t.audio_pcm16) for t in request.turns] == [("user", None, pcm)]
    deltas = [e.text for e in events if isinstance(e, TranscriptionDelta)]
    done = events[-1]
    assert isinstance(done, TranscriptionDone) and len(deltas) == 2
    assert done.transcript == "".join(deltas) == "hello, i am a test signal."
    assert (done.input_tokens, done.output_tokens, done.audio_seconds) == (40, len(ids) + 1, 1.0)


@pytest.mark.parametrize(
    ("finish", "code"),
    [(FinishReason.LENGTH, "too_long"), (FinishReason.ABORT, "aborted"), (None, "stream_cut")],
)
async def test_unfinished_transcripts_fail(finish: FinishReason | None, code: str) -> None:
    backend = Scripted([TokenChunk((1, 2), finish)])
    with pytest.raises(BackendError) as caught:
        await collect(backend, TranscriptionRequest("asr_2", speechlike(0.5), RATE))
    assert caught.value.code == code


async def test_closing_the_stream_closes_the_backend_request() -> None:
    backend = Scripted([TokenChunk((1,))] * 1000, delay_s=0.001)
    stream = transcribe(backend, TranscriptionRequest("asr_3", speechlike(0.5), RATE))
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert backend.closed


async def test_synthetic_transcript_is_deterministic_and_silence_is_empty() -> None:
    backend = SyntheticBackend()
    pcm = speechlike(2.0)
    first = await collect(backend, TranscriptionRequest("a", pcm, RATE))
    again = await collect(backend, TranscriptionRequest("b", pcm, RATE))
    words = backend.transcript_words(pcm, RATE)
    assert len(words) == 2.0 / 0.4 + 1 and words[-1] == "."
    assert first[-1] == again[-1] and isinstance(first[-1], TranscriptionDone) and first[-1].transcript
    silent = await collect(backend, TranscriptionRequest("c", b"\x00\x00" * RATE, RATE))
    assert silent == [TranscriptionDone("", silent[-1].input_tokens, 1, 1.0)]  # type: ignore[attr-defined]


def test_hints_are_extra_lines_after_the_asr_prompt() -> None:
    assert asr_instructions(None, None) == ASR_PROMPT
    assert asr_instructions("de", "Namen: Jörg").splitlines() == [ASR_PROMPT, "语言：de", "提示：Namen: Jörg"]


def test_a_transcript_does_not_change_the_prompt_of_kept_audio() -> None:
    item = user_audio_item(speechlike(0.5), AudioFormat.PCM16)
    before = prompt_turns([item])
    item.content[0].transcript = "hello"
    assert prompt_turns([item]) == before and before[0].text is None
    item.content[0].audio = None  # the audio is gone: the transcript is the turn's text
    assert prompt_turns([item])[0].text == "hello"
