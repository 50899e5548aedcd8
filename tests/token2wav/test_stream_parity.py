"""Streaming decode: oracle PCM parity per chunk, sample accounting, schedules, isolation of streams."""

from __future__ import annotations

import numpy as np
import pytest

from tests.token2wav.flow_oracle import (
    INT16_LSB_TOL,
    PCM_ATOL,
    arrays,
    gen_tokens,
    model,
    one_torch_thread,  # noqa: F401 - autouse fixture
    voice,
)
from token2wav.errors import InvalidCodes, StreamError, Token2WavError
from token2wav.stream import SAMPLES_PER_TOKEN, ChunkSchedule


def _run(codes: list[int], schedule: ChunkSchedule, feed: int = 1) -> list[np.ndarray]:
    t2w = model()
    stream = t2w.start(voice(), schedule)
    out: list[np.ndarray] = []
    for i in range(0, len(codes), feed):
        out += t2w.push(stream, codes[i : i + feed])
    return out + t2w.finish(stream)


def _lsb(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


def test_reference_schedule_reproduces_oracle_pcm() -> None:
    ref = arrays("stream")
    t2w = model()
    stream = t2w.start(voice(), ChunkSchedule.reference())
    floats: list[np.ndarray] = []
    codes = gen_tokens()
    pending_windows = ChunkSchedule.reference().plan(len(codes))
    for i, (start, end, last) in enumerate(pending_windows):
        floats.append(t2w.run_chunk(stream, codes[start:end], last))
        assert max(abs(floats[i] - ref[f"chunk{i}_pcm_f32"])) <= PCM_ATOL
    assert [len(f) for f in floats] == [20160, 24000, 24000, 15360]
    ints = _run(codes, ChunkSchedule.reference())
    assert len(ints) == 4
    for i, pcm in enumerate(ints):
        assert pcm.dtype == np.dtype("<i2")
        assert _lsb(pcm, ref[f"chunk{i}_pcm_i16"]) <= INT16_LSB_TOL
    assert _lsb(np.concatenate(ints), ref["pcm_i16_all"]) <= INT16_LSB_TOL


def test_single_short_response_is_one_final_chunk() -> None:
    ref = arrays("stream_short")
    out = _run(gen_tokens()[:10], ChunkSchedule.reference(), feed=10)
    assert len(out) == 1
    assert out[0].shape == (9600,)
    assert _lsb(out[0], ref["pcm_i16"]) <= INT16_LSB_TOL


def test_feeding_granularity_does_not_change_output() -> None:
    codes = gen_tokens()
    one = np.concatenate(_run(codes, ChunkSchedule.reference(), feed=1))
    many = np.concatenate(_run(codes, ChunkSchedule.reference(), feed=40))
    assert np.array_equal(one, many)


@pytest.mark.parametrize("first_hop", [10, 15])
def test_other_schedules_account_every_sample(first_hop: int) -> None:
    codes = gen_tokens()
    schedule = ChunkSchedule(first_hop_tokens=first_hop)
    out = _run(codes, schedule)
    assert out[0].shape[0] == SAMPLES_PER_TOKEN * first_hop - 3840
    assert sum(len(c) for c in out) == SAMPLES_PER_TOKEN * len(codes)
    assert len(out) == len(schedule.plan(len(codes)))


def test_interleaved_streams_equal_streams_alone() -> None:
    t2w = model()
    a_codes = gen_tokens()
    b_codes = list(reversed(gen_tokens()))[:60]
    alone_a = np.concatenate(_run(a_codes, ChunkSchedule()))
    alone_b = np.concatenate(_run(b_codes, ChunkSchedule.reference()))
    sa = t2w.start(voice(), ChunkSchedule())
    sb = t2w.start(voice(), ChunkSchedule.reference())
    out_a: list[np.ndarray] = []
    out_b: list[np.ndarray] = []
    for i in range(0, max(len(a_codes), len(b_codes)), 7):
        out_a += t2w.push(sa, a_codes[i : i + 7])
        out_b += t2w.push(sb, b_codes[i : i + 7])
    out_b += t2w.finish(sb)
    out_a += t2w.finish(sa)
    assert np.array_equal(np.concatenate(out_a), alone_a)
    assert np.array_equal(np.concatenate(out_b), alone_b)


def test_warmup_and_cancelled_stream_do_not_leak() -> None:
    t2w = model()
    codes = gen_tokens()[:40]
    before = np.concatenate(_run(codes, ChunkSchedule()))
    t2w.warmup(voice())
    cancelled = t2w.start(voice(), ChunkSchedule())
    t2w.push(cancelled, gen_tokens()[40:])
    cancelled.close()
    after = np.concatenate(_run(codes, ChunkSchedule()))
    assert np.array_equal(before, after)


def test_schedule_plan_and_validation() -> None:
    ref = ChunkSchedule.reference()
    assert ref.plan(87) == [(0, 28, False), (25, 53, False), (50, 78, False), (75, 87, True)]
    assert ref.plan(28) == [(0, 28, False), (25, 28, True)]
    assert ref.plan(10) == [(0, 10, True)]
    assert ref.plan(0) == []
    # The default ramps 10 -> 15 -> 23 -> 25 so the second chunk is ready before the first has played.
    assert [ChunkSchedule().hop(i) for i in range(5)] == [10, 15, 23, 25, 25]
    assert ChunkSchedule().plan(40) == [(0, 13, False), (10, 28, False), (25, 40, True)]
    assert ChunkSchedule(hop_growth=100.0).plan(40) == [(0, 13, False), (10, 38, False), (35, 40, True)]
    assert ChunkSchedule(first_hop_tokens=30, hop_tokens=25).hop(1) == 25
    with pytest.raises(Token2WavError):
        ChunkSchedule(hop_growth=0.5)
    with pytest.raises(Token2WavError):
        ChunkSchedule(first_hop_tokens=2)
    with pytest.raises(Token2WavError):
        ChunkSchedule(lookahead_tokens=2)


def test_stream_errors() -> None:
    t2w = model()
    stream = t2w.start(voice())
    with pytest.raises(InvalidCodes):
        t2w.push(stream, [6561])
    with pytest.raises(InvalidCodes):
        t2w.push(stream, [-1])
    assert t2w.push(stream, []) == []
    assert t2w.finish(stream) == []
    with pytest.raises(StreamError):
        t2w.push(stream, [1])
    with pytest.raises(StreamError):
        t2w.finish(stream)


@pytest.mark.parametrize("n_codes", [1, 3, 14])
@pytest.mark.parametrize("first_hop", [4, 10])
def test_short_responses_emit_every_sample_and_no_empty_chunks(n_codes: int, first_hop: int) -> None:
    out = _run(list(range(n_codes)), ChunkSchedule(first_hop_tokens=first_hop), feed=n_codes)
    assert sum(len(c) for c in out) == SAMPLES_PER_TOKEN * n_codes
    assert all(len(c) > 0 for c in out)
