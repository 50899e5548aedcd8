"""`make_dummy_model_dir`: a complete token2wav model directory with seeded random weights.

The directory has the released layout (docs/TOKEN2WAV.md §1.1): `flow.yaml` in the real HyperPyYAML tagged
form, `flow.pt` (module key names), `hift.pt` (released naming: `generator.` prefix, `weight_g`/`weight_v`),
`campplus.onnx` and `speech_tokenizer_v2_25hz.onnx` (see `token2wav.dummy_onnx`). It lets the loader be tested
end to end without the real 1.2 GB of weights.

Key names and shapes come from `flow_param_shapes` / `hift_param_shapes`, functions of the sizes only; tests
check them against the recorded full-size key lists and the tiny oracle checkpoints, order included.

Every parameter is drawn as the reference oracle drew its weights (docs/TOKEN2WAV.md §7.1): matrices and
convolutions N(0, 1/fan_in), LayerNorm gains 1 + N(0, 0.1²), biases N(0, 0.05²), `pos_bias_u/v`
N(0, 0.2²), the token embedding N(0, 1); for HiFT the weight-norm gain is ‖v‖·U(0.8, 1.2), Snake α is
U(0.5, 1.5), `conv_post`'s gain is scaled by 0.15 and its 9 log-magnitude biases lowered by 1.5, and the f0
head is calibrated so the predicted f0 is about 150 ± 70 Hz (voiced). Nothing is left at the real
constructor's zero init (the DiT's adaLN and final layer), which would make the estimator output zero.

Sizes: "tiny" is the oracle's tiny model (tests/data/reference_tiny/config.yaml) with a 2-block, 128-wide
speech tokenizer; "full" is the released size everywhere, including a full 1280-wide, 6-block tokenizer
(≈124 M parameters, like the real 0.5 GB file). `PromptFrontend` reads the tokenizer's dimensions from its
weights, so both load through the same code.
"""

from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from token2wav.dummy_onnx import campplus_model, speech_tokenizer_model
from token2wav.dummy_shapes import (
    SIZES,
    ModelSizes,
    flow_param_shapes,
    flow_yaml_text,
    hift_param_shapes,
)

# (stage, done, total): stage is a file name, done/total count parameters (or steps) within that stage.
ProgressFn = Callable[[str, int, int], None]

FLOW_FILE = "flow.yaml"
FLOW_WEIGHTS = "flow.pt"
HIFT_WEIGHTS = "hift.pt"
CAMPPLUS_FILE = "campplus.onnx"
TOKENIZER_FILE = "speech_tokenizer_v2_25hz.onnx"
DUMMY_MARKER = "DUMMY_RANDOM_WEIGHTS.txt"  # says plainly that this directory is not a real model

LN_GAIN_STD = 0.1
BIAS_STD = 0.05
POS_BIAS_STD = 0.2
WN_GAIN_RANGE = (0.8, 1.2)  # weight-norm g = ‖v‖ · U(0.8, 1.2)
SNAKE_ALPHA_RANGE = (0.5, 1.5)
CONV_POST_GAIN = 0.15  # keeps the random vocoder's output around 0.03 RMS, far from clipping
CONV_POST_LOG_MAG_SHIFT = -1.5
ISTFT_MAGNITUDE_BINS = 9  # conv_post channels 0..8 are log-magnitudes (n_fft 16 -> 9 bins)
F0_TARGET_MEAN_HZ = 150.0
F0_TARGET_STD_HZ = 70.0
F0_CALIBRATION_FRAMES = 400
CALIBRATION_MEL_STD = 2.0  # log-mel statistics like the oracle's prompt mel: randn * 2 - 5
CALIBRATION_MEL_MEAN = -5.0
HIFT_PREFIX = "generator."


def _stream_seed(seed: int, stream: str) -> int:
    """An independent 63-bit seed per file, so changing one file's drawing never shifts another's."""
    digest = hashlib.sha256(f"streamvoice-dummy:{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _fan_in(shape: tuple[int, ...]) -> int:
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive


def _normal(gen: torch.Generator, shape: tuple[int, ...], std: float, mean: float = 0.0) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float32) * std + mean


def _uniform(gen: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    return torch.rand(shape, generator=gen, dtype=torch.float32) * (high - low) + low


def random_flow_state(
    sizes: ModelSizes, seed: int, progress: ProgressFn | None = None
) -> OrderedDict[str, torch.Tensor]:
    """A flow state dict (module key names) with every parameter randomised."""
    gen = torch.Generator().manual_seed(_stream_seed(seed, FLOW_WEIGHTS))
    shapes = flow_param_shapes(sizes)
    total = sum(int(np.prod(shape)) for _, shape in shapes)
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    done = 0
    for key, shape in shapes:
        if key == "input_embedding.weight":
            tensor = _normal(gen, shape, 1.0)
        elif key.endswith(("pos_bias_u", "pos_bias_v")):
            tensor = _normal(gen, shape, POS_BIAS_STD)
        elif key.endswith(".bias"):
            tensor = _normal(gen, shape, BIAS_STD)
        elif len(shape) == 1:  # every 1-D weight of the flow is a LayerNorm gain
            tensor = _normal(gen, shape, LN_GAIN_STD, mean=1.0)
        else:
            tensor = _normal(gen, shape, 1.0 / float(np.sqrt(_fan_in(shape))))
        state[key] = tensor
        done += tensor.numel()
        if progress is not None:
            progress(FLOW_WEIGHTS, done, total)
    return state


def _hift_v_fan_in(key: str, shape: tuple[int, ...], sizes: ModelSizes) -> int:
    if key.startswith(f"{HIFT_PREFIX}ups."):
        # ConvTranspose1d [in, out, k]: each output sample sums in * k / stride taps
        stage = int(key.split(".")[2])
        return shape[0] * shape[2] // sizes.hift_upsample_rates[stage]
    return _fan_in(shape)


def random_hift_state(
    sizes: ModelSizes, seed: int, progress: ProgressFn | None = None
) -> OrderedDict[str, torch.Tensor]:
    """A HiFT state dict in the released naming with every parameter randomised (see module docstring)."""
    gen = torch.Generator().manual_seed(_stream_seed(seed, HIFT_WEIGHTS))
    shapes = hift_param_shapes(sizes)
    total = sum(int(np.prod(shape)) for _, shape in shapes)
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    done = 0
    # weight_g precedes weight_v in the file; draw v first so g can be set from ‖v‖
    pending_g: dict[str, tuple[int, ...]] = {}
    g_shape: tuple[int, ...] = ()
    for key, shape in shapes:
        if key.endswith(".weight_g"):
            pending_g[key[: -len("_g")]] = shape
            state[key] = torch.empty(0)  # placeholder keeps the key order of the real file
            continue
        if key.endswith(".weight_v"):
            v = _normal(gen, shape, 1.0 / float(np.sqrt(_hift_v_fan_in(key, shape, sizes))))
            g_shape = pending_g.pop(key[: -len("_v")])
            norm = v.flatten(1).norm(dim=1).reshape(g_shape)
            state[key[: -len("_v")] + "_g"] = norm * _uniform(gen, g_shape, *WN_GAIN_RANGE)
            tensor = v
        elif key.endswith(".alpha"):
            tensor = _uniform(gen, shape, *SNAKE_ALPHA_RANGE)
        elif key.endswith(".bias"):
            tensor = _normal(gen, shape, BIAS_STD)
        else:
            tensor = _normal(gen, shape, 1.0 / float(np.sqrt(_fan_in(shape))))
        state[key] = tensor
        done += tensor.numel() + (int(np.prod(g_shape)) if key.endswith(".weight_v") else 0)
        if progress is not None:
            progress(HIFT_WEIGHTS, done, total)
    state[f"{HIFT_PREFIX}conv_post.weight_g"] *= CONV_POST_GAIN
    state[f"{HIFT_PREFIX}conv_post.bias"][:ISTFT_MAGNITUDE_BINS] += CONV_POST_LOG_MAG_SHIFT
    _calibrate_f0_head(state, gen)
    return state


def _weight_norm(state: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    g, v = state[f"{prefix}.weight_g"], state[f"{prefix}.weight_v"]
    weight: torch.Tensor = g * v / v.flatten(1).norm(dim=1).reshape(g.shape)
    return weight


def _calibrate_f0_head(state: dict[str, torch.Tensor], gen: torch.Generator) -> None:
    """Scale the random f0 classifier so f0 ≈ 150 ± 70 Hz on log-mel-like input (voiced, > 10 Hz)."""
    mel = _normal(gen, (1, 80, F0_CALIBRATION_FRAMES), CALIBRATION_MEL_STD, mean=CALIBRATION_MEL_MEAN)
    hidden = mel
    conv_indices = sorted(
        {int(key.split(".")[3]) for key in state if key.startswith(f"{HIFT_PREFIX}f0_predictor.condnet.")}
    )
    for index in conv_indices:
        prefix = f"{HIFT_PREFIX}f0_predictor.condnet.{index}"
        weight = _weight_norm(state, prefix)
        hidden = torch.nn.functional.elu(
            torch.nn.functional.conv1d(hidden, weight, state[f"{prefix}.bias"], padding=weight.shape[-1] // 2)
        )
    features = hidden[0].T  # [frames, channels]
    weight_key, bias_key = (
        f"{HIFT_PREFIX}f0_predictor.classifier.weight",
        f"{HIFT_PREFIX}f0_predictor.classifier.bias",
    )
    raw = features @ state[weight_key][0]
    scale = F0_TARGET_STD_HZ / float(raw.std().clamp_min(1e-6))
    state[weight_key] = state[weight_key] * scale
    state[bias_key] = torch.full_like(state[bias_key], F0_TARGET_MEAN_HZ - float(raw.mean()) * scale)


def make_dummy_model_dir(
    out: str | Path,
    size: Literal["tiny", "full"] = "tiny",
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> Path:
    """Write a complete random-weight token2wav directory to `out` (created if missing) and return it.

    Args:
        out: target directory; existing model files in it are overwritten.
        size: "tiny" (≈1 M flow parameters, for tests and the embedded demo) or "full" (released sizes,
            ≈1.2 GB on disk).
        seed: same seed and size give byte-identical files.
        progress: optional callback `(stage, done, total)`, called as each tensor is drawn.

    Returns:
        The directory path.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    sizes = SIZES[size]
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    (root / FLOW_FILE).write_text(flow_yaml_text(sizes), encoding="utf-8")
    _save_torch(random_flow_state(sizes, seed, progress), root / FLOW_WEIGHTS)
    _save_torch(random_hift_state(sizes, seed, progress), root / HIFT_WEIGHTS)
    campplus = campplus_model(np.random.default_rng(_stream_seed(seed, CAMPPLUS_FILE)), sizes.campplus_hidden)
    _save_onnx(campplus, root / CAMPPLUS_FILE, progress)
    tokenizer = speech_tokenizer_model(
        np.random.default_rng(_stream_seed(seed, TOKENIZER_FILE)),
        sizes.tokenizer_width,
        sizes.tokenizer_layers,
        on_block=None if progress is None else functools.partial(progress, TOKENIZER_FILE),
    )
    _save_onnx(tokenizer, root / TOKENIZER_FILE, progress)
    (root / DUMMY_MARKER).write_text(
        f"Random-weight token2wav directory written by `realtime make-dummy --size {size} --seed {seed}`.\n"
        "It has the released layout and shapes but produces no intelligible speech.\n",
        encoding="utf-8",
    )
    return root


def _save_torch(state: OrderedDict[str, torch.Tensor], path: Path) -> None:
    temp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, temp)
    temp.replace(path)


def _save_onnx(model: object, path: Path, progress: ProgressFn | None) -> None:
    data = model.SerializeToString()  # type: ignore[attr-defined]
    temp = path.with_suffix(path.suffix + ".tmp")
    temp.write_bytes(data)
    temp.replace(path)
    if progress is not None and path.name != TOKENIZER_FILE:  # the tokenizer reports per block
        progress(path.name, 1, 1)
