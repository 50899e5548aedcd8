"""The pipeline on the real (tiny, random-weight) Token2Wav: streamed PCM equals a direct decode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from realtime.backends.base import GenerationInput, PromptTurn
from realtime.backends.synthetic import SyntheticBackend
from realtime.metrics import Metrics
from realtime.speech.decoder import SpeechSetup
from realtime.speech.engine import Token2WavEngine
from realtime.speech.pipeline import stream_reply
from realtime.speech.reply import AudioChunk, GenerationDone
from realtime.speech.voices import default_voice_path
from realtime.speech.worker import InferenceWorker
from streaming_parser import AudioCodes, AudioTokenParser
from tests.token2wav.flow_oracle import INT16_LSB_TOL
from token2wav.dummy import make_dummy_model_dir
from token2wav.model import Token2Wav
from token2wav.stream import ChunkSchedule

FAST = 50_000.0
# Steps of concurrent responses may share a batched DiT pass whose GEMMs sum in another order; through the
# caches and the NSF source that grows to a few LSB late in a stream (8 seen), so the bound is the project's
# end-to-end PCM parity tolerance (docs/TOKEN2WAV.md §7.2), with the mean kept near zero: a wrong or swapped
# stream differs by thousands of LSB.
BATCH_LSB_TOL = INT16_LSB_TOL
BATCH_MEAN_LSB = 1.0
SCHEDULE = ChunkSchedule(first_hop_tokens=10, hop_tokens=25)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dummy_model_dir(tmp_path_factory.mktemp("t2w") / "tiny", "tiny", seed=0)


@pytest.fixture
async def worker(tiny_dir: Path) -> AsyncIterator[InferenceWorker[Any]]:
    w: InferenceWorker[Any] = InferenceWorker(lambda: Token2WavEngine(Token2Wav.from_dir(tiny_dir), SCHEDULE))
    await w.start()
    yield w
    await w.aclose()


def _codes(backend: SyntheticBackend, request: GenerationInput) -> list[int]:
    parser = AudioTokenParser(backend.vocab, starts_in_speech=True)
    events = parser.feed(backend.reply_ids(request)) + parser.flush()
    return [c for e in events if isinstance(e, AudioCodes) for c in e.codes]


def _direct(engine: Token2WavEngine, voice: Any, schedule: ChunkSchedule, codes: list[int]) -> bytes:
    model = engine.model
    stream = model.start(voice, schedule)
    chunks = model.push(stream, codes) + model.finish(stream)
    return b"".join(np.asarray(c, dtype="<i2").tobytes() for c in chunks)


async def test_streamed_pcm_equals_a_direct_decode(worker: InferenceWorker[Any]) -> None:
    voice = await worker.run(lambda m: m.load_voice(default_voice_path()))
    schedule = SCHEDULE
    backend = SyntheticBackend(tokens_per_second=FAST, prefill_seconds=0)
    requests = [GenerationInput(rid=f"r{i}", turns=[PromptTurn("user", "hi " * (i + 1))]) for i in range(2)]
    setup = SpeechSetup(worker, voice)
    # two responses at once interleave their steps on the one worker thread
    results = await asyncio.gather(*(_collect(stream_reply(backend, setup, r, Metrics())) for r in requests))
    for request, events in zip(requests, results, strict=True):
        assert isinstance(events[-1], GenerationDone)
        chunks = [e.pcm16 for e in events if isinstance(e, AudioChunk)]
        codes = _codes(backend, request)
        expected = await worker.run(lambda m, c=codes: _direct(m, voice, schedule, c))
        got, want = np.frombuffer(b"".join(chunks), "<i2"), np.frombuffer(expected, "<i2")
        assert got.shape == want.shape
        # The worker batched the two replies' windows: batched GEMMs sum in another order than a lone
        # decode, a float32 rounding difference that can flip the truncated int16 by one step.
        diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
        assert int(diff.max()) <= BATCH_LSB_TOL and float(diff.mean()) <= BATCH_MEAN_LSB
        assert len(chunks[0]) // 2 == 960 * 10 - 3840  # the short first hop: 240 ms
        assert np.frombuffer(b"".join(chunks), "<i2").std() > 0


async def _collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [event async for event in stream]


def test_engine_options_reach_the_model_and_compile_builds_on_the_first_voice(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Token2WavEngine.load(compile=..., attention=...)`: the decoder's options; a compiled decoder builds its
    graph (`Token2Wav.warmup`) when the first voice is loaded, at start-up, and never again."""
    kwargs: dict[str, Any] = {
        "device": "cpu", "dtype": "float32", "threads": 1, "first_hop_tokens": 10, "hop_tokens": 25,
        "hop_growth": 1.5,
    }  # fmt: skip
    ragged = Token2WavEngine.load(tiny_dir, attention="ragged", **kwargs)
    assert ragged.model.options.attention == "ragged" and not ragged.model.options.compile
    with pytest.raises(ValueError, match="attention"):
        Token2WavEngine.load(tiny_dir, attention="flash", **kwargs)
    compiled = Token2WavEngine.load(tiny_dir, compile=True, **kwargs)
    assert compiled.model.options.compile
    warmups: list[object] = []
    monkeypatch.setattr(compiled.model, "warmup", lambda voice: warmups.append(voice) or 0.0)
    voice = compiled.load_voice(default_voice_path())
    compiled.load_voice(default_voice_path())
    assert warmups == [voice]  # once, with the first voice
    plain = Token2WavEngine.load(tiny_dir, **kwargs)
    monkeypatch.setattr(plain.model, "warmup", lambda voice: warmups.append(voice) or 0.0)
    plain.load_voice(default_voice_path())
    assert len(warmups) == 1  # an eager decoder has nothing to build
