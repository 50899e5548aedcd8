"""A make-dummy directory loads through `Token2Wav.from_dir` and speaks (random audio) end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from token2wav.dummy import make_dummy_model_dir
from token2wav.model import Token2Wav

SAMPLES_PER_CODE = 960
RATE = 24_000


def _voice(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * np.cumsum(140.0 * (1.0 + 0.1 * np.sin(2 * np.pi * 0.7 * t))) / RATE
    wave = sum(np.sin(k * phase) / k for k in range(1, 10))
    return (0.2 * wave * (0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2)).astype(np.float32)


@pytest.mark.slow
def test_tiny_dummy_dir_loads_and_decodes(tmp_path: Path) -> None:
    model_dir = make_dummy_model_dir(tmp_path / "token2wav", "tiny", seed=0)
    model = Token2Wav.from_dir(model_dir)
    voice = model.load_voice((_voice(1.5), RATE))
    assert model.load_voice((_voice(1.5), RATE)) is voice  # cached by PCM content
    codes = [0, 6560, 1, 2, 3, 4, 5, 6, 7, 8]
    pcm = model.decode(codes, voice)
    assert pcm.shape == (len(codes) * SAMPLES_PER_CODE,) and pcm.dtype == np.float32
    assert np.isfinite(pcm).all()
    assert float(np.abs(pcm).max()) <= 0.99
    assert float(np.sqrt(np.mean(pcm**2))) > 1e-3  # randomised weights make sound, not silence
