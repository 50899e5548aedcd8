"""Streams decoded in one batch equal the same streams decoded alone, and the reference oracle."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from tests.token2wav.flow_oracle import (
    PCM_ATOL,
    arrays,
    gen_tokens,
    model,
    one_torch_thread,  # noqa: F401 - autouse fixture
    tensor,
    voice,
)
from token2wav import batch as batch_module
from token2wav.batch import StreamStep, Window, run_windows
from token2wav.errors import InvalidCodes, StreamError
from token2wav.model import Token2Wav, Voice
from token2wav.stream import ChunkSchedule, Token2WavStream

# Batched GEMMs and convs may sum in another order than the lone call: a few float32 ulps on the mel,
# far below one int16 LSB at the tiny model's scale; the bound is the oracle parity tolerance.
BATCH_PCM_ATOL = 1e-4


@functools.cache
def other_voice() -> Voice:
    """A second voice with a different prompt length (P = 2 x 17 frames) and speaker embedding."""
    tokens = tensor("inputs", "prompt_tokens")[:, :17]
    mel = tensor("inputs", "prompt_mel")[:, :34] * 0.9
    spk = tensor("inputs", "spk_emb").flip(1)
    return model().voice_from_features(tokens, mel, spk, "other")


def _alone(voice_: Voice, codes: list[int], schedule: ChunkSchedule, feed: int) -> list[np.ndarray]:
    t2w = model()
    stream = t2w.start(voice_, schedule)
    out: list[np.ndarray] = []
    for i in range(0, len(codes), feed):
        out += t2w.push(stream, codes[i : i + feed])
    return out + t2w.finish(stream)


def _lsb(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


def test_batched_streams_equal_streams_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three voices/lengths/schedules at different points of their schedules, fed as one batch per turn."""
    t2w = model()
    batches: list[list[Window]] = []

    def recording(model_: Token2Wav, windows: list[Window]) -> list[np.ndarray]:
        batches.append(list(windows))
        return run_windows(model_, windows)

    plans = [
        (voice(), gen_tokens(), ChunkSchedule(), 7),  # starts at once, first hop 10
        (other_voice(), list(reversed(gen_tokens()))[:61], ChunkSchedule.reference(), 11),
        (voice(), gen_tokens()[5:40], ChunkSchedule(first_hop_tokens=6, hop_tokens=12), 5),
    ]
    alone = [np.concatenate(_alone(v, c, s, f)) for v, c, s, f in plans]
    monkeypatch.setattr(batch_module, "run_windows", recording)
    streams = [t2w.start(v, s) for v, _, s, _ in plans]
    outs: list[list[np.ndarray]] = [[] for _ in plans]
    offsets = [0, 0, 0]
    starts = [0, 2, 4]  # turns at which each stream joins: batches mix first, steady and final windows
    turn = 0
    while any(o <= len(c) for o, (_, c, _, _) in zip(offsets, plans, strict=True)):
        steps, owners = [], []
        for i, (_, codes, _, feed) in enumerate(plans):
            if turn < starts[i] or offsets[i] > len(codes):
                continue
            chunk = codes[offsets[i] : offsets[i] + feed]
            offsets[i] += feed
            steps.append(StreamStep(streams[i], chunk, finish=offsets[i] >= len(codes)))
            if steps[-1].finish:
                offsets[i] = len(codes) + 1
            owners.append(i)
        t2w.step_many(steps)
        for i, step in zip(owners, steps, strict=True):
            outs[i] += step.out
        turn += 1
    for got, want in zip(outs, alone, strict=True):
        assert _lsb(np.concatenate(got), want) <= 1
    # The schedule really mixed streams: batches of 2+ windows, one holding a final and a non-final window.
    assert max(len(b) for b in batches) >= 2
    assert any({w.last for w in b} == {True, False} for b in batches)
    assert any(len({w.stream.flow.dit.prompt_frames for w in b}) == 2 for b in batches)


def test_batched_windows_match_reference_oracle() -> None:
    """The oracle stream (reference schedule), batched with a stream of another voice, reproduces its PCM."""
    t2w = model()
    ref = arrays("stream")
    codes = gen_tokens()
    schedule = ChunkSchedule.reference()
    oracle = t2w.start(voice(), schedule)
    other = t2w.start(other_voice(), ChunkSchedule())
    other_codes = list(reversed(codes))
    other_plan = ChunkSchedule().plan(len(other_codes))
    for i, (start, end, last) in enumerate(schedule.plan(len(codes))):
        windows = [Window(oracle, codes[start:end], last)]
        if i < len(other_plan):
            o_start, o_end, o_last = other_plan[i]
            windows.append(Window(other, other_codes[o_start:o_end], o_last))
        pcm = run_windows(t2w, windows)[0]
        assert float(np.abs(pcm - ref[f"chunk{i}_pcm_f32"]).max()) <= PCM_ATOL


def test_batched_mel_and_caches_equal_alone() -> None:
    """Flow-level check: mel and the updated DiT keys of each stream match a lone call closely."""
    t2w = model()
    windows = [gen_tokens()[:13], gen_tokens()[20:48]]
    voices = [voice(), other_voice()]
    lone = [t2w.start(v, ChunkSchedule()) for v in voices]
    together = [t2w.start(v, ChunkSchedule()) for v in voices]
    lone_pcm = [run_windows(t2w, [Window(s, w, False)])[0] for s, w in zip(lone, windows, strict=True)]
    both_pcm = run_windows(t2w, [Window(s, w, False) for s, w in zip(together, windows, strict=True)])
    for a, b, s1, s2 in zip(lone_pcm, both_pcm, lone, together, strict=True):
        assert float(np.abs(a - b).max()) <= BATCH_PCM_ATOL
        keys_a, keys_b = s1.flow.dit.packed_attention(), s2.flow.dit.packed_attention()
        assert torch.allclose(keys_a, keys_b, atol=1e-5)
        assert torch.allclose(s1.flow.dit.conv1, s2.flow.dit.conv1, atol=1e-5)


def test_batch_rejects_duplicates_finished_streams_and_bad_codes() -> None:
    t2w = model()
    stream = t2w.start(voice())
    with pytest.raises(StreamError):
        t2w.step_many([StreamStep(stream, [1]), StreamStep(stream, [2])])
    other = t2w.start(voice())
    with pytest.raises(InvalidCodes):
        t2w.step_many([StreamStep(other, [1, 2]), StreamStep(stream, [6561])])
    assert other.pending == [] and stream.pending == []  # nothing appended when any step is invalid
    t2w.finish(other)
    with pytest.raises(StreamError):
        t2w.step_many([StreamStep(other, [1])])


def test_stream_start_shares_the_voice_and_copies_nothing_large() -> None:
    t2w = model()
    v = voice()
    stream: Token2WavStream = t2w.start(v)
    dit = stream.flow.dit
    assert dit.shared_k is not None and dit.shared_k.data_ptr() == v.primed.dit.k.data_ptr()
    assert dit.capacity == 0  # own key buffers come with the first chunk
    assert all(not kv.owned for kv in stream.flow.encoder.layers)
    before = v.primed.dit.packed_attention().clone()
    t2w.push(stream, gen_tokens()[:40])
    assert torch.equal(v.primed.dit.packed_attention(), before)
    assert all(kv.owned for kv in stream.flow.encoder.layers)
    assert dit.capacity <= dit.max_slots if dit.max_slots is not None else False
    # Once only the prompt's last 100 frames are left in use, they move into the stream's own buffer.
    t2w.push(stream, gen_tokens())
    assert dit.shared_k is None and all(s < dit.capacity for s in dit.order)
    assert torch.equal(v.primed.dit.packed_attention(), before)
