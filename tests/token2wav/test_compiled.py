"""The compiled arm (`DecodeOptions(compile=True)`): `torch.compile` of the DiT pass keeps parity.

Compiling the tiny model's pass takes tens of seconds on 2 cores, so one model is compiled for the module.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from tests.token2wav.flow_oracle import (
    PCM_ATOL,
    REFERENCE_TINY,
    arrays,
    gen_tokens,
    model,
    one_torch_thread,  # noqa: F401 - autouse fixture
    tensor,
    voice,
)
from token2wav.batch import StreamStep, Window, run_windows
from token2wav.model import Token2Wav, Voice
from token2wav.options import DecodeOptions
from token2wav.stream import ChunkSchedule

pytestmark = pytest.mark.slow

# The compiled graph fuses and reorders float32 operations (LayerNorms, GELU, the conv GEMMs): rounding of
# the mel, which the vocoder's float32 phase turns into a few int16 LSB (the oracle tolerance is 100).
COMPILED_LSB = 16


@functools.cache
def compiled_model() -> tuple[Token2Wav, Voice, float]:
    """A tiny oracle model with the compiled arm, warmed up (its graph built): (model, voice, warm-up s)."""
    t2w = Token2Wav.from_dir(
        REFERENCE_TINY,
        noise=tensor("cfm_noise", "cfm_noise"),
        deterministic_source=True,
        options=DecodeOptions(compile=True),
    )
    oracle = t2w.voice_from_features(
        tensor("inputs", "prompt_tokens"),
        tensor("inputs", "prompt_mel"),
        tensor("inputs", "spk_emb"),
        "oracle",
    )
    seconds = t2w.warmup(oracle)
    graphs = t2w.graphs
    assert graphs is not None
    graphs.serving_stance = "fail_on_recompile"  # from here on a missing graph is an error, not a fallback
    return t2w, oracle, seconds


def _lsb(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


def test_compiled_stream_batched_with_another_matches_the_oracle() -> None:
    t2w, oracle, _ = compiled_model()
    reference = arrays("stream")
    codes = gen_tokens()
    schedule = ChunkSchedule.reference()
    mine, other = t2w.start(oracle, schedule), t2w.start(oracle, ChunkSchedule())
    other_codes = codes[::-1]
    other_plan = ChunkSchedule().plan(len(other_codes))
    for i, (start, end, last) in enumerate(schedule.plan(len(codes))):
        windows = [Window(mine, codes[start:end], last)]
        if i < len(other_plan):
            a, b, other_last = other_plan[i]
            windows.append(Window(other, other_codes[a:b], other_last))
        pcm = run_windows(t2w, windows)[0]
        assert float(np.abs(pcm - reference[f"chunk{i}_pcm_f32"]).max()) <= PCM_ATOL


def test_compiled_batches_decode_like_eager_without_compiling_again() -> None:
    """Batches of every shape a server makes (first, steady and final windows of several streams, any
    number of streams) run on the graph built by the warm-up: no compile inside a response, same audio."""
    t2w, oracle, warmup_s = compiled_model()
    assert warmup_s > 0
    eager = model()
    codes = gen_tokens()
    plans = [
        (codes, ChunkSchedule(), 7),
        (codes[::-1][:61], ChunkSchedule.reference(), 11),
        (codes[5:40], ChunkSchedule(first_hop_tokens=6, hop_tokens=12), 5),
    ]

    def decode(t2w_: Token2Wav, voice_: Voice) -> list[np.ndarray]:
        streams = [t2w_.start(voice_, s) for _, s, _ in plans]
        outs: list[list[np.ndarray]] = [[] for _ in plans]
        offsets = [0] * len(plans)
        while not all(s.finished for s in streams):
            steps = []
            for i, ((c, _, feed), stream) in enumerate(zip(plans, streams, strict=True)):
                if stream.finished:
                    continue
                steps.append(
                    StreamStep(stream, c[offsets[i] : offsets[i] + feed], finish=offsets[i] + feed >= len(c))
                )
                offsets[i] += feed
            t2w_.step_many(steps)
            for step in steps:
                outs[streams.index(step.stream)] += step.out
        return [np.concatenate(o) for o in outs]

    compiled = decode(t2w, oracle)  # fail_on_recompile: raises if any batch needed a new graph
    reference = decode(eager, voice())
    for got, want in zip(compiled, reference, strict=True):
        assert _lsb(got, want) <= COMPILED_LSB
    # Switching the arm off and on again reuses the graph (a benchmark alternates arms).
    graphs = t2w.graphs
    t2w.set_options(DecodeOptions())
    assert t2w.graphs is None
    t2w.set_options(DecodeOptions(compile=True))
    assert t2w.graphs is graphs


@pytest.mark.gpu
def test_cuda_graph_arm_matches_eager_on_cuda() -> None:
    """gpu-check's CUDA-graph arm (compile mode "reduce-overhead"): the same audio as eager on the device."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    device = torch.device("cuda")
    noise = tensor("cfm_noise", "cfm_noise")
    graphs = Token2Wav.from_dir(
        REFERENCE_TINY,
        device,
        noise=noise,
        deterministic_source=True,
        options=DecodeOptions(compile=True, compile_mode="reduce-overhead"),
    )
    plain = Token2Wav.from_dir(REFERENCE_TINY, device, noise=noise, deterministic_source=True)
    outs = []
    for t2w in (graphs, plain):
        v = t2w.voice_from_features(
            tensor("inputs", "prompt_tokens"),
            tensor("inputs", "prompt_mel"),
            tensor("inputs", "spk_emb"),
            "o",
        )
        t2w.warmup(v)
        stream = t2w.start(v, ChunkSchedule.reference())
        outs.append(np.concatenate(t2w.push(stream, gen_tokens()) + t2w.finish(stream)))
    assert _lsb(outs[0], outs[1]) <= COMPILED_LSB
