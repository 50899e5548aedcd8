"""Token2Wav public API: loading directories, offline decode parity, voices from wav, bad input."""

from __future__ import annotations

from pathlib import Path

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
    voice,
)
from token2wav import ChunkSchedule, InvalidCodes, ModelLoadError, Token2Wav, VoiceError, make_dummy_model_dir
from token2wav.model import check_codes

SAMPLE_RATE = 24000


def test_offline_decode_matches_oracle_waveform() -> None:
    wav = model().decode(gen_tokens(), voice())
    assert wav.dtype == np.float32
    assert wav.shape == (960 * 87,)
    assert float(np.abs(wav - arrays("offline")["wav"][0]).max()) <= PCM_ATOL


@pytest.mark.parametrize("codes", [[], [6561], [-1], [1, 2, 99999], [True], [1.5]])
def test_invalid_codes_raise(codes: list[object]) -> None:
    with pytest.raises(InvalidCodes):
        model().decode(codes, voice())  # type: ignore[arg-type]


def test_check_codes_accepts_numpy_and_tensors() -> None:
    assert check_codes(np.array([0, 6560]), 6561) == [0, 6560]
    assert check_codes(torch.tensor([5]), 6561) == [5]


def test_voice_shapes_are_checked() -> None:
    t2w = model()
    tokens = torch.tensor([[1, 2, 3, 4]])
    with pytest.raises(VoiceError):
        t2w.voice_from_features(tokens, torch.zeros(1, 7, 80), torch.zeros(1, 192), "bad-mel")
    with pytest.raises(VoiceError):
        t2w.voice_from_features(tokens[:, :2], torch.zeros(1, 4, 80), torch.zeros(1, 192), "too-short")
    with pytest.raises(VoiceError):
        t2w.voice_from_features(tokens, torch.zeros(1, 8, 80), torch.zeros(1, 100), "bad-spk")


def test_missing_files_raise_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError):
        Token2Wav.from_dir(tmp_path)
    (tmp_path / "config.yaml").write_bytes((REFERENCE_TINY / "config.yaml").read_bytes())
    with pytest.raises(ModelLoadError, match=r"flow\.pt"):
        Token2Wav.from_dir(tmp_path)


@pytest.fixture(scope="module")
def dummy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dummy_model_dir(tmp_path_factory.mktemp("t2w") / "token2wav", "tiny", seed=3)


def test_dummy_directory_loads_end_to_end_through_from_dir(dummy_dir: Path) -> None:
    t2w = Token2Wav.from_dir(dummy_dir)
    assert t2w.frontend is not None
    rng = np.random.default_rng(0)
    seconds = 2.0
    t = np.arange(int(seconds * 16000)) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 180 * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    voice_a = t2w.load_voice((wav, 16000))
    assert t2w.load_voice((wav, 16000)) is voice_a  # cached by content
    assert voice_a.prompt_mel.shape[1] == 2 * voice_a.prompt_tokens.shape[1]
    codes = [int(c) for c in rng.integers(0, 6561, 30)]
    stream = t2w.start(voice_a, ChunkSchedule())
    pcm = t2w.push(stream, codes) + t2w.finish(stream)
    assert sum(len(p) for p in pcm) == 960 * len(codes)
    assert all(p.dtype == np.int16 for p in pcm)
    with pytest.raises(VoiceError):
        t2w.load_voice((np.zeros(16000 * 2, dtype=np.float32), 16000))


def test_same_seed_same_bytes_with_random_source(dummy_dir: Path) -> None:
    t2w = Token2Wav.from_dir(dummy_dir, load_frontend=False)
    inputs = arrays("inputs")
    v = t2w.voice_from_features(
        torch.from_numpy(inputs["prompt_tokens"]),
        torch.from_numpy(inputs["prompt_mel"]),
        torch.from_numpy(inputs["spk_emb"]),
        "x",
    )
    codes = gen_tokens()[:30]

    def run(seed: int) -> np.ndarray:
        stream = t2w.start(v, seed=seed)
        return np.concatenate(t2w.push(stream, codes) + t2w.finish(stream))

    assert np.array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))
    with pytest.raises(VoiceError):
        t2w.load_voice(REFERENCE_TINY / "nothing.wav")
