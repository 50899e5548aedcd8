"""Step-Audio-2's Whisper-like audio encoder and its adapter to the LLM width, in plain torch.

Module and parameter names follow the checkpoint (``encoder.*`` / ``adapter.*`` keys), so weights load by name.
No SGLang import: the encoder is small next to the LLM and runs once per audio block at prefill, so it uses
torch's scaled-dot-product attention rather than SGLang's paged attention.

Shapes: a block of T mel frames (B, n_mels, T) → conv k3 → GELU → conv k3 stride 2 → GELU → (B, (T+1)//2, d) +
learned positions → pre-LN transformer blocks → average pool 2 → LayerNorm → (B, (T+1)//2//2, d); the adapter
maps that through Conv1d k3 stride 2 + GELU, Linear d→hidden, ReLU, Linear hidden→llm_dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MLP_RATIO = 4  # Whisper block MLP width = 4 × d
POOL = 2  # average pooling after the blocks: 50 Hz → 25 Hz
CONV_KERNEL = 3
CONV_PADDING = 1
CONV2_STRIDE = 2
ADAPTER_HIDDEN = 2048  # Step-Audio-2's adapter hidden width (hard-wired in the reference)


class EncoderAttention(nn.Module):
    """Multi-head self-attention with Whisper's parameter names (``key`` has no bias)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width, bias=False)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, d) → (B, L, d); full (non-causal) attention over one unpadded block."""
        batch, length, width = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

        attended = F.scaled_dot_product_attention(
            heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        )
        projected: torch.Tensor = self.out(attended.transpose(1, 2).reshape(batch, length, width))
        return projected


class EncoderBlock(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + MLP(LN(x)); MLP keys ``mlp.0`` / ``mlp.2``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = EncoderAttention(width, heads)
        self.attn_ln = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, width * MLP_RATIO), nn.GELU(), nn.Linear(width * MLP_RATIO, width)
        )
        self.mlp_ln = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, d) → (B, L, d)."""
        x = x + self.attn(self.attn_ln(x))
        out: torch.Tensor = x + self.mlp(self.mlp_ln(x))
        return out


class AudioEncoder(nn.Module):
    """Whisper-large-style encoder (Step-Audio-2: 128 mels, 1500 positions, d 1280, 20 heads, 32 layers)."""

    def __init__(self, n_mels: int, n_ctx: int, width: int, heads: int, layers: int) -> None:
        super().__init__()
        self.n_ctx = n_ctx
        self.conv1 = nn.Conv1d(n_mels, width, kernel_size=CONV_KERNEL, padding=CONV_PADDING)
        self.conv2 = nn.Conv1d(
            width, width, kernel_size=CONV_KERNEL, stride=CONV2_STRIDE, padding=CONV_PADDING
        )
        self.positional_embedding = nn.Embedding(n_ctx, width)
        self.blocks = nn.ModuleList(EncoderBlock(width, heads) for _ in range(layers))
        self.avg_pooler = nn.AvgPool1d(POOL, stride=POOL)
        self.after_norm = nn.LayerNorm(width)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) mel frames of equal-length blocks → (B, (T + 1) // 2 // 2, d)."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (B, (T+1)//2, d)
        if x.shape[1] > self.n_ctx:
            raise ValueError(
                f"audio block of {x.shape[1]} encoder positions exceeds n_audio_ctx {self.n_ctx}"
            )
        x = x + self.positional_embedding.weight[: x.shape[1]].to(x.dtype)
        for block in self.blocks:
            x = block(x)
        x = self.avg_pooler(x.transpose(1, 2)).transpose(1, 2)
        normed: torch.Tensor = self.after_norm(x)
        return normed


class AudioAdapter(nn.Module):
    """Downsample 25 Hz → 12.5 Hz and project to the LLM width (keys ``conv``, ``linear1``, ``linear2``)."""

    def __init__(
        self, width: int, llm_dim: int, kernel_size: int, stride: int, hidden: int = ADAPTER_HIDDEN
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(width, width, kernel_size, stride, padding=CONV_PADDING)
        self.linear1 = nn.Linear(width, hidden)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(hidden, llm_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, d) → (B, (L − 1) // 2 + 1, llm_dim)."""
        x = F.gelu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        projected: torch.Tensor = self.linear2(self.relu(self.linear1(x)))
        return projected


def embed_blocks(encoder: AudioEncoder, adapter: AudioAdapter, mels: list[torch.Tensor]) -> torch.Tensor:
    """Embed audio blocks for the LLM, one block at a time (no padding, so no masks).

    Args:
        encoder: the audio encoder.
        adapter: the adapter.
        mels: per block a (n_mels, T_i) tensor.

    Returns:
        (sum_i N_i, llm_dim) embeddings in block order, N_i = `audio.num_patches(T_i)`, in the adapter's dtype.
    """
    param = next(adapter.parameters())
    outputs = [
        adapter(encoder(mel.to(device=param.device, dtype=param.dtype).unsqueeze(0)))[0] for mel in mels
    ]
    return torch.cat(outputs, dim=0)
