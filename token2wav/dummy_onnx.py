"""Small random ONNX stand-ins for the two front models of a token2wav directory (used by `make-dummy`).

* `campplus_model`: the CAM++ signature, input `[B, T, 80]` float32 fbank -> output `[B, 192]` float32.
  A per-frame Linear + ReLU, statistics pooling (mean and standard deviation over time, as the real
  x-vector style models pool) and a Linear to 192. Mean pooling alone would be useless here: the frontend
  feeds mean-normalised fbank, whose time mean is zero.
* `speech_tokenizer_model`: an ONNX file that `s3tokenizer`'s converter (`s3tokenizer.onnx2torch`) turns into
  a complete `S3TokenizerV2` state dict. The converter names weights after graph nodes, so the graph uses the
  node names and the four special initialiser names of the released `speech_tokenizer_v2_25hz.onnx`
  (`onnx::Conv_2216..2219` for the two input convs, `onnx::MatMul_2536` and `quantizer.project_in.bias` for
  the FSQ projection). The graph is a valid, runnable simplification (no softmax attention, no rotary
  embedding): it exists to carry weights of the right names and shapes, not to be executed.

Both are deterministic functions of `numpy.random.Generator` state: the same seed gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ONNX_OPSET = 17  # first opset with LayerNormalization; ReduceMean still takes axes as an attribute
FBANK_BINS = 80
SPEAKER_DIM = 192
TOKENIZER_MELS = 128
FSQ_DIGITS = 8  # 3**8 codes
FSMN_KERNEL = 31
MLP_RATIO = 4
LN_GAIN_STD = 0.1
BIAS_STD = 0.05
_STD_EPS = 1e-5


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)


def _fan_in_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return _normal(rng, shape, 1.0 / np.sqrt(fan_in))


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="streamvoice-make-dummy"
    )
    onnx.checker.check_model(model)
    return model


def campplus_model(rng: np.random.Generator, hidden: int) -> onnx.ModelProto:
    """A random speaker-embedding model with CAM++'s input/output signature."""
    inits = [
        numpy_helper.from_array(_fan_in_normal(rng, (FBANK_BINS, hidden), FBANK_BINS), "frame.weight"),
        numpy_helper.from_array(_normal(rng, (hidden,), BIAS_STD), "frame.bias"),
        numpy_helper.from_array(_fan_in_normal(rng, (2 * hidden, SPEAKER_DIM), 2 * hidden), "embed.weight"),
        numpy_helper.from_array(_normal(rng, (SPEAKER_DIM,), BIAS_STD), "embed.bias"),
        numpy_helper.from_array(np.array(_STD_EPS, dtype=np.float32), "eps"),
    ]
    nodes = [
        helper.make_node("MatMul", ["input", "frame.weight"], ["frame_mm"], name="/frame/MatMul"),
        helper.make_node("Add", ["frame_mm", "frame.bias"], ["frame_pre"], name="/frame/Add"),
        helper.make_node("Relu", ["frame_pre"], ["frames"], name="/frame/Relu"),
        helper.make_node("ReduceMean", ["frames"], ["mean"], axes=[1], keepdims=0, name="/pool/Mean"),
        helper.make_node("Mul", ["frames", "frames"], ["frames_sq"], name="/pool/Square"),
        helper.make_node("ReduceMean", ["frames_sq"], ["mean_sq"], axes=[1], keepdims=0, name="/pool/MeanSq"),
        helper.make_node("Mul", ["mean", "mean"], ["sq_mean"], name="/pool/SqMean"),
        helper.make_node("Sub", ["mean_sq", "sq_mean"], ["var_raw"], name="/pool/Var"),
        helper.make_node("Relu", ["var_raw"], ["var"], name="/pool/VarClamp"),  # rounding can go below 0
        helper.make_node("Add", ["var", "eps"], ["var_eps"], name="/pool/VarEps"),
        helper.make_node("Sqrt", ["var_eps"], ["std"], name="/pool/Std"),
        helper.make_node("Concat", ["mean", "std"], ["stats"], axis=1, name="/pool/Concat"),
        helper.make_node("MatMul", ["stats", "embed.weight"], ["embed_mm"], name="/embed/MatMul"),
        helper.make_node("Add", ["embed_mm", "embed.bias"], ["output"], name="/embed/Add"),
    ]
    graph = helper.make_graph(
        nodes,
        "campplus_dummy",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["B", "T", FBANK_BINS])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["B", SPEAKER_DIM])],
        inits,
    )
    return _model(graph)


class _GraphBuilder:
    """Collects nodes and initialisers; each weight is consumed by the node whose name s3tokenizer reads."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def weight(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs: object) -> str:
        out = self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def linear(self, x: str, scope: str, fan_in: int, fan_out: int, *, bias: bool = True) -> str:
        # ONNX MatMul stores [in, out]; the converter transposes 2-D weights to torch's [out, in].
        w = self.weight(f"{scope}.w", _fan_in_normal(self.rng, (fan_in, fan_out), fan_in))
        y = self.node("MatMul", [x, w], f"{scope}/MatMul")
        if not bias:
            return y
        b = self.weight(f"{scope}.b", _normal(self.rng, (fan_out,), BIAS_STD))
        return self.node("Add", [b, y], f"{scope}/Add")

    def layer_norm(self, x: str, scope: str, width: int) -> str:
        gain = self.weight(f"{scope}.scale", 1.0 + _normal(self.rng, (width,), LN_GAIN_STD))
        bias = self.weight(f"{scope}.shift", _normal(self.rng, (width,), BIAS_STD))
        return self.node("LayerNormalization", [x, gain, bias], f"{scope}/LayerNormalization", axis=-1)


def speech_tokenizer_model(
    rng: np.random.Generator, width: int, layers: int, on_block: Callable[[int, int], None] | None = None
) -> onnx.ModelProto:
    """A random S3 tokenizer v2 weight container of the given width (a multiple of 64) and depth.

    Args:
        rng: the only source of randomness.
        width: model width (the released model: 1280).
        layers: transformer blocks (the released model: 6).
        on_block: progress callback `(done, total)` over the blocks plus the final serialisation check.
    """
    g = _GraphBuilder(rng)
    conv_fan_in = 3
    w1 = g.weight(
        "onnx::Conv_2216", _fan_in_normal(rng, (width, TOKENIZER_MELS, 3), TOKENIZER_MELS * conv_fan_in)
    )
    b1 = g.weight("onnx::Conv_2217", _normal(rng, (width,), BIAS_STD))
    x = g.node("Conv", ["feats", w1, b1], "/conv1/Conv", pads=[1, 1], strides=[2])
    w2 = g.weight("onnx::Conv_2218", _fan_in_normal(rng, (width, width, 3), width * conv_fan_in))
    b2 = g.weight("onnx::Conv_2219", _normal(rng, (width,), BIAS_STD))
    x = g.node("Conv", [x, w2, b2], "/conv2/Conv", pads=[1, 1], strides=[2])
    x = g.node("Transpose", [x], "/Transpose", perm=[0, 2, 1])  # [B, T, width]
    for i in range(layers):
        scope = f"/blocks.{i}"
        h = g.layer_norm(x, f"{scope}/attn_ln", width)
        q = g.linear(h, f"{scope}/attn/query", width, width)
        k = g.linear(h, f"{scope}/attn/key", width, width, bias=False)
        v = g.linear(h, f"{scope}/attn/value", width, width)
        v_t = g.node("Transpose", [v], f"{scope}/attn/fsmn_in", perm=[0, 2, 1])
        fsmn_w = g.weight(f"{scope}.fsmn", _fan_in_normal(rng, (width, 1, FSMN_KERNEL), FSMN_KERNEL))
        pad = (FSMN_KERNEL - 1) // 2
        memory = g.node(
            "Conv",
            [v_t, fsmn_w],
            f"{scope}/attn/fsmn_block/Conv",
            group=width,
            pads=[pad, FSMN_KERNEL - 1 - pad],
        )
        memory = g.node("Transpose", [memory], f"{scope}/attn/fsmn_out", perm=[0, 2, 1])
        mixed = g.node("Add", [g.node("Add", [q, k], f"{scope}/attn/qk"), v], f"{scope}/attn/qkv")
        out = g.linear(mixed, f"{scope}/attn/out", width, width)
        x = g.node("Add", [g.node("Add", [x, out], f"{scope}/attn_res"), memory], f"{scope}/fsmn_res")
        h = g.layer_norm(x, f"{scope}/mlp_ln", width)
        h = g.linear(h, f"{scope}/mlp/mlp.0", width, MLP_RATIO * width)
        h = g.node("Relu", [h], f"{scope}/mlp/act")
        h = g.linear(h, f"{scope}/mlp/mlp.2", MLP_RATIO * width, width)
        x = g.node("Add", [x, h], f"{scope}/mlp_res")
        if on_block is not None:
            on_block(i + 1, layers + 1)
    proj_w = g.weight("onnx::MatMul_2536", _fan_in_normal(rng, (width, FSQ_DIGITS), width))
    proj_b = g.weight("quantizer.project_in.bias", _normal(rng, (FSQ_DIGITS,), BIAS_STD))
    y = g.node("MatMul", [x, proj_w], "/quantizer/project_down/MatMul")
    g.nodes.append(helper.make_node("Add", [y, proj_b], ["fsq_logits"], name="/quantizer/project_down/Add"))
    graph = helper.make_graph(
        g.nodes,
        "speech_tokenizer_v2_dummy",
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, ["B", TOKENIZER_MELS, "T"])],
        [helper.make_tensor_value_info("fsq_logits", TensorProto.FLOAT, ["B", "T4", FSQ_DIGITS])],
        g.inits,
    )
    model = _model(graph)
    if on_block is not None:
        on_block(layers + 1, layers + 1)
    return model
