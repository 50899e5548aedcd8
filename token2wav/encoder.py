"""`UpsampleConformerEncoderV2`: 25 Hz embeddings -> 50 Hz hidden states (docs/TOKEN2WAV.md §3.2, §4.2).

Module and parameter names reproduce the released `flow.pt` keys under `encoder.` exactly. Two modes:

* `forward(xs)` (offline): the whole sequence at once, bidirectional attention, the look-ahead conv sees 3
  zero frames after the end.
* `forward_chunk(xs, last, cache)` (streaming): the look-ahead conv runs unpadded (the window carries its own
  3 look-ahead tokens, or 3 zero frames are appended when `last`), conv and attention caches come first
  (ESPnet relative positions: query i sits at absolute position cache_len + i), no mask.

The attention caches live in `EncoderCache`, one per stream, in growable buffers so a chunk appends its keys
without copying the whole past (the reference re-concatenates every layer's cache each chunk).

Size: over 400 lines: the whole streaming Conformer encoder (layers, caches, chunk logic) in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from token2wav.config import EncoderConfig

EMBED_LN_EPS = 1e-5  # LayerNorm inside the linear input layers and after_norm
CONFORMER_LN_EPS = 1e-12  # norm_mha / norm_ff in the Step-Audio2 copy of the Conformer layer
LOOKAHEAD_SLOPE = 0.01  # F.leaky_relu default slope after the look-ahead conv1
LOOKAHEAD_CONV2_CONTEXT = 2  # conv2 (k=3) sees 2 previous conv1 outputs
POS_TABLE_BASE = 10000.0
POS_TABLE_GROW = 1024  # grow the relative-position table in steps of this many positions
KV_GROW = 256  # growable KV buffers extend by at least this many frames


class LinearEmbed(nn.Module):
    """`LinearNoSubsampling`: Linear, LayerNorm, then x * sqrt(d) (the rel-pos encoding's x scaling)."""

    def __init__(self, idim: int, odim: int) -> None:
        super().__init__()
        self.out = nn.Sequential(nn.Linear(idim, odim), nn.LayerNorm(odim, eps=EMBED_LN_EPS))
        self.xscale = math.sqrt(odim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, T, idim]` -> `[B, T, odim]`."""
        return self.out(x) * self.xscale


class RelPositionTable:
    """ESPnet relative sinusoid table, shared by all layers of one encoder (a constant, grown on demand).

    Entry k of a table built for n positions encodes relative position (n - 1 - k): sin on even channels,
    cos on odd ones, computed in float32 exactly as the reference builds its table.
    """

    def __init__(self, d_model: int) -> None:
        self.d_model = d_model
        self._table: torch.Tensor | None = None  # [2n-1, d], float32, CPU
        self._n = 0
        self._converted: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def _build(self, n: int) -> None:
        position = torch.arange(0, n, dtype=torch.float32).unsqueeze(1)
        div_term = torch.exp(
            torch.arange(0, self.d_model, 2, dtype=torch.float32) * -(math.log(POS_TABLE_BASE) / self.d_model)
        )
        positive = torch.zeros(n, self.d_model)
        negative = torch.zeros(n, self.d_model)
        positive[:, 0::2] = torch.sin(position * div_term)
        positive[:, 1::2] = torch.cos(position * div_term)
        negative[:, 0::2] = torch.sin(-1 * position * div_term)
        negative[:, 1::2] = torch.cos(-1 * position * div_term)
        self._table = torch.cat([torch.flip(positive, [0]), negative[1:]], dim=0)
        self._n = n
        self._converted.clear()

    def full(self, size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The whole table `[2n-1, d]` (n >= size) in `device`/`dtype`; a new object whenever it changes."""
        if size > self._n:
            self._build(max(size, self._n + POS_TABLE_GROW))
        key = (device, dtype)
        table = self._converted.get(key)
        if table is None:
            assert self._table is not None
            table = self._table.to(device=device, dtype=dtype)
            self._converted[key] = table
        return table

    def window(self, table: torch.Tensor, size: int) -> torch.Tensor:
        """Rows of `table` (or of a row-wise function of it) for positions (size-1) .. -(size-1)."""
        center = (table.shape[0] - 1) // 2
        return table[center - size + 1 : center + size].unsqueeze(0)

    def get(self, size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Relative encodings for positions (size-1) .. -(size-1): `[1, 2*size-1, d]`."""
        return self.window(self.full(size, device, dtype), size)


class GrowingKV:
    """Keys and values of one attention layer for one stream: `[B, H, capacity, d]` buffers, filled in order.

    Appending writes only the new frames; the buffer doubles (amortised) when full.
    """

    def __init__(self, k: torch.Tensor, v: torch.Tensor, extra: int = KV_GROW) -> None:
        b, h, t, d = k.shape
        self.length = t
        self.k = k.new_zeros(b, h, t + extra, d)
        self.v = v.new_zeros(b, h, t + extra, d)
        self.k[:, :, :t] = k
        self.v[:, :, :t] = v
        self.owned = True  # False: the buffers belong to a primed voice; the first append copies them

    @classmethod
    def empty(cls, like: torch.Tensor, heads: int, head_dim: int) -> GrowingKV:
        """An empty cache for batch/device/dtype of `like`."""
        zero = like.new_zeros(like.shape[0], heads, 0, head_dim)
        return cls(zero, zero)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append `[B, H, t, d]` keys/values; return views of all keys/values so far (old first)."""
        end = self.length + k.shape[2]
        capacity = self.k.shape[2]
        if end > capacity or not self.owned:
            new_capacity = max(end + KV_GROW, 2 * capacity if end > capacity else capacity)
            old_k, old_v = self.view()
            self.k = k.new_zeros(k.shape[0], k.shape[1], new_capacity, k.shape[3])
            self.v = v.new_zeros(v.shape[0], v.shape[1], new_capacity, v.shape[3])
            self.k[:, :, : self.length] = old_k
            self.v[:, :, : self.length] = old_v
            self.owned = True
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.view()

    def view(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Current keys and values, `[B, H, length, d]` each (views)."""
        return self.k[:, :, : self.length], self.v[:, :, : self.length]

    def clone(self, extra: int = KV_GROW) -> GrowingKV:
        """An independent copy (for a new stream)."""
        k, v = self.view()
        return GrowingKV(k, v, extra)

    def share(self) -> GrowingKV:
        """A copy-on-write view for a new stream: reads these buffers until its first append copies them.

        The source must not be appended to afterwards (a primed voice never is).
        """
        new = GrowingKV.__new__(GrowingKV)
        new.length, new.k, new.v, new.owned = self.length, self.k, self.v, False
        return new


@dataclass
class EncoderCache:
    """Streaming state of the encoder for one stream.

    Attributes:
        lookahead: `[B, C, 2]` last two look-ahead conv1 outputs.
        upsample: `[B, C, 4]` last four nearest-upsampled frames before the upsample conv.
        layers: one `GrowingKV` per lower Conformer layer (token rate).
        up_layers: one `GrowingKV` per upper Conformer layer (mel-frame rate).
    """

    lookahead: torch.Tensor
    upsample: torch.Tensor
    layers: list[GrowingKV] = field(default_factory=list)
    up_layers: list[GrowingKV] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        """Token positions held by the lower layers' caches."""
        return self.layers[0].length if self.layers else 0

    def clone(self) -> EncoderCache:
        """An independent deep copy (per-stream state must never alias another stream's tensors)."""
        return EncoderCache(
            lookahead=self.lookahead.clone(),
            upsample=self.upsample.clone(),
            layers=[kv.clone() for kv in self.layers],
            up_layers=[kv.clone() for kv in self.up_layers],
        )

    def share(self) -> EncoderCache:
        """A stream's cache over this primed one: copy-on-write attention caches, nothing copied now.

        The conv contexts are replaced (never written in place) by every chunk, so they are shared as is.
        """
        return EncoderCache(
            lookahead=self.lookahead,
            upsample=self.upsample,
            layers=[kv.share() for kv in self.layers],
            up_layers=[kv.share() for kv in self.up_layers],
        )

    def packed_attention(self) -> torch.Tensor:
        """The reference's packed K|V cache `[layers, B, H, 2*tokens, 2d]` (lower layers tiled x2 in time)."""
        lower = [torch.cat(kv.view(), dim=-1).repeat(1, 1, 2, 1) for kv in self.layers]
        upper = [torch.cat(kv.view(), dim=-1) for kv in self.up_layers]
        return torch.stack(lower + upper, dim=0)

    def packed_conv(self) -> torch.Tensor:
        """The reference's conv cache `[B, C, 6]`: [2 look-ahead conv1 outputs | 4 upsampled frames]."""
        return torch.cat([self.lookahead, self.upsample], dim=2)


class RelPositionAttention(nn.Module):
    """Multi-head self-attention with ESPnet relative positions (`rel_selfattn`), keys with bias."""

    def __init__(self, heads: int, dim: int, key_bias: bool) -> None:
        super().__init__()
        self.h = heads
        self.d_k = dim // heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim, bias=key_bias)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)
        self.linear_pos = nn.Linear(dim, dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.d_k))
        # linear_pos applied to the whole position table: a function of the weights only, so it is computed
        # once instead of over every relative position at every chunk (that cost grew with the utterance).
        self._projected: tuple[torch.Tensor, torch.Tensor] | None = None

    def invalidate(self) -> None:
        """Forget the projected position table (after new weights or a device/dtype change)."""
        self._projected = None

    def projected_positions(self, positions: RelPositionTable, size: int, like: torch.Tensor) -> torch.Tensor:
        """`linear_pos` of the relative encodings for positions (size-1) .. -(size-1): `[1, 2*size-1, D]`."""
        table = positions.full(size, like.device, like.dtype)
        cached = self._projected
        if cached is None or cached[0] is not table:
            cached = (table, self.linear_pos(table))
            self._projected = cached
        return positions.window(cached[1], size)

    def project_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of `x [B, T, D]` as `[B, H, T, d]`."""
        b, t, _ = x.shape
        k = self.linear_k(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        v = self.linear_v(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        return k, v

    def attend(
        self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: RelPositionTable
    ) -> torch.Tensor:
        """Queries from `x [B, T1, D]` against keys/values `[B, H, T2, d]` (the last T1 of them are x's).

        Args:
            x: query input (already layer-normed).
            k: all keys, cache first.
            v: all values, cache first.
            positions: the encoder's relative position table (T2 keys: positions T2-1 .. -(T2-1)).
        """
        b, t1, _ = x.shape
        t2 = k.shape[2]
        q = self.linear_q(x).view(b, t1, self.h, self.d_k)
        # Query i (absolute position t2-t1+i) against key j only uses relative positions
        # t2-1 .. -(t1-1), i.e. the first t1+t2-1 rows of the table.
        used = self.projected_positions(positions, t2, x)[:, : t1 + t2 - 1]
        p = used.reshape(1, -1, self.h, self.d_k).transpose(1, 2)
        q_u = (q + self.pos_bias_u).transpose(1, 2)
        q_v = (q + self.pos_bias_v).transpose(1, 2)
        ac = torch.matmul(q_u, k.transpose(-2, -1))
        bd = torch.matmul(q_v, p.transpose(-2, -1)).contiguous()
        width = bd.shape[-1]
        # rel shift: element [i, j] = bd[i, t1-1-i+j] (relative position (t2-t1+i) - j).
        bd = bd.as_strided(
            (b, self.h, t1, t2),
            (bd.stride(0), bd.stride(1), width - 1, 1),
            bd.storage_offset() + t1 - 1,
        )
        scores = (ac + bd) / math.sqrt(self.d_k)
        attn = torch.softmax(scores, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, t1, self.h * self.d_k)
        return self.linear_out(out)


class FeedForward(nn.Module):
    """Position-wise FFN with SiLU (`swish`)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.w_2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, T, D]` -> `[B, T, D]`."""
        return self.w_2(F.silu(self.w_1(x)))


class ConformerLayer(nn.Module):
    """Pre-LN Conformer layer without macaron FFN or conv module: attention, then FFN, both residual."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        dim = config.output_size
        self.self_attn = RelPositionAttention(config.attention_heads, dim, config.key_bias)
        self.feed_forward = FeedForward(dim, config.linear_units)
        self.norm_ff = nn.LayerNorm(dim, eps=CONFORMER_LN_EPS)
        self.norm_mha = nn.LayerNorm(dim, eps=CONFORMER_LN_EPS)

    def forward(
        self, x: torch.Tensor, positions: RelPositionTable, kv: GrowingKV | None = None
    ) -> torch.Tensor:
        """One layer; with `kv`, this chunk's keys/values are appended to it and the chunk attends to all."""
        h = self.norm_mha(x)
        k, v = self.self_attn.project_kv(h)
        if kv is not None:
            k, v = kv.append(k, v)
        x = x + self.self_attn.attend(h, k, v, positions)
        return x + self.feed_forward(self.norm_ff(x))


class PreLookaheadLayer(nn.Module):
    """conv1 (k = look-ahead + 1) -> leaky ReLU -> causal conv2 (k = 3), plus a residual."""

    def __init__(self, channels: int, lookahead: int) -> None:
        super().__init__()
        self.lookahead = lookahead
        self.conv1 = nn.Conv1d(channels, channels, kernel_size=lookahead + 1)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=LOOKAHEAD_CONV2_CONTEXT + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Offline: `[B, T, C]` -> `[B, T, C]`, zeros after the end and before the start."""
        out = F.pad(x.transpose(1, 2), (0, self.lookahead))
        out = F.leaky_relu(self.conv1(out), LOOKAHEAD_SLOPE)
        out = self.conv2(F.pad(out, (LOOKAHEAD_CONV2_CONTEXT, 0)))
        return out.transpose(1, 2) + x

    def forward_chunk(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Streaming: `[B, T, C]` (look-ahead included) -> `[B, T - lookahead, C]` and the new conv cache."""
        out = F.leaky_relu(self.conv1(x.transpose(1, 2)), LOOKAHEAD_SLOPE)
        new_cache = out[..., -LOOKAHEAD_CONV2_CONTEXT:].clone()
        out = self.conv2(torch.cat([cache, out], dim=2))
        return out.transpose(1, 2) + x[:, : -self.lookahead], new_cache


class Upsample1D(nn.Module):
    """Nearest x stride, then a causal conv (k = 2*stride + 1) with 2*stride frames of left context."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(channels, channels, kernel_size=2 * stride + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Offline: `[B, C, T]` -> `[B, C, stride*T]`."""
        out = F.interpolate(x, scale_factor=float(self.stride), mode="nearest")
        return self.conv(F.pad(out, (2 * self.stride, 0)))

    def forward_chunk(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Streaming: `[B, C, T]` -> `[B, C, stride*T]` and the new cache `[B, C, 2*stride]`."""
        out = F.interpolate(x, scale_factor=float(self.stride), mode="nearest")
        out = torch.cat([cache, out], dim=2)
        new_cache = out[..., -2 * self.stride :].clone()
        return self.conv(out), new_cache


class UpsampleConformerEncoderV2(nn.Module):
    """The flow encoder: embed, look-ahead, Conformer x N, upsample x2, embed, Conformer x M, LayerNorm."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.output_size
        self.embed = LinearEmbed(config.input_size, dim)
        self.after_norm = nn.LayerNorm(dim, eps=EMBED_LN_EPS)
        self.pre_lookahead_layer = PreLookaheadLayer(dim, config.pre_lookahead_len)
        self.encoders = nn.ModuleList([ConformerLayer(config) for _ in range(config.num_blocks)])
        self.up_layer = Upsample1D(dim, config.up_stride)
        self.up_embed = LinearEmbed(config.input_size, dim)
        self.up_encoders = nn.ModuleList([ConformerLayer(config) for _ in range(config.num_up_blocks)])
        self.positions = RelPositionTable(dim)

    def invalidate(self) -> None:
        """Forget weight-derived constants (after new weights or a device/dtype change)."""
        for layer in [*self.encoders, *self.up_encoders]:
            cast(ConformerLayer, layer).self_attn.invalidate()

    @property
    def up_rate(self) -> int:
        """Output frames per input token."""
        return self.config.up_stride

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        """Offline encoding of one full sequence `[B, T, D]` -> `[B, up_rate*T, D]`."""
        xs = self.embed(xs)
        xs = self.pre_lookahead_layer(xs)
        for layer in self.encoders:
            xs = layer(xs, self.positions)
        xs = self.up_layer(xs.transpose(1, 2)).transpose(1, 2)
        xs = self.up_embed(xs)
        for layer in self.up_encoders:
            xs = layer(xs, self.positions)
        return self.after_norm(xs)

    def forward_chunk(
        self, xs: torch.Tensor, last: bool, cache: EncoderCache | None
    ) -> tuple[torch.Tensor, EncoderCache]:
        """Encode one streaming window against the caches.

        Args:
            xs: token embeddings `[B, W, D]`; a non-last window ends with `lookahead` look-ahead tokens.
            last: append `lookahead` zero frames (after the input layer) instead of real look-ahead.
            cache: the stream's encoder cache, updated in place; None starts a new one (prompt priming).

        Returns:
            hidden `[B, up_rate * n, D]` (n = W - lookahead, or W when last) and the cache.
        """
        if cache is None:
            cache = self._empty_cache(xs)
        xs = self.embed(xs)
        if last:
            xs = F.pad(xs, (0, 0, 0, self.config.pre_lookahead_len))
        xs, cache.lookahead = self.pre_lookahead_layer.forward_chunk(xs, cache.lookahead)
        for layer, kv in zip(self.encoders, cache.layers, strict=True):
            xs = layer(xs, self.positions, kv)
        up, cache.upsample = self.up_layer.forward_chunk(xs.transpose(1, 2), cache.upsample)
        xs = self.up_embed(up.transpose(1, 2))
        for layer, kv in zip(self.up_encoders, cache.up_layers, strict=True):
            xs = layer(xs, self.positions, kv)
        return self.after_norm(xs), cache

    def _empty_cache(self, like: torch.Tensor) -> EncoderCache:
        """Fresh caches: zero conv context (the reference's `None` caches) and empty attention caches."""
        cfg = self.config
        dim = cfg.output_size
        head_dim = dim // cfg.attention_heads
        zeros = like.new_zeros(like.shape[0], dim, 0)
        return EncoderCache(
            lookahead=F.pad(zeros, (LOOKAHEAD_CONV2_CONTEXT, 0)),
            upsample=F.pad(zeros, (2 * cfg.up_stride, 0)),
            layers=[GrowingKV.empty(like, cfg.attention_heads, head_dim) for _ in self.encoders],
            up_layers=[GrowingKV.empty(like, cfg.attention_heads, head_dim) for _ in self.up_encoders],
        )
