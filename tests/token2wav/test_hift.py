"""HiFT vocoder: checkpoint layout (full size, meta device), loader, and parity with the tiny oracle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from token2wav.config import F0PredictorConfig, HiftConfig, read_reference_config
from token2wav.errors import ModelLoadError
from token2wav.hift import (
    HiFTGenerator,
    convert_hift_state_dict,
    fold_weight_norm,
    load_hift,
    load_hift_state_dict,
    samples_per_frame,
)
from token2wav.nsf import harmonic_phase

# docs/TOKEN2WAV.md §7.2: bit-identical on the oracle's CPU build; on another x86 ISA (AVX-512 vs AVX2) the F0
# predictor's float32 convolutions differ by ~5e-6 relative, and the sine phase summed over 3.5 s turns that
# into ~1e-4 of a 0.1-amplitude source (measured: 1.1e-4 source, 4.4e-5 waveform on an Intel Xeon).
F0_ATOL = 1e-3  # Hz on values up to ~230 (measured 1.5e-4 across ISAs)
WAV_ATOL = 5e-4
SOURCE_ATOL = 5e-4
# Each stage fed the oracle's own input (the source from the oracle's f0: the phase arithmetic in reference
# order; the filter from the oracle's source) does not see the F0 predictor's rounding: it holds to 1e-5 on
# any CPU (measured 3e-8 and 1.2e-6 on the Intel Xeon).
STAGE_ATOL = 1e-5


@pytest.fixture(scope="module")
def shapes(data_dir: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((data_dir / "hift_state_dict_shapes.json").read_text())
    return loaded


@pytest.fixture(scope="module")
def tiny_config(reference_tiny_dir: Path) -> HiftConfig:
    return read_reference_config(reference_tiny_dir / "config.yaml").hift


@pytest.fixture(scope="module")
def tiny_hift(reference_tiny_dir: Path, tiny_config: HiftConfig) -> HiFTGenerator:
    model = HiFTGenerator(tiny_config, deterministic_source=True).eval()
    load_hift_state_dict(model, torch.load(reference_tiny_dir / "hift.pt", weights_only=True))
    return model


@pytest.fixture(scope="module")
def offline(reference_tiny_dir: Path) -> dict[str, np.ndarray]:
    return dict(np.load(reference_tiny_dir / "offline.npz"))


def _meta_state_dict(shapes: dict[str, Any], naming: str) -> dict[str, torch.Tensor]:
    return {t[naming]: torch.empty(t["shape"], device="meta") for t in shapes["tensors"]}


@pytest.mark.parametrize("naming", ["key", "legacy_key"])
def test_full_size_checkpoint_layout(shapes: dict[str, Any], naming: str) -> None:
    """Every full-size key (both namings) maps onto our module, with the recorded shapes, strictly."""
    with torch.device("meta"):
        model = HiFTGenerator()
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    converted = convert_hift_state_dict(_meta_state_dict(shapes, naming))
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours
    load_hift_state_dict(model, _meta_state_dict(shapes, naming))
    # Folding drops the gains: our parameters + the g tensors = the checkpoint's total.
    gains = sum(int(np.prod(t["shape"])) for t in shapes["tensors"] if t["key"].endswith("original0"))
    assert sum(p.numel() for p in model.parameters()) + gains == shapes["total_params"]
    assert len(converted) + sum(t["key"].endswith("original0") for t in shapes["tensors"]) == len(
        shapes["tensors"]
    )


def test_loader_accepts_mixed_naming(shapes: dict[str, Any]) -> None:
    """Prefix and weight-norm naming are independent: legacy names without the prefix load too."""
    with torch.device("meta"):
        model = HiFTGenerator()
    state = {
        t["legacy_key"].removeprefix("generator."): torch.empty(t["shape"], device="meta")
        for t in shapes["tensors"]
    }
    load_hift_state_dict(model, state)


def test_loader_errors_name_the_keys(reference_tiny_dir: Path, tiny_config: HiftConfig) -> None:
    state = torch.load(reference_tiny_dir / "hift.pt", weights_only=True)
    model = HiFTGenerator(tiny_config)
    missing = dict(state)
    del missing["generator.conv_post.bias"]
    with pytest.raises(ModelLoadError, match=r"missing \['conv_post\.bias'\]"):
        load_hift_state_dict(model, missing)
    extra = dict(state, **{"generator.bogus.weight": torch.zeros(1)})
    with pytest.raises(ModelLoadError, match=r"unexpected \['bogus\.weight'\]"):
        load_hift_state_dict(model, extra)
    unpaired = dict(state)
    del unpaired["generator.conv_pre.weight_g"]
    with pytest.raises(ModelLoadError, match="conv_pre"):
        load_hift_state_dict(model, unpaired)
    reshaped = dict(state, **{"generator.conv_post.bias": torch.zeros(3)})
    with pytest.raises(ModelLoadError, match=r"wrong shape .*conv_post\.bias"):
        load_hift_state_dict(model, reshaped)
    both = dict(state, **{"conv_post.bias": state["generator.conv_post.bias"]})
    with pytest.raises(ModelLoadError, match="twice"):
        load_hift_state_dict(model, both)
    bad_gain = dict(state, **{"generator.conv_pre.weight_g": torch.ones(3, 1, 1)})
    with pytest.raises(ModelLoadError, match="does not fit"):
        load_hift_state_dict(model, bad_gain)
    with pytest.raises(ModelLoadError, match="named tensor"):
        load_hift_state_dict(model, dict(state, **{"generator.conv_pre.bias": [0.0]}))
    with pytest.raises(ModelLoadError):
        load_hift_state_dict(HiFTGenerator(), state)  # tiny weights into the full-size module


@pytest.mark.parametrize("module_cls", [nn.Conv1d, nn.ConvTranspose1d])
def test_fold_matches_torch_weight_norm(module_cls: type[nn.Module]) -> None:
    """Folding equals torch's own weight norm, including dim 0 = in_channels for ConvTranspose1d."""
    torch.manual_seed(0)
    conv = parametrizations.weight_norm(module_cls(6, 4, 5))
    with torch.no_grad():
        conv.parametrizations.weight.original0.uniform_(0.5, 2.0)
    g = conv.parametrizations.weight.original0
    v = conv.parametrizations.weight.original1
    assert g.shape == (v.shape[0], 1, 1)
    torch.testing.assert_close(fold_weight_norm(g, v), conv.weight, rtol=0, atol=0)


def test_f0_matches_oracle(
    tiny_hift: HiFTGenerator, offline: dict[str, np.ndarray], reference_tiny_dir: Path
) -> None:
    debug = np.load(reference_tiny_dir / "debug.npz")
    stream = np.load(reference_tiny_dir / "stream.npz")
    with torch.inference_mode():
        f0 = tiny_hift.f0_predictor(torch.from_numpy(offline["mel"])).numpy()
        f0_chunk0 = tiny_hift.f0_predictor(torch.from_numpy(stream["chunk0_hift_mel_in"])).numpy()
    np.testing.assert_allclose(f0, offline["f0"], rtol=0, atol=F0_ATOL)
    np.testing.assert_allclose(f0_chunk0, debug["chunk0_f0"], rtol=0, atol=F0_ATOL)


def test_source_matches_oracle(
    tiny_hift: HiFTGenerator, offline: dict[str, np.ndarray], reference_tiny_dir: Path
) -> None:
    debug = np.load(reference_tiny_dir / "debug.npz")
    stream = np.load(reference_tiny_dir / "stream.npz")
    spf = samples_per_frame(tiny_hift.config)
    with torch.inference_mode():
        f0_up = F.interpolate(torch.from_numpy(offline["f0"])[:, None], scale_factor=spf, mode="nearest")
        from_f0 = tiny_hift.m_source(f0_up.transpose(1, 2), deterministic=True).transpose(1, 2).numpy()
        source = tiny_hift.source(torch.from_numpy(offline["mel"])).numpy()
        source_chunk0 = tiny_hift.source(torch.from_numpy(stream["chunk0_hift_mel_in"])).numpy()
    np.testing.assert_allclose(from_f0, offline["source"], rtol=0, atol=STAGE_ATOL)
    np.testing.assert_allclose(source, offline["source"], rtol=0, atol=SOURCE_ATOL)
    np.testing.assert_allclose(source_chunk0, debug["chunk0_source"], rtol=0, atol=SOURCE_ATOL)


def test_offline_waveform_matches_oracle(tiny_hift: HiFTGenerator, offline: dict[str, np.ndarray]) -> None:
    mel = torch.from_numpy(offline["mel"])
    speech, source = tiny_hift.inference(mel)
    assert speech.shape == (1, samples_per_frame(tiny_hift.config) * mel.shape[-1])
    assert source.shape == (1, 1, speech.shape[-1])
    np.testing.assert_allclose(speech.numpy(), offline["wav"], rtol=0, atol=WAV_ATOL)
    with torch.inference_mode():
        filtered = tiny_hift.decode(mel, torch.from_numpy(offline["source"]))
    np.testing.assert_allclose(filtered.numpy(), offline["wav"], rtol=0, atol=STAGE_ATOL)


def test_cache_source_overrides_the_start(tiny_hift: HiFTGenerator, offline: dict[str, np.ndarray]) -> None:
    mel = torch.from_numpy(offline["mel"][..., :20])
    cached = torch.full((1, 1, 100), 0.25)
    _, source = tiny_hift.inference(mel, cached)
    _, plain = tiny_hift.inference(mel)
    assert torch.equal(source[..., :100], cached)
    assert torch.equal(source[..., 100:], plain[..., 100:])
    with pytest.raises(ValueError, match="more than"):
        tiny_hift.inference(mel, torch.zeros(1, 1, 20 * 480 + 1))


def test_random_source_is_reproducible_per_generator(
    reference_tiny_dir: Path, tiny_config: HiftConfig, offline: dict[str, np.ndarray]
) -> None:
    model = HiFTGenerator(tiny_config, deterministic_source=False).eval()
    load_hift_state_dict(model, torch.load(reference_tiny_dir / "hift.pt", weights_only=True))
    mel = torch.from_numpy(offline["mel"][..., :30])
    with torch.inference_mode():
        a = model.source(mel, torch.Generator().manual_seed(7))
        b = model.source(mel, torch.Generator().manual_seed(7))
        c = model.source(mel, torch.Generator().manual_seed(8))
        model.deterministic_source = True
        d = model.source(mel)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # The random part is small additive noise (std 0.003 voiced, 0.033 unvoiced, before tanh/Linear).
    assert 0 < float((a - d).abs().max()) < 0.5


def test_noise_amplitude_voiced_and_unvoiced() -> None:
    """Noise std follows voicing: sigma where f0 > threshold, alpha/3 elsewhere (reference SineGen)."""
    model = HiFTGenerator(
        HiftConfig(base_channels=16, f0_predictor=F0PredictorConfig(cond_channels=16))
    ).eval()
    src = model.m_source
    with torch.no_grad():
        src.l_linear.weight.zero_()
        src.l_linear.weight[0, 0] = 1.0  # pass the fundamental's channel through
        src.l_linear.bias.zero_()
    frames = 200
    f0 = torch.zeros(1, frames * 480, 1)  # unvoiced: the sine is masked, only noise remains
    with torch.inference_mode():
        out = src(f0, deterministic=False, generator=torch.Generator().manual_seed(0))
        assert abs(float(torch.atanh(out).std()) - 0.1 / 3) < 1e-3
        silent = src(f0, deterministic=True)
    assert torch.count_nonzero(silent) == 0


def test_initial_phase_is_dropped_by_the_frame_rate_phase() -> None:
    """The reference adds random initial phases to sample 0 only, which linear down-sampling never reads."""
    fn = torch.full((1, 10 * 480, 9), 123.0) * torch.arange(1, 10)
    with_phase = harmonic_phase(fn, 24000, 480, torch.rand(1, 9, generator=torch.Generator().manual_seed(0)))
    without = harmonic_phase(fn, 24000, 480, None)
    assert torch.equal(with_phase, without)


def test_load_hift_from_file(reference_tiny_dir: Path, tiny_config: HiftConfig, tmp_path: Path) -> None:
    model = load_hift(reference_tiny_dir / "hift.pt", tiny_config, deterministic_source=True)
    assert not model.training
    assert model.deterministic_source
    with pytest.raises(ModelLoadError, match=r"hift\.pt"):
        load_hift(reference_tiny_dir / "hift.pt")  # full-size config, tiny weights
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_hift(tmp_path / "absent.pt", tiny_config)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_hift(tmp_path / "junk.pt", tiny_config)
