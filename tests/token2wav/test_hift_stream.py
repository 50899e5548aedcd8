"""Streaming vocoder stage: per-chunk parity with the oracle, sample accounting, state isolation, int16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from token2wav.config import read_reference_config
from token2wav.hift import HiFTGenerator, load_hift_state_dict
from token2wav.vocoder_stream import (
    MEL_CACHE_FRAMES,
    VocoderState,
    crossfade,
    pcm_float_to_int16,
    vocode_chunk,
)

# docs/TOKEN2WAV.md §7.2: HiFT in isolation; bit-identical on the oracle's CPU build, and within these bounds on
# another x86 ISA, where float32 F0 differences of ~5e-6 relative accumulate in the sine phase.
PCM_ATOL = 5e-4
INT16_LSB = 16
N_CHUNKS = 4
EXPECTED_EMITTED = (20160, 24000, 24000, 15360)  # docs/TOKEN2WAV.md §7.1


@pytest.fixture(scope="module")
def hift(reference_tiny_dir: Path) -> HiFTGenerator:
    config = read_reference_config(reference_tiny_dir / "config.yaml").hift
    model = HiFTGenerator(config, deterministic_source=True).eval()
    load_hift_state_dict(model, torch.load(reference_tiny_dir / "hift.pt", weights_only=True))
    return model


@pytest.fixture(scope="module")
def stream(reference_tiny_dir: Path) -> dict[str, np.ndarray]:
    return dict(np.load(reference_tiny_dir / "stream.npz"))


def _chunk_mels(stream: dict[str, np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(stream[f"chunk{i}_mel"]) for i in range(N_CHUNKS)]


def _run(hift: HiFTGenerator, mels: list[torch.Tensor]) -> list[np.ndarray]:
    state = VocoderState()
    out = []
    for i, mel in enumerate(mels):
        pcm, state = vocode_chunk(hift, state, mel, last=i == len(mels) - 1)
        out.append(pcm)
    return out


def test_streaming_chunks_match_oracle(hift: HiFTGenerator, stream: dict[str, np.ndarray]) -> None:
    state = VocoderState()
    for i, mel in enumerate(_chunk_mels(stream)):
        last = i == N_CHUNKS - 1
        # The HiFT input and raw output of this call, before the cross-fade and the withheld tail.
        mel_in = mel if state.mel is None else torch.cat([state.mel, mel], dim=-1)
        np.testing.assert_array_equal(mel_in.numpy(), stream[f"chunk{i}_hift_mel_in"])
        raw, _ = hift.inference(mel_in, state.source)
        np.testing.assert_allclose(raw.numpy(), stream[f"chunk{i}_hift_raw_speech"], rtol=0, atol=PCM_ATOL)

        pcm, state = vocode_chunk(hift, state, mel, last=last)
        assert pcm.dtype == np.float32
        assert len(pcm) == EXPECTED_EMITTED[i]
        np.testing.assert_allclose(pcm, stream[f"chunk{i}_pcm_f32"], rtol=0, atol=PCM_ATOL)
        pcm16 = pcm_float_to_int16(pcm)
        assert pcm16.dtype == np.dtype("<i2")
        diff = np.abs(pcm16.astype(np.int32) - stream[f"chunk{i}_pcm_i16"].astype(np.int32))
        assert diff.max() <= INT16_LSB


def test_sample_accounting(hift: HiFTGenerator, stream: dict[str, np.ndarray]) -> None:
    out = _run(hift, _chunk_mels(stream))
    assert tuple(len(p) for p in out) == EXPECTED_EMITTED
    assert sum(len(p) for p in out) == 83520 == stream["mel_all"].shape[-1] * hift.samples_per_frame


@pytest.mark.parametrize(
    "frames", [(20, 50, 50, 6), (50, 6), (16, 50, 24), (8, 8, 8)], ids=["first10", "two", "odd", "minimal"]
)
def test_sample_accounting_other_schedules(hift: HiFTGenerator, frames: tuple[int, ...]) -> None:
    """docs/TOKEN2WAV.md §5.3: first 480 F - 3840, middle 480 F, last 480 (8 + F); total 480 * frames."""
    torch.manual_seed(0)
    mels = [torch.randn(1, 80, f) for f in frames]
    out = _run(hift, mels)
    spf = hift.samples_per_frame
    tail = MEL_CACHE_FRAMES * spf
    expected = (
        [frames[0] * spf - tail] + [f * spf for f in frames[1:-1]] + [(MEL_CACHE_FRAMES + frames[-1]) * spf]
    )
    assert [len(p) for p in out] == expected
    assert sum(len(p) for p in out) == sum(frames) * spf


def test_single_final_chunk(hift: HiFTGenerator, reference_tiny_dir: Path) -> None:
    short = np.load(reference_tiny_dir / "stream_short.npz")
    pcm, state = vocode_chunk(hift, VocoderState(), torch.from_numpy(short["mel"]), last=True)
    assert len(pcm) == 9600
    np.testing.assert_allclose(pcm, short["pcm_f32"], rtol=0, atol=PCM_ATOL)
    diff = np.abs(pcm_float_to_int16(pcm).astype(np.int32) - short["pcm_i16"].astype(np.int32))
    assert diff.max() <= INT16_LSB
    assert state.started


def test_interleaved_states_are_isolated(hift: HiFTGenerator, stream: dict[str, np.ndarray]) -> None:
    """Two streams stepped alternately on one model give the same bytes as each alone."""
    mels_a = _chunk_mels(stream)
    torch.manual_seed(1)
    mels_b = [torch.randn(1, 80, f) for f in (12, 10, 10, 9)]
    alone_a, alone_b = _run(hift, mels_a), _run(hift, mels_b)
    state_a, state_b = VocoderState(), VocoderState()
    for i in range(N_CHUNKS):
        last = i == N_CHUNKS - 1
        before = state_a
        pcm_b, state_b = vocode_chunk(hift, state_b, mels_b[i], last=last)
        pcm_a, state_a = vocode_chunk(hift, state_a, mels_a[i], last=last)
        assert before is not state_a
        np.testing.assert_array_equal(pcm_a, alone_a[i])
        np.testing.assert_array_equal(pcm_b, alone_b[i])


def test_state_is_not_mutated(hift: HiFTGenerator, stream: dict[str, np.ndarray]) -> None:
    mels = _chunk_mels(stream)
    _, state = vocode_chunk(hift, VocoderState(), mels[0], last=False)
    assert state.mel is not None and state.source is not None and state.speech is not None
    snapshot = (state.mel.clone(), state.source.clone(), state.speech.clone())
    first, _ = vocode_chunk(hift, state, mels[1], last=False)
    again, _ = vocode_chunk(hift, state, mels[1], last=False)  # replaying a state gives the same audio
    np.testing.assert_array_equal(first, again)
    assert torch.equal(state.mel, snapshot[0])
    assert torch.equal(state.source, snapshot[1])
    assert torch.equal(state.speech, snapshot[2])
    assert state.mel.shape[-1] == MEL_CACHE_FRAMES
    assert state.pending_samples == MEL_CACHE_FRAMES * hift.samples_per_frame


def test_rejects_bad_chunks(hift: HiFTGenerator) -> None:
    with pytest.raises(ValueError, match="non-final"):
        vocode_chunk(hift, VocoderState(), torch.zeros(1, 80, MEL_CACHE_FRAMES - 1), last=False)
    with pytest.raises(ValueError, match="chunk_mel"):
        vocode_chunk(hift, VocoderState(), torch.zeros(1, 80, 0), last=True)
    with pytest.raises(ValueError, match="chunk_mel"):
        vocode_chunk(hift, VocoderState(), torch.zeros(2, 80, 10), last=True)
    pcm, _ = vocode_chunk(hift, VocoderState(), torch.zeros(1, 80, 3), last=True)  # short final is fine
    assert len(pcm) == 3 * hift.samples_per_frame


def test_crossfade_is_hamming_in_float64() -> None:
    n = 3840
    new = torch.full((1, 2 * n), 0.5)
    old = torch.full((1, n), 0.25)
    out = crossfade(new, old)
    w = np.hamming(2 * n)
    expected = (np.float32(0.5) * w[:n] + np.float32(0.25) * w[n:]).astype(np.float32)
    np.testing.assert_array_equal(out[0, :n].numpy(), expected)
    assert torch.equal(out[:, n:], new[:, n:])
    assert torch.equal(new, torch.full((1, 2 * n), 0.5))  # input untouched
    gain = w[:n] + w[n:]  # docs/TOKEN2WAV.md §5.2: the halves do not sum to one
    assert 1.0798 < gain.min() <= gain.max() <= 1.0801


def test_int16_truncates_toward_zero() -> None:
    x = np.array([0.0, 0.5, -0.5, 0.99999, -0.99999, 1.5, -1.5, 1e-5, -1e-5], dtype=np.float32)
    expected = np.array([0, 16383, -16383, 32766, -32766, 32767, -32767, 0, 0], dtype=np.int16)
    np.testing.assert_array_equal(pcm_float_to_int16(x), expected)
    assert pcm_float_to_int16(x).tobytes()[2:4] == (16383).to_bytes(2, "little")
