"""Shared loaders for the flow/stream/model tests: the tiny oracle model and its vectors, loaded once."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from token2wav.model import Token2Wav, Voice

REFERENCE_TINY = Path(__file__).resolve().parents[1] / "data" / "reference_tiny"

# docs/TOKEN2WAV.md §7.2: flow tensors atol 1e-4; end-to-end PCM atol ~3e-3 and int16 within ~100 LSB.
FLOW_ATOL = 1e-4
PCM_ATOL = 3e-3
INT16_LSB_TOL = 100


@functools.cache
def arrays(name: str) -> dict[str, np.ndarray]:
    """All arrays of one oracle .npz file (e.g. "stream")."""
    with np.load(REFERENCE_TINY / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


def tensor(name: str, key: str) -> torch.Tensor:
    """One oracle array as a tensor."""
    return torch.from_numpy(arrays(name)[key])


@functools.cache
def model() -> Token2Wav:
    """The tiny oracle model with the oracle's CFM noise and the deterministic NSF source."""
    noise = tensor("cfm_noise", "cfm_noise")
    return Token2Wav.from_dir(REFERENCE_TINY, noise=noise, deterministic_source=True)


@functools.cache
def voice() -> Voice:
    """The oracle's voice (prompt tokens, prompt mel, speaker embedding), primed."""
    return model().voice_from_features(
        tensor("inputs", "prompt_tokens"),
        tensor("inputs", "prompt_mel"),
        tensor("inputs", "spk_emb"),
        "oracle",
    )


def gen_tokens() -> list[int]:
    """The 87 generated codes of the oracle."""
    return [int(c) for c in arrays("inputs")["gen_tokens"]]


def max_abs(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """max |a - b| as a float (float64 arithmetic)."""
    x = a.detach().cpu().double().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, dtype=np.float64)
    y = b.detach().cpu().double().numpy() if isinstance(b, torch.Tensor) else np.asarray(b, dtype=np.float64)
    assert x.shape == y.shape, (x.shape, y.shape)
    return float(np.abs(x - y).max()) if x.size else 0.0


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run each test on one torch thread (tiny tensors; on a loaded 2-core box two threads spin 40x slower).

    Import this fixture into a test module to activate it there; the previous thread count is restored.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
