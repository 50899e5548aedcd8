"""The batched NSF source (`NSFSource.excitation`) equals the reference path, row by row.

The reference path (`NSFSource.forward` on the sample-rate f0, one stream at a time) is the one the oracle
tests hold to the Step-Audio2 vectors; here the batched path is held to it: the phase bit for bit, the
excitation within float rounding of the final 9 -> 1 projection, random draws included.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.token2wav.flow_oracle import (
    arrays,
    model,
    one_torch_thread,  # noqa: F401 - autouse fixture
)
from token2wav.hift import HiFTGenerator
from token2wav.nsf import frame_phase, harmonic_phase

SAMPLES_PER_FRAME = 480
SAMPLE_RATE = 24_000
# The batched path projects 9 -> 1 over the whole batch at once (another GEMM blocking than one row): a few
# float32 ulps of the excitation, which lies in (-1, 1).
EXCITATION_ATOL = 1e-6


def _f0_batch() -> torch.Tensor:
    """f0 per frame for 3 windows: the oracle's (voiced), a random voiced/unvoiced mix, and silence."""
    oracle = torch.from_numpy(arrays("offline")["f0"])[0, :58]
    rng = np.random.default_rng(5)
    mixed = torch.from_numpy(rng.uniform(60.0, 400.0, 58) * (rng.random(58) > 0.3)).float()
    return torch.stack([oracle.float(), mixed, torch.zeros(58)])


@pytest.mark.parametrize("frames", [8, 20, 58])
def test_frame_phase_equals_the_reference_phase_bit_for_bit(frames: int) -> None:
    f0 = _f0_batch()[:, :frames]
    harmonics = 9
    multiples = torch.arange(1, harmonics + 1, dtype=torch.float32)
    f0_up = F.interpolate(f0[:, None], scale_factor=SAMPLES_PER_FRAME, mode="nearest").transpose(1, 2)
    reference = harmonic_phase(f0_up * multiples.view(1, 1, -1), SAMPLE_RATE, SAMPLES_PER_FRAME, None)
    batched = frame_phase(f0, multiples, SAMPLE_RATE, SAMPLES_PER_FRAME)
    assert torch.equal(batched.transpose(1, 2), reference)
    # The initial phase of the reference never reaches the phase: it is added to a sample that the
    # down-sampling to frame rate does not read.
    offset = torch.full((3, harmonics), 0.37)
    assert torch.equal(
        harmonic_phase(f0_up * multiples.view(1, 1, -1), SAMPLE_RATE, SAMPLES_PER_FRAME, offset), reference
    )


def _hift(deterministic: bool) -> HiFTGenerator:
    hift = model().hift
    clone = HiFTGenerator(hift.config, deterministic_source=deterministic).eval()
    clone.load_state_dict(hift.state_dict())
    return clone


@pytest.mark.parametrize("deterministic", [True, False])
def test_batched_excitation_equals_the_per_stream_reference(deterministic: bool) -> None:
    """Three windows with their own generators and cached prefixes, in one pass or one by one."""
    hift = _hift(deterministic)
    mel = torch.from_numpy(arrays("stream")["chunk1_hift_mel_in"])  # [1, 80, 58]
    mels = torch.cat([mel, mel.flip(-1), mel * 0.8 - 1.0])
    prefixes: list[torch.Tensor | None] = [
        torch.full((1, 1, 3840), 0.125),
        None,
        torch.full((1, 1, 960), -0.5),
    ]

    def excite(batched: bool) -> torch.Tensor:
        hift.batched_source = batched
        generators: list[torch.Generator | None] = [
            torch.Generator().manual_seed(seed) for seed in (11, 12, 13)
        ]
        with torch.inference_mode():
            return hift.excite(mels, prefixes, generators)

    reference, batched = excite(False), excite(True)
    assert batched.shape == reference.shape == (3, 1, 58 * SAMPLES_PER_FRAME)
    assert float((batched - reference).abs().max()) <= EXCITATION_ATOL
    assert torch.equal(batched[0, :, :3840], prefixes[0][0])  # type: ignore[index]
    assert torch.equal(batched[2, :, :960], prefixes[2][0])  # type: ignore[index]
    if not deterministic:  # the noise is really there, and each row's comes from its own generator
        quiet = _hift(True)
        with torch.inference_mode():
            clean = quiet.excite(mels, prefixes, [None, None, None])
        assert float((batched - clean).abs().max()) > 1e-3


def test_a_row_does_not_depend_on_its_batch() -> None:
    """The same f0 with the same seed gives the same excitation alone and batched with other rows.

    (Through `HiFTGenerator.excite` the f0 predictor's convolutions run on the whole batch, whose summation
    order may depend on the batch size: that is the vocoder's, not the source's.)
    """
    source = _hift(False).m_source
    f0 = _f0_batch()
    with torch.inference_mode():
        alone = source.excitation(f0[1:2], deterministic=False, generators=[torch.Generator().manual_seed(3)])
        batch = source.excitation(
            f0,
            deterministic=False,
            generators=[torch.Generator().manual_seed(s) for s in (9, 3, 4)],
        )
    assert float((batch[1:2] - alone).abs().max()) <= EXCITATION_ATOL


def test_no_sine_for_samples_every_row_overwrites() -> None:
    """With every row's prefix given, the overwritten samples are the prefixes (no sine is computed there)."""
    hift = _hift(True)
    mel = torch.from_numpy(arrays("stream")["chunk1_hift_mel_in"])
    prefix = torch.full((1, 1, 3840), math.pi / 10)
    with torch.inference_mode():
        out = hift.excite(torch.cat([mel, mel]), [prefix, prefix], [None, None])
        plain = hift.excite(torch.cat([mel, mel]), [None, None], [None, None])
    assert torch.equal(out[:, :, :3840], prefix.expand(2, 1, 3840))
    assert float((out[:, :, 3840:] - plain[:, :, 3840:]).abs().max()) <= EXCITATION_ATOL
    with pytest.raises(ValueError, match="more than"):
        hift.m_source.excitation(
            torch.full((1, 8), 100.0),
            deterministic=True,
            generators=[None],
            prefixes=[torch.zeros(1, 1, 3841)],
        )
