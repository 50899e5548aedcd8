"""make-dummy: key sets and shapes against the real checkpoints, randomisation, determinism, file layout, CLI."""

from __future__ import annotations

import argparse
import io
import json
import math
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from realtime.commands import make_dummy as make_dummy_command
from token2wav.config import read_flow_yaml, tiny_hift_config
from token2wav.dummy import make_dummy_model_dir
from token2wav.dummy_onnx import campplus_model, speech_tokenizer_model
from token2wav.dummy_shapes import SIZES, flow_param_shapes, hift_param_shapes
from token2wav.frontend import load_speech_tokenizer
from token2wav.hift import HiFTGenerator, load_hift_state_dict

EXPECTED_FILES = {
    "flow.yaml",
    "flow.pt",
    "hift.pt",
    "campplus.onnx",
    "speech_tokenizer_v2_25hz.onnx",
    "DUMMY_RANDOM_WEIGHTS.txt",
}
FLOW_TAGS = (
    "!new:cosyvoice2.flow.flow.CausalMaskedDiffWithXvec",
    "!new:cosyvoice2.transformer.upsample_encoder_v2.UpsampleConformerEncoderV2",
    "!new:cosyvoice2.flow.flow_matching.CausalConditionalCFM",
    "!new:cosyvoice2.flow.decoder_dit.DiT",
)
STD_REL_TOL = 0.25  # sample std of a >= 1000-element N(0, s²) draw is within a few % of s
MIN_STAT_ELEMENTS = 1000


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dummy_model_dir(tmp_path_factory.mktemp("dummy") / "token2wav", "tiny", seed=0)


def _shapes_of(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return [(key, tuple(value.shape)) for key, value in state.items()]


def test_full_size_key_lists_match_recorded_checkpoints(data_dir: Path) -> None:
    flow = json.loads((data_dir / "flow_state_dict_shapes.json").read_text())
    hift = json.loads((data_dir / "hift_state_dict_shapes.json").read_text())
    assert flow_param_shapes(SIZES["full"]) == [(t["key"], tuple(t["shape"])) for t in flow["tensors"]]
    assert hift_param_shapes(SIZES["full"]) == [(t["legacy_key"], tuple(t["shape"])) for t in hift["tensors"]]
    assert sum(math.prod(s) for _, s in flow_param_shapes(SIZES["full"])) == flow["total_params"]
    assert sum(math.prod(s) for _, s in hift_param_shapes(SIZES["full"])) == hift["total_params"]


def test_tiny_key_lists_match_oracle_checkpoints(reference_tiny_dir: Path) -> None:
    assert flow_param_shapes(SIZES["tiny"]) == _shapes_of(reference_tiny_dir / "flow.pt")
    assert hift_param_shapes(SIZES["tiny"]) == _shapes_of(reference_tiny_dir / "hift.pt")


def test_tiny_dir_has_the_released_file_set_and_keys(tiny_dir: Path, reference_tiny_dir: Path) -> None:
    assert {p.name for p in tiny_dir.iterdir()} == EXPECTED_FILES
    assert _shapes_of(tiny_dir / "flow.pt") == _shapes_of(reference_tiny_dir / "flow.pt")
    assert _shapes_of(tiny_dir / "hift.pt") == _shapes_of(reference_tiny_dir / "hift.pt")


def test_flow_yaml_is_the_tagged_format_and_reads_safely(tiny_dir: Path) -> None:
    text = (tiny_dir / "flow.yaml").read_text()
    assert all(text.count(tag) == 1 for tag in FLOW_TAGS)
    assert text.count("!") == len(FLOW_TAGS)
    config = read_flow_yaml(tiny_dir / "flow.yaml")
    tiny = SIZES["tiny"]
    assert config.input_size == tiny.embed_dim
    assert config.encoder.num_blocks == tiny.encoder_blocks
    assert config.encoder.num_up_blocks == tiny.encoder_up_blocks
    assert config.encoder.attention_heads == tiny.encoder_heads
    assert config.encoder.linear_units == tiny.encoder_linear_units
    estimator = config.decoder.estimator
    assert (estimator.depth, estimator.num_heads, estimator.head_dim, estimator.hidden_size) == (2, 4, 16, 64)
    assert config.decoder.inference_cfg_rate == pytest.approx(0.7)


def test_every_flow_parameter_is_randomised(tiny_dir: Path) -> None:
    state = torch.load(tiny_dir / "flow.pt", weights_only=True)
    for key, tensor in state.items():
        assert tensor.dtype == torch.float32
        assert tensor.std() > 0.01, f"{key} looks constant"
        if tensor.dim() >= 2 and tensor.numel() >= MIN_STAT_ELEMENTS and key != "input_embedding.weight":
            fan_in = tensor.shape[1] * math.prod(tensor.shape[2:])
            assert float(tensor.std()) == pytest.approx(fan_in**-0.5, rel=STD_REL_TOL), key
    # the real constructor zero-initialises these; a dummy must not
    assert state["decoder.estimator.final_layer.linear.weight"].abs().min() > 0
    assert state["decoder.estimator.blocks.0.adaLN_modulation.1.weight"].abs().mean() > 0.05
    assert float(state["input_embedding.weight"].std()) == pytest.approx(1.0, rel=0.05)


def test_hift_weight_norm_gains_snake_and_conv_post(tiny_dir: Path) -> None:
    state = torch.load(tiny_dir / "hift.pt", weights_only=True)
    for key in (k for k in state if k.endswith(".weight_g")):
        prefix = key[: -len(".weight_g")]
        v = state[f"{prefix}.weight_v"]
        ratio = state[key].flatten() / v.flatten(1).norm(dim=1)
        low, high = (0.8 * 0.15, 1.2 * 0.15) if prefix.endswith("conv_post") else (0.8, 1.2)
        assert low - 1e-5 <= float(ratio.min()) and float(ratio.max()) <= high + 1e-5, prefix
    alphas = torch.cat([v for k, v in state.items() if k.endswith(".alpha")])
    assert 0.5 <= float(alphas.min()) and float(alphas.max()) <= 1.5
    assert float(state["generator.conv_post.bias"][:9].mean()) == pytest.approx(-1.5, abs=0.1)


def test_hift_f0_head_is_calibrated_to_voiced_pitch(tiny_dir: Path) -> None:
    vocoder = HiFTGenerator(tiny_hift_config(), deterministic_source=True)
    load_hift_state_dict(vocoder, torch.load(tiny_dir / "hift.pt", weights_only=True))
    mel = torch.randn(1, 80, 200, generator=torch.Generator().manual_seed(7)) * 2 - 5
    with torch.inference_mode():
        f0 = vocoder.f0_predictor(mel)
    voiced = float((f0 > 10).float().mean())
    assert voiced > 0.9
    assert 80 < float(f0.mean()) < 220


def test_same_seed_same_bytes_and_different_seed_differs(tmp_path: Path, tiny_dir: Path) -> None:
    again = make_dummy_model_dir(tmp_path / "again", "tiny", seed=0)
    for name in EXPECTED_FILES:
        assert (again / name).read_bytes() == (tiny_dir / name).read_bytes(), name
    other = make_dummy_model_dir(tmp_path / "other", "tiny", seed=1)
    for name in ("flow.pt", "hift.pt", "campplus.onnx", "speech_tokenizer_v2_25hz.onnx"):
        assert (other / name).read_bytes() != (tiny_dir / name).read_bytes(), name


def test_campplus_has_the_real_signature(tiny_dir: Path) -> None:
    session = onnxruntime.InferenceSession(
        str(tiny_dir / "campplus.onnx"), providers=["CPUExecutionProvider"]
    )
    (inp,) = session.get_inputs()
    assert inp.shape[2] == 80
    feats = np.random.default_rng(0).standard_normal((1, 123, 80)).astype(np.float32)
    (out,) = session.run(None, {inp.name: feats})
    assert out.shape == (1, 192) and out.dtype == np.float32
    assert np.isfinite(out).all() and np.abs(out).sum() > 0


@pytest.mark.parametrize(("width", "layers"), [(128, 2), (192, 1)])
def test_tokenizer_loader_infers_dimensions(tmp_path: Path, width: int, layers: int) -> None:
    import onnx

    path = tmp_path / "speech_tokenizer_v2_25hz.onnx"
    onnx.save(speech_tokenizer_model(np.random.default_rng(3), width, layers), str(path))
    model = load_speech_tokenizer(path)
    assert model.config.n_audio_state == width
    assert model.config.n_audio_layer == layers
    assert model.config.n_audio_head == width // 64
    mel = torch.randn(1, 128, 400, generator=torch.Generator().manual_seed(0))
    codes, lens = model.quantize(mel, torch.tensor([400]))
    assert int(lens[0]) == 100
    assert 0 <= int(codes.min()) and int(codes.max()) <= 6560


def test_campplus_builder_is_deterministic() -> None:
    a = campplus_model(np.random.default_rng(5), 32).SerializeToString()
    b = campplus_model(np.random.default_rng(5), 32).SerializeToString()
    assert a == b


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="realtime make-dummy", description=make_dummy_command.DESCRIPTION)
    make_dummy_command.add_arguments(parser)
    return parser


def test_cli_writes_tiny_dir_and_prints_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert make_dummy_command.run(_parser().parse_args(["--size", "tiny", "--seed", "3", str(out)])) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES


def test_cli_help_documents_every_flag() -> None:
    text = _parser().format_help()
    for flag in ("OUT", "--size", "--seed", "--quiet", "tiny", "full"):
        assert flag in text
    assert make_dummy_command.HELP


def test_progress_bar_draws_stages_on_its_stream() -> None:
    stream = io.StringIO()
    bar = make_dummy_command._ProgressBar(stream)
    bar("flow.pt", 0, 10)
    bar("flow.pt", 10, 10)
    bar("hift.pt", 5, 5)
    bar.close()
    lines = stream.getvalue().replace("\r", "\n").split("\n")
    assert any("flow.pt" in line and "100.0%" in line for line in lines)
    assert any("hift.pt" in line and "100.0%" in line for line in lines)


def test_bad_size_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size"):
        make_dummy_model_dir(tmp_path, "medium")  # type: ignore[arg-type]
