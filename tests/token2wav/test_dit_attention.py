"""The DiT's ragged attention (one call over a batch's padded caches) equals the per-stream loop.

Held to each other on caches in every state a stream goes through (fresh on the voice's shared prompt keys,
trimmed with holes, detached from the prompt), and end to end: streams decoded with ragged attention match
the same streams decoded with the per-stream loop and the reference oracle.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch

from tests.token2wav.flow_oracle import (
    PCM_ATOL,
    REFERENCE_TINY,
    arrays,
    gen_tokens,
    one_torch_thread,  # noqa: F401 - autouse fixture
    tensor,
)
from token2wav.batch import StreamStep, Window, run_windows
from token2wav.dit_attention import AttentionPass, StreamRows
from token2wav.dit_cache import DitCache
from token2wav.model import Token2Wav, Voice
from token2wav.options import DecodeOptions
from token2wav.stream import ChunkSchedule

# One softmax over the union of a stream's key sets instead of two fused kernels merged by their
# log-sum-exp: float32 rounding of the attention output.
ATTENTION_ATOL = 1e-5
# End to end that rounding goes through 10 Euler steps and the vocoder's float32 phase: a few int16 LSB
# (docs/TOKEN2WAV.md §7.2 allows 100 against the oracle).
RAGGED_LSB = 16


@functools.cache
def ragged_model() -> Token2Wav:
    """A second tiny oracle model whose options these tests switch (the shared one stays as it is)."""
    noise = tensor("cfm_noise", "cfm_noise")
    return Token2Wav.from_dir(REFERENCE_TINY, noise=noise, deterministic_source=True)


def _voices(t2w: Token2Wav) -> tuple[Voice, Voice]:
    oracle = t2w.voice_from_features(
        tensor("inputs", "prompt_tokens"),
        tensor("inputs", "prompt_mel"),
        tensor("inputs", "spk_emb"),
        "oracle",
    )
    short = t2w.voice_from_features(
        tensor("inputs", "prompt_tokens")[:, :17],
        tensor("inputs", "prompt_mel")[:, :34] * 0.9,
        tensor("inputs", "spk_emb").flip(1),
        "short",
    )
    return oracle, short


def _streams_in_every_state(t2w: Token2Wav) -> list[DitCache]:
    """DiT caches of three streams: fresh on shared prompt keys; trimmed with holes in the shared prompt keys
    (a 200-frame prompt); trimmed with holes in its own keys after its prompt keys were copied in."""
    oracle, _ = _voices(t2w)
    long_prompt = t2w.voice_from_features(
        tensor("inputs", "prompt_tokens").repeat(1, 2),
        tensor("inputs", "prompt_mel").repeat(1, 2, 1),
        tensor("inputs", "spk_emb"),
        "long",
    )
    codes = gen_tokens()
    fresh = t2w.start(oracle)
    shared_holes = t2w.start(long_prompt, ChunkSchedule.reference())
    t2w.push(shared_holes, codes[:78])
    own_holes = t2w.start(oracle, ChunkSchedule.reference())
    t2w.push(own_holes, codes[:78])
    assert own_holes.flow.dit.shared_k is None  # its prompt keys were copied in: one key set left
    assert shared_holes.flow.dit.shared_k is not None and fresh.flow.dit.shared_k is not None
    return [fresh.flow.dit, shared_holes.flow.dit, own_holes.flow.dit]


@torch.inference_mode()
def test_ragged_attention_equals_the_per_stream_loop() -> None:
    t2w = ragged_model()
    caches = _streams_in_every_state(t2w)
    config = t2w.flow.config.decoder.estimator
    frames = [20, 50, 36]
    generator = torch.Generator().manual_seed(0)
    shape = (2 * len(caches), config.num_heads, max(frames), config.head_dim)
    q, k, v = (torch.randn(shape, generator=generator) for _ in range(3))
    step, block = 3, 1
    outs, written = {}, {}
    for mode in ("per-stream", "ragged"):
        mine = [copy.deepcopy(cache) for cache in caches]
        rows = [StreamRows(cache, cache.begin_chunk(n), n) for cache, n in zip(mine, frames, strict=True)]
        outs[mode] = AttentionPass(rows, step, mode)(q, k, v, block)
        written[mode] = [cache.step_keys(step, block)[:2] for cache in mine]
    assert [r.slots.shared_span > 0 for r in rows] == [True, True, False]
    assert rows[1].slots.shared_bias is not None  # holes in the shared prompt keys
    assert rows[2].slots.bias is not None  # holes in the own keys
    for i, n in enumerate(frames):
        pair = slice(2 * i, 2 * i + 2)
        got, want = outs["ragged"][pair, :, :n], outs["per-stream"][pair, :, :n]
        assert float((got - want).abs().max()) <= ATTENTION_ATOL
        # the same new keys in the same slots (only those: a buffer grown for this chunk holds uninitialised
        # memory in the slots no key was written to, different in each copy)
        new_slots = rows[i].slots.index
        for a, b in zip(written["ragged"][i], written["per-stream"][i], strict=True):
            assert torch.equal(a.index_select(-2, new_slots), b.index_select(-2, new_slots))
    assert torch.isfinite(outs["ragged"]).all()  # padded frames stay finite


def _lsb(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


def test_ragged_batches_decode_like_the_per_stream_loop_and_the_oracle() -> None:
    t2w = ragged_model()
    oracle, short = _voices(t2w)
    codes = gen_tokens()
    plans = [(oracle, codes, ChunkSchedule()), (short, codes[::-1][:61], ChunkSchedule.reference())]

    def decode(options: DecodeOptions) -> list[np.ndarray]:
        t2w.set_options(options)
        streams = [t2w.start(v, s) for v, _, s in plans]
        outs: list[list[np.ndarray]] = [[] for _ in plans]
        for at in range(0, len(codes), 9):
            steps = [
                StreamStep(stream, c[at : at + 9], finish=at + 9 >= len(c))
                for stream, (_, c, _) in zip(streams, plans, strict=True)
                if not stream.finished
            ]
            t2w.step_many(steps)
            for step in steps:
                outs[streams.index(step.stream)] += step.out
        return [np.concatenate(o) for o in outs]

    try:
        loop = decode(DecodeOptions())
        ragged = decode(DecodeOptions(attention="ragged"))
        for a, b in zip(ragged, loop, strict=True):
            assert _lsb(a, b) <= RAGGED_LSB
        # The oracle stream, batched with another voice's stream under ragged attention, against the oracle.
        reference = arrays("stream")
        schedule = ChunkSchedule.reference()
        mine, other = t2w.start(oracle, schedule), t2w.start(short, schedule)
        for i, (start, end, last) in enumerate(schedule.plan(len(codes))):
            pcm = run_windows(
                t2w, [Window(mine, codes[start:end], last), Window(other, codes[start:end], last)]
            )
            assert float(np.abs(pcm[0] - reference[f"chunk{i}_pcm_f32"]).max()) <= PCM_ATOL
    finally:
        t2w.set_options(DecodeOptions())


def test_options_refuse_an_unknown_attention() -> None:
    from token2wav.errors import Token2WavError

    with pytest.raises(Token2WavError, match="attention"):
        DecodeOptions(attention="flash")  # type: ignore[arg-type]
