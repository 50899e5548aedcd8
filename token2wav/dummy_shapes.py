"""Sizes, checkpoint key/shape lists and `flow.yaml` text of the token2wav model, as pure functions.

`flow_param_shapes(sizes)` and `hift_param_shapes(sizes)` list every tensor of `flow.pt` / `hift.pt` in the
order the released files store them; tests compare them with the recorded full-size lists
(tests/data/*_state_dict_shapes.json) and the tiny oracle checkpoints. `flow_yaml_text(sizes)` writes the
HyperPyYAML file with its four constructor tags, like the released `flow.yaml` (docs/TOKEN2WAV.md §1.2).
"""

from __future__ import annotations

from dataclasses import dataclass

VOCAB_SIZE = 6561
MEL_BINS = 80
SPK_EMBED_DIM = 192
PRE_LOOKAHEAD = 3
LOOKAHEAD_CONV1_KERNEL = PRE_LOOKAHEAD + 1
LOOKAHEAD_CONV2_KERNEL = 3
UP_STRIDE = 2
UP_CONV_KERNEL = 2 * UP_STRIDE + 1
DIT_IN_CHANNELS = 320  # x ‖ μ ‖ spk ‖ cond, 80 each
DIT_MLP_RATIO = 4
DIT_TIME_FREQ_DIM = 256
DIT_ADALN_CHUNKS = 9  # shift/scale/gate for attention, conv and MLP
DIT_FINAL_ADALN_CHUNKS = 2
DIT_CONV_KERNEL = 3
HIFT_HARMONICS = 8  # + the fundamental = 9 sines merged by m_source.l_linear
HIFT_ISTFT_CHANNELS = 18  # n_fft 16 -> 9 magnitude + 9 phase channels
HIFT_PRE_KERNEL = 7
HIFT_POST_KERNEL = 7
HIFT_F0_LAYERS = 5
HIFT_F0_KERNEL = 3
HIFT_PREFIX = "generator."

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ModelSizes:
    """The hyper-parameters that differ between the tiny oracle and the released model."""

    embed_dim: int  # token embedding = encoder input/output width
    encoder_heads: int
    encoder_linear_units: int
    encoder_blocks: int
    encoder_up_blocks: int
    dit_depth: int
    dit_heads: int
    dit_head_dim: int
    dit_hidden: int
    hift_base_channels: int
    f0_cond_channels: int
    tokenizer_width: int  # S3 tokenizer v2 width (multiple of its 64-wide heads)
    tokenizer_layers: int
    campplus_hidden: int
    hift_upsample_rates: tuple[int, ...] = (8, 5, 3)
    hift_upsample_kernels: tuple[int, ...] = (16, 11, 7)
    hift_resblock_kernels: tuple[int, ...] = (3, 7, 11)
    hift_source_resblock_kernels: tuple[int, ...] = (7, 7, 11)
    hift_resblock_dilations: int = 3  # [1, 3, 5] for every resblock

    @property
    def encoder_head_dim(self) -> int:
        """Per-head width of the Conformer attention."""
        return self.embed_dim // self.encoder_heads


SIZES: dict[str, ModelSizes] = {
    "tiny": ModelSizes(
        embed_dim=64,
        encoder_heads=4,
        encoder_linear_units=128,
        encoder_blocks=2,
        encoder_up_blocks=1,
        dit_depth=2,
        dit_heads=4,
        dit_head_dim=16,
        dit_hidden=64,
        hift_base_channels=64,
        f0_cond_channels=64,
        tokenizer_width=128,
        tokenizer_layers=2,
        campplus_hidden=64,
    ),
    "full": ModelSizes(
        embed_dim=512,
        encoder_heads=8,
        encoder_linear_units=2048,
        encoder_blocks=6,
        encoder_up_blocks=4,
        dit_depth=16,
        dit_heads=8,
        dit_head_dim=64,
        dit_hidden=512,
        hift_base_channels=512,
        f0_cond_channels=512,
        tokenizer_width=1280,
        tokenizer_layers=6,
        campplus_hidden=256,
    ),
}


def _linear(prefix: str, n_in: int, n_out: int, bias: bool = True) -> list[tuple[str, Shape]]:
    out: list[tuple[str, Shape]] = [(f"{prefix}.weight", (n_out, n_in))]
    if bias:
        out.append((f"{prefix}.bias", (n_out,)))
    return out


def _norm(prefix: str, width: int) -> list[tuple[str, Shape]]:
    return [(f"{prefix}.weight", (width,)), (f"{prefix}.bias", (width,))]


def _conv(prefix: str, n_in: int, n_out: int, kernel: int) -> list[tuple[str, Shape]]:
    return [(f"{prefix}.weight", (n_out, n_in, kernel)), (f"{prefix}.bias", (n_out,))]


def _conformer_layer(prefix: str, s: ModelSizes) -> list[tuple[str, Shape]]:
    d = s.embed_dim
    attn = f"{prefix}.self_attn"
    return [
        (f"{attn}.pos_bias_u", (s.encoder_heads, s.encoder_head_dim)),
        (f"{attn}.pos_bias_v", (s.encoder_heads, s.encoder_head_dim)),
        *_linear(f"{attn}.linear_q", d, d),
        *_linear(f"{attn}.linear_k", d, d),
        *_linear(f"{attn}.linear_v", d, d),
        *_linear(f"{attn}.linear_out", d, d),
        *_linear(f"{attn}.linear_pos", d, d, bias=False),
        *_linear(f"{prefix}.feed_forward.w_1", d, s.encoder_linear_units),
        *_linear(f"{prefix}.feed_forward.w_2", s.encoder_linear_units, d),
        *_norm(f"{prefix}.norm_ff", d),
        *_norm(f"{prefix}.norm_mha", d),
    ]


def _dit_block(prefix: str, s: ModelSizes) -> list[tuple[str, Shape]]:
    h, inner = s.dit_hidden, s.dit_heads * s.dit_head_dim
    return [
        *_linear(f"{prefix}.attn.to_q", h, inner),
        *_linear(f"{prefix}.attn.to_k", h, inner),
        *_linear(f"{prefix}.attn.to_v", h, inner),
        *_norm(f"{prefix}.attn.q_norm", s.dit_head_dim),
        *_norm(f"{prefix}.attn.k_norm", s.dit_head_dim),
        *_linear(f"{prefix}.attn.proj", inner, h),
        *_linear(f"{prefix}.mlp.fc1", h, DIT_MLP_RATIO * h),
        *_linear(f"{prefix}.mlp.fc2", DIT_MLP_RATIO * h, h),
        *_conv(f"{prefix}.conv.block.1", h, h, DIT_CONV_KERNEL),
        *_norm(f"{prefix}.conv.block.3", h),
        *_conv(f"{prefix}.conv.block.6", h, h, DIT_CONV_KERNEL),
        *_linear(f"{prefix}.adaLN_modulation.1", h, DIT_ADALN_CHUNKS * h),
    ]


def flow_param_shapes(s: ModelSizes) -> list[tuple[str, Shape]]:
    """Every `flow.pt` key with its shape, in the released file's order."""
    d = s.embed_dim
    enc = "encoder"
    est = "decoder.estimator"
    shapes: list[tuple[str, Shape]] = [
        ("input_embedding.weight", (VOCAB_SIZE, d)),
        *_linear("spk_embed_affine_layer", SPK_EMBED_DIM, MEL_BINS),
        *_linear(f"{enc}.embed.out.0", d, d),
        *_norm(f"{enc}.embed.out.1", d),
        *_norm(f"{enc}.after_norm", d),
        *_conv(f"{enc}.pre_lookahead_layer.conv1", d, d, LOOKAHEAD_CONV1_KERNEL),
        *_conv(f"{enc}.pre_lookahead_layer.conv2", d, d, LOOKAHEAD_CONV2_KERNEL),
    ]
    for i in range(s.encoder_blocks):
        shapes += _conformer_layer(f"{enc}.encoders.{i}", s)
    shapes += _conv(f"{enc}.up_layer.conv", d, d, UP_CONV_KERNEL)
    shapes += _linear(f"{enc}.up_embed.out.0", d, d) + _norm(f"{enc}.up_embed.out.1", d)
    for i in range(s.encoder_up_blocks):
        shapes += _conformer_layer(f"{enc}.up_encoders.{i}", s)
    shapes += _linear("encoder_proj", d, MEL_BINS)
    h = s.dit_hidden
    shapes += _linear(f"{est}.t_embedder.mlp.0", DIT_TIME_FREQ_DIM, h)
    shapes += _linear(f"{est}.t_embedder.mlp.2", h, h)
    shapes += _linear(f"{est}.in_proj", DIT_IN_CHANNELS, h)
    for i in range(s.dit_depth):
        shapes += _dit_block(f"{est}.blocks.{i}", s)
    shapes += _linear(f"{est}.final_layer.adaLN_modulation.1", h, DIT_FINAL_ADALN_CHUNKS * h)
    shapes += _linear(f"{est}.final_layer.linear", h, MEL_BINS)
    return shapes


def _wn_conv(prefix: str, n_in: int, n_out: int, kernel: int) -> list[tuple[str, Shape]]:
    """Weight-normalised Conv1d in the legacy naming: bias, weight_g [out,1,1], weight_v [out,in,k]."""
    return [
        (f"{prefix}.bias", (n_out,)),
        (f"{prefix}.weight_g", (n_out, 1, 1)),
        (f"{prefix}.weight_v", (n_out, n_in, kernel)),
    ]


def _resblock(prefix: str, channels: int, kernel: int, dilations: int) -> list[tuple[str, Shape]]:
    shapes: list[tuple[str, Shape]] = []
    for convs in ("convs1", "convs2"):
        for j in range(dilations):
            shapes += _wn_conv(f"{prefix}.{convs}.{j}", channels, channels, kernel)
    for acts in ("activations1", "activations2"):
        shapes += [(f"{prefix}.{acts}.{j}.alpha", (channels,)) for j in range(dilations)]
    return shapes


def hift_param_shapes(s: ModelSizes) -> list[tuple[str, Shape]]:
    """Every `hift.pt` key (released naming: `generator.` prefix, `weight_g`/`weight_v`) in file order."""
    p = HIFT_PREFIX
    base = s.hift_base_channels
    stages = len(s.hift_upsample_rates)
    widths = [base // (2 ** (i + 1)) for i in range(stages)]
    shapes: list[tuple[str, Shape]] = [
        *_linear(f"{p}m_source.l_linear", HIFT_HARMONICS + 1, 1),
        *_wn_conv(f"{p}conv_pre", MEL_BINS, base, HIFT_PRE_KERNEL),
    ]
    for i, (rate, kernel) in enumerate(zip(s.hift_upsample_rates, s.hift_upsample_kernels, strict=True)):
        n_in = base // (2**i)
        del rate  # the stride does not change the weight shape
        # ConvTranspose1d weight is [in, out, k] and its weight-norm g is [in, 1, 1]
        shapes += [
            (f"{p}ups.{i}.bias", (widths[i],)),
            (f"{p}ups.{i}.weight_g", (n_in, 1, 1)),
            (f"{p}ups.{i}.weight_v", (n_in, widths[i], kernel)),
        ]
    for i in range(stages):
        shapes += _conv(f"{p}source_downs.{i}", HIFT_ISTFT_CHANNELS, widths[i], _source_down_kernel(s, i))
    for i in range(stages):
        shapes += _resblock(
            f"{p}source_resblocks.{i}",
            widths[i],
            s.hift_source_resblock_kernels[i],
            s.hift_resblock_dilations,
        )
    kernels = len(s.hift_resblock_kernels)
    for i in range(stages):
        for j, kernel in enumerate(s.hift_resblock_kernels):
            shapes += _resblock(
                f"{p}resblocks.{i * kernels + j}", widths[i], kernel, s.hift_resblock_dilations
            )
    shapes += _wn_conv(f"{p}conv_post", widths[-1], HIFT_ISTFT_CHANNELS, HIFT_POST_KERNEL)
    n_in = MEL_BINS
    for layer in range(HIFT_F0_LAYERS):
        shapes += _wn_conv(f"{p}f0_predictor.condnet.{2 * layer}", n_in, s.f0_cond_channels, HIFT_F0_KERNEL)
        n_in = s.f0_cond_channels
    shapes += _linear(f"{p}f0_predictor.classifier", s.f0_cond_channels, 1)
    return shapes


def _source_down_kernel(s: ModelSizes, stage: int) -> int:
    """Stage i downsamples the source STFT by the product of the later upsample rates (k = 2·stride, or 1)."""
    stride = 1
    for rate in s.hift_upsample_rates[stage + 1 :]:
        stride *= rate
    return 2 * stride if stride > 1 else 1


def flow_yaml_text(s: ModelSizes) -> str:
    """`flow.yaml` in the released HyperPyYAML form: one top-level `flow` and four `!new:` tags."""
    return f"""\
flow: !new:cosyvoice2.flow.flow.CausalMaskedDiffWithXvec
    input_size: {s.embed_dim}
    output_size: {MEL_BINS}
    spk_embed_dim: {SPK_EMBED_DIM}
    output_type: 'mel'
    vocab_size: {VOCAB_SIZE}
    encoder: !new:cosyvoice2.transformer.upsample_encoder_v2.UpsampleConformerEncoderV2
        input_size: {s.embed_dim}
        output_size: {s.embed_dim}
        input_layer: 'linear'
        pre_lookahead_len: {PRE_LOOKAHEAD}
        num_blocks: {s.encoder_blocks}
        num_up_blocks: {s.encoder_up_blocks}
        up_stride: {UP_STRIDE}
        up_scale_factor: {UP_STRIDE}
        attention_heads: {s.encoder_heads}
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        key_bias: true
        linear_units: {s.encoder_linear_units}
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: true
    decoder: !new:cosyvoice2.flow.flow_matching.CausalConditionalCFM
        inference_cfg_rate: 0.7
        estimator: !new:cosyvoice2.flow.decoder_dit.DiT
            in_channels: {DIT_IN_CHANNELS}
            out_channels: {MEL_BINS}
            mlp_ratio: {float(DIT_MLP_RATIO)}
            depth: {s.dit_depth}
            num_heads: {s.dit_heads}
            head_dim: {s.dit_head_dim}
            hidden_size: {s.dit_hidden}
"""
