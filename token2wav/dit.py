"""DiT estimator of the CFM decoder, with per-ODE-step KV and conv caches (docs/TOKEN2WAV.md §3.2, §4.2).

Parameter names reproduce the released `flow.pt` keys under `decoder.estimator.` exactly.

Speed-ups that keep the reference's numbers:

* The adaLN modulations depend only on t, and the 10 Euler times are the same for every chunk, so they are
  computed once per model (`DiT.modulations`) instead of 16 x 10 matrix products per chunk.
* The key/value caches of a stream (`DitCache`, token2wav/dit_cache.py) read the voice's prompt keys in place
  and keep only generated keys in per-stream buffers; a chunk writes only its own new keys into free slots,
  and trimming only updates the slot bookkeeping: nothing is copied.
* Several streams run as one batched pass (`DiT.forward_cached` over `StreamRows`): every per-frame operation
  (projections, norms, convs, MLP) runs once on the right-padded batch `[2 N, F_max, h]`; only the attention
  reads each stream's own keys (token2wav/dit_attention.py: per stream, or one call over a padded layout).
  Right padding is exact for the valid frames: the convs are causal and padded frames never become keys.
* The pass itself (`DiT.dense_pass`) is a function of tensors only (modulations as tensors, conv contexts
  returned, the caches reached through the attention), so it compiles as one graph (token2wav/compiled.py).

Size: just over 400 lines: the DiT estimator's blocks and its pass; its caches live in `token2wav.dit_cache`,
its attention over them in `token2wav.dit_attention`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from token2wav.config import DitConfig
from token2wav.dit_attention import AttentionMode, AttentionPass, StreamRows
from token2wav.dit_cache import CONV_CONTEXT, CONV_KERNEL

FREQ_EMBED_DIM = 256  # sinusoidal time embedding width
TIME_SCALE = 1000.0  # the DiT embeds 1000 * t
MAX_PERIOD = 10000.0
BLOCK_LN_EPS = 1e-6  # the affine-free LayerNorms of the blocks and the final layer
N_MODULATIONS = 9  # shift/scale/gate for attention, MLP, conv


class TimestepEmbedder(nn.Module):
    """Sinusoid of 1000 t (cos half first, then sin), then MLP 256 -> h -> h with SiLU."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQ_EMBED_DIM, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """`t [B]` in [0, 1] -> `[B, hidden]`."""
        half = FREQ_EMBED_DIM // 2
        freqs = torch.exp(-math.log(MAX_PERIOD) * torch.arange(0, half, dtype=torch.float32) / half).to(t)
        args = (t * TIME_SCALE)[:, None] * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class Attention(nn.Module):
    """Multi-head attention with per-head QK LayerNorm; no positional encoding."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.q_norm = nn.LayerNorm(head_dim)
        self.k_norm = nn.LayerNorm(head_dim)
        self.proj = nn.Linear(inner, dim)

        self._qkv: tuple[torch.Tensor, torch.Tensor] | None = None

    def invalidate(self) -> None:
        """Forget the fused q/k/v weights (after new weights or a device/dtype change)."""
        self._qkv = None

    def qkv_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """to_q|to_k|to_v stacked into one `[3 inner, dim]` weight and bias: one wide GEMM instead of three
        narrow ones (the wide one runs ~15% faster on CPU at the chunk sizes of streaming)."""
        if self._qkv is None:
            layers = (self.to_q, self.to_k, self.to_v)
            self._qkv = (
                torch.cat([layer.weight for layer in layers]).contiguous(),
                torch.cat([layer.bias for layer in layers]).contiguous(),
            )
        return self._qkv


class Mlp(nn.Module):
    """fc1 -> GELU (tanh) -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, T, D]` -> `[B, T, D]`."""
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class _Transpose(nn.Module):
    """Placeholder that keeps the reference's Sequential indices (conv at 1 and 6, LayerNorm at 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class CausalConvBlock(nn.Module):
    """Causal conv (k3) -> LayerNorm -> Mish -> causal conv (k3), on `[B, T, C]`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            _Transpose(),
            nn.Conv1d(channels, channels, CONV_KERNEL),
            _Transpose(),
            nn.LayerNorm(channels),
            nn.Mish(),
            _Transpose(),
            nn.Conv1d(channels, channels, CONV_KERNEL),
            _Transpose(),
        )

        self._gemm: tuple[torch.Tensor, torch.Tensor] | None = None

    # Typed accessors, public for the reference-style baseline (not attributes: assigning a module would register it a second time in state_dict).
    @property
    def conv1(self) -> nn.Conv1d:
        return cast(nn.Conv1d, self.block[1])

    @property
    def norm(self) -> nn.LayerNorm:
        return cast(nn.LayerNorm, self.block[3])

    @property
    def conv2(self) -> nn.Conv1d:
        return cast(nn.Conv1d, self.block[6])

    def invalidate(self) -> None:
        """Forget the GEMM form of the conv weights (after new weights or a device/dtype change)."""
        self._gemm = None

    def _gemm_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        # conv weight [O, C, k] -> [O, k*C] so that the conv is one GEMM over k shifted copies of the input
        # (x @ W^T reaches the BLAS GEMM rate; oneDNN's conv on these short sequences is ~2x slower).
        if self._gemm is None:
            w1 = self.conv1.weight
            w2 = self.conv2.weight
            self._gemm = (
                w1.permute(0, 2, 1).reshape(w1.shape[0], -1).contiguous(),
                w2.permute(0, 2, 1).reshape(w2.shape[0], -1).contiguous(),
            )
        return self._gemm

    def forward_cached(
        self, x: torch.Tensor, cache1: torch.Tensor, cache2: torch.Tensor, ends: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`x [B, T, C]` with each conv's 2 cached input frames `[B, 2, C]` in front.

        `ends` (int64 `[B, 2, C]`, see `context_index`) marks right-padded rows: each row's new context is its
        last 2 valid frames instead of the last 2 frames.

        Returns:
            (output `[B, T, C]`, new context of the first conv, new context of the second conv): the caches
            are not written here, so a compiled graph has no mutated inputs.
        """
        w1, w2 = self._gemm_weights()
        h, context1 = _causal_conv(x, cache1, w1, self.conv1.bias, ends)
        h = F.mish(self.norm(h))
        out, context2 = _causal_conv(h, cache2, w2, self.conv2.bias, ends)
        return out, context1, context2


def context_index(
    frames: list[int], channels: int, device: torch.device, *, always: bool = False
) -> torch.Tensor | None:
    """Gather index `[B, 2, C]` of each row's last 2 valid frames in `[cache | x]`.

    None when no row is padded (the last 2 frames are every row's), unless `always`.
    """
    if len(set(frames)) <= 1 and not always:
        return None
    ends = torch.tensor([[f + i for i in range(CONV_CONTEXT)] for f in frames], dtype=torch.long)
    return ends.to(device).unsqueeze(-1).expand(-1, -1, channels)


def _causal_conv(
    x: torch.Tensor,
    cache: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    ends: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal conv (k = CONV_KERNEL) on time-major `x [B, T, C]` after `cache [B, k-1, C]`; (out, new cache)."""
    frames = x.shape[1]
    ext = torch.cat([cache, x], dim=1)
    context = ext[:, -CONV_CONTEXT:] if ends is None else ext.gather(1, ends)
    cols = torch.cat([ext[:, k : k + frames] for k in range(CONV_KERNEL)], dim=-1)
    return F.linear(cols, weight, bias), context


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


# Rows of a block's modulation table `[N_MODULATIONS, h]` (`StepModulation.blocks[i]`), fused-kernel operands:
# LayerNorm weight (1 + scale) and bias (shift), then the gate, for attention, MLP and conv in turn.
MSA_WEIGHT, MSA_BIAS, MSA_GATE, MLP_WEIGHT, MLP_BIAS, MLP_GATE, CONV_WEIGHT, CONV_BIAS, CONV_GATE = range(
    N_MODULATIONS
)


@dataclass(frozen=True)
class StepModulation:
    """adaLN outputs of one ODE step (they depend on t only), as two tensors a compiled graph can take.

    Both CFG halves run at the same t, so every modulation is one vector `[h]` shared by the batch: the
    scale/shift pairs become the weight (`1 + scale`) and bias of the block's affine-free LayerNorms, and the
    gates multiply the branch outputs inside one `addcmul`.

    Attributes:
        blocks: `[depth, N_MODULATIONS, h]`, rows in the order of `MSA_WEIGHT` .. `CONV_GATE`.
        final: `[2, h]` the final layer's shift and scale.
    """

    blocks: torch.Tensor
    final: torch.Tensor


# Attention of one block inside a pass: (q, k, v, block index) -> output; see token2wav.dit_attention.
BlockAttention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
# A compiled `DiT.dense_pass` without its attention argument: (x, blocks, final, conv1, conv2, ends) ->
# (v, new conv1 contexts, new conv2 contexts).
CompiledPass = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None],
    tuple[torch.Tensor, torch.Tensor, torch.Tensor],
]


class DiTBlock(nn.Module):
    """adaLN-Zero block: attention, causal conv block, MLP; each modulated and gated."""

    def __init__(self, config: DitConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.attn = Attention(h, config.num_heads, config.head_dim)
        self.mlp = Mlp(h, int(h * config.mlp_ratio))
        self.conv = CausalConvBlock(h)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(h, N_MODULATIONS * h))
        self.hidden = h

    def forward_cached(
        self,
        x: torch.Tensor,
        mod: torch.Tensor,
        attention: BlockAttention,
        index: int,
        conv1: torch.Tensor,
        conv2: torch.Tensor,
        ends: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One block on the new frames of a batch of streams; its attention writes their keys/values.

        Args:
            x: `[2 N, F_max, h]` hidden states, rows `2 i, 2 i + 1` = stream i's CFG pair (owned by the
                caller's pass: updated in place and returned).
            mod: `[N_MODULATIONS, h]` this block's modulations at this step's t (shared by every row).
            attention: the pass's attention (reads and writes the streams' caches of this step).
            index: this block's index (selects its caches).
            conv1: `[2 N, 2, h]` context of the first causal conv.
            conv2: `[2 N, 2, h]` context of the second causal conv.
            ends: right-padding gather index from `context_index`, or None.

        Returns:
            (x, the two convs' new contexts).
        """
        width = (self.hidden,)
        attn = self.attn
        b, frames, _ = x.shape
        h = F.layer_norm(x, width, mod[MSA_WEIGHT], mod[MSA_BIAS], BLOCK_LN_EPS)
        qkv = F.linear(h, *attn.qkv_weights()).view(b, frames, 3, attn.heads, attn.head_dim)
        # QK norms act on the head dim, so they run on the time-major layout before the head transpose.
        q = attn.q_norm(qkv[:, :, 0]).transpose(1, 2)
        k = attn.k_norm(qkv[:, :, 1]).transpose(1, 2)
        v = qkv[:, :, 2].transpose(1, 2)
        out = attention(q, k, v, index)
        x.addcmul_(mod[MSA_GATE], attn.proj(out.transpose(1, 2).reshape(b, frames, -1)))
        h = F.layer_norm(x, width, mod[CONV_WEIGHT], mod[CONV_BIAS], BLOCK_LN_EPS)
        conv, context1, context2 = self.conv.forward_cached(h, conv1, conv2, ends)
        x.addcmul_(mod[CONV_GATE], conv)
        h = F.layer_norm(x, width, mod[MLP_WEIGHT], mod[MLP_BIAS], BLOCK_LN_EPS)
        return x.addcmul_(mod[MLP_GATE], self.mlp(h)), context1, context2


class FinalLayer(nn.Module):
    """adaLN (shift, scale), affine-free LayerNorm, Linear h -> 80."""

    def __init__(self, hidden: int, out_channels: int) -> None:
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.linear = nn.Linear(hidden, out_channels)
        self.hidden = hidden

    def forward_modulated(self, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """`[B, T, h]` -> `[B, T, out]`."""
        return self.linear(modulate(F.layer_norm(x, (self.hidden,), eps=BLOCK_LN_EPS), shift, scale))


class DiT(nn.Module):
    """The estimator: in_proj(320 -> h), depth x DiTBlock, final layer (h -> 80)."""

    def __init__(self, config: DitConfig) -> None:
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.t_embedder = TimestepEmbedder(h)
        self.in_proj = nn.Linear(config.in_channels, h)
        self.blocks = nn.ModuleList([DiTBlock(config) for _ in range(config.depth)])
        self.typed_blocks: list[DiTBlock] = [
            cast(DiTBlock, b) for b in self.blocks
        ]  # typed view (same modules)
        self.final_layer = FinalLayer(h, config.out_channels)
        # How, not what (token2wav.options): the attention over a batch's caches, and a compiled `dense_pass`
        # (token2wav.compiled) when one is installed.
        self.attention_mode: AttentionMode = "per-stream"
        self.compiled_pass: CompiledPass | None = None
        self.weights_version = 0  # bumped by `invalidate`: a compiled pass made before is stale

    def invalidate(self) -> None:
        """Forget weight-derived constants (after new weights or a device/dtype change).

        A compiled pass is dropped too: it may hold the old weights as constants (install a new one).
        """
        for block in self.typed_blocks:
            block.conv.invalidate()
            block.attn.invalidate()
        self.compiled_pass = None
        self.weights_version += 1

    def modulations(self, t: torch.Tensor, batch: int) -> StepModulation:
        """adaLN outputs for time `t` (a 1-element tensor), for a batch of `batch` (CFG: 2)."""
        c = self.t_embedder(t.reshape(1).repeat(batch)).unsqueeze(1)  # [B, 1, h]
        blocks = torch.stack([_block_modulation(blk.adaLN_modulation(c)[0, 0]) for blk in self.typed_blocks])
        shift, scale = self.final_layer.adaLN_modulation(c)[0, 0].chunk(2)
        return StepModulation(blocks=blocks.contiguous(), final=torch.stack([shift, scale]))

    def forward_cached(
        self,
        x: torch.Tensor,
        mod: StepModulation,
        streams: list[StreamRows],
        step: int,
        conv1: torch.Tensor,
        conv2: torch.Tensor,
        ends: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One estimator pass over the new frames of a batch of streams.

        Args:
            x: `[2 N, 320, F_max]` = [x | mu | spk | cond] channels, rows `2 i, 2 i + 1` = stream i's CFG pair,
                right-padded to the longest stream.
            mod: modulations of this step's t.
            streams: the streams in row order; step `step`'s key caches are read and updated in place.
            step: ODE step index (each step has its own caches).
            conv1: `[depth, 2 N, 2, h]` conv contexts of this step (updated in place).
            conv2: same, second conv of each block.
            ends: right-padding gather index from `context_index`, or None when no row is padded.

        Returns:
            velocity `[2 N, 80, F_max]` (padded frames hold garbage).
        """
        attention = AttentionPass(streams, step, self.attention_mode)
        if self.compiled_pass is None:
            v, context1, context2 = self.dense_pass(x, mod.blocks, mod.final, conv1, conv2, ends, attention)
        else:
            with attention.active():
                v, context1, context2 = self.compiled_pass(x, mod.blocks, mod.final, conv1, conv2, ends)
        conv1.copy_(context1)
        conv2.copy_(context2)
        return v

    def dense_pass(
        self,
        x: torch.Tensor,
        blocks: torch.Tensor,
        final: torch.Tensor,
        conv1: torch.Tensor,
        conv2: torch.Tensor,
        ends: torch.Tensor | None,
        attention: BlockAttention,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`forward_cached` with the modulations as tensors and the attention as a function.

        This is the part `token2wav.compiled` compiles (with `attention` the custom op): the key caches are
        reached only through `attention`, and the conv contexts are returned, not written.

        Returns:
            (velocity `[2 N, 80, F_max]`, new conv1 contexts `[depth, 2 N, 2, h]`, new conv2 contexts).
        """
        h = self.in_proj(x.transpose(1, 2))
        contexts1, contexts2 = [], []
        for i, block in enumerate(self.typed_blocks):
            h, context1, context2 = block.forward_cached(h, blocks[i], attention, i, conv1[i], conv2[i], ends)
            contexts1.append(context1)
            contexts2.append(context2)
        v = self.final_layer.forward_modulated(h, final[0], final[1]).transpose(1, 2)
        return v, torch.stack(contexts1), torch.stack(contexts2)


def _block_modulation(adaln: torch.Tensor) -> torch.Tensor:
    """One block's adaLN output `[9 h]` (the released chunk order) as its `[N_MODULATIONS, h]` table rows."""
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp, shift_conv, scale_conv, gate_conv = (
        adaln.chunk(N_MODULATIONS)
    )
    return torch.stack(
        [
            1 + scale_msa,
            shift_msa,
            gate_msa,
            1 + scale_mlp,
            shift_mlp,
            gate_mlp,
            1 + scale_conv,
            shift_conv,
            gate_conv,
        ]
    )
