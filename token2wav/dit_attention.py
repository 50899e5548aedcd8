"""The DiT's attention over a batch of streams' caches, two ways (docs/TOKEN2WAV.md §8.1).

Each stream of a batched estimator pass owns its keys (`DitCache`): the voice's shared prompt keys plus its
own generated ones, each set with its own length and holes. A block's attention therefore cannot be one plain
batched call over `[2 N, H, S, d]`. Two equivalent ways are implemented (same key sets, same numbers up to
float summation order; tests/token2wav/test_dit_attention.py holds them to each other):

* ``per-stream``: every stream stores its new keys and attends to its own key sets in its own fused kernel
  calls (two calls and a log-sum-exp merge while it still reads the shared prompt keys). This is the default
  on the CPU: the kernels read the keys where they lie.
* ``ragged``: one attention call for the whole batch. Every stream's key sets are laid side by side in one
  right-padded `[2 N, H, S_max, d]` buffer and the holes and padding are masked. The buffer and mask are made
  once per estimator pass (the spans do not change within it); per block only the keys are copied into it.
  This trades those copies for N - 1 fewer kernel calls, and gives a compiled graph or a GPU one call of
  fixed structure.

`AttentionPass` carries the streams and the Euler step of the current pass. A compiled estimator cannot take
it as an argument (it holds Python objects), so the attention is also registered as the custom op
``token2wav::dit_attention``: opaque to the compiler, it reads the pass installed by `AttentionPass.active`.
Like the model, a pass is used from one thread; the active pass is thread-local.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from token2wav.dit_cache import DitCache, KeySlots, attend

AttentionMode = Literal["per-stream", "ragged"]
ATTENTION_MODES: tuple[AttentionMode, ...] = ("per-stream", "ragged")
CFG_ROWS = 2  # each stream occupies two rows of the batch: its conditional and unconditional pass


@dataclass(frozen=True)
class StreamRows:
    """One stream's place in a batched estimator pass: rows `2 i, 2 i + 1` (its CFG pair), `frames` valid.

    Attributes:
        cache: the stream's DiT caches (its keys are read and its new keys written).
        slots: the chunk's key placement from `cache.begin_chunk`.
        frames: new frames of this stream (the batch is right-padded to the longest).
    """

    cache: DitCache
    slots: KeySlots
    frames: int


def store_keys(rows: StreamRows, step: int, block: int, k: torch.Tensor, v: torch.Tensor) -> None:
    """Write one stream's new keys/values `[2, H, F, d]` (valid frames only) into its own cache slots."""
    k_buf, v_buf, _, _ = rows.cache.step_keys(step, block)
    slots = rows.slots
    if slots.start is not None:
        end = slots.start + rows.frames
        k_buf[:, :, slots.start : end] = k
        v_buf[:, :, slots.start : end] = v
    else:
        k_buf.index_copy_(2, slots.index, k)
        v_buf.index_copy_(2, slots.index, v)


def attend_stream(
    rows: StreamRows, step: int, block: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """Store one stream's new keys/values `[2, H, F, d]` in its cache and attend to all of its keys."""
    store_keys(rows, step, block, k, v)
    k_buf, v_buf, shared_k, shared_v = rows.cache.step_keys(step, block)
    slots = rows.slots
    keys, values = k_buf[:, :, : slots.span], v_buf[:, :, : slots.span]
    if shared_k is not None and shared_v is not None:
        shared_k, shared_v = shared_k[:, :, : slots.shared_span], shared_v[:, :, : slots.shared_span]
    return attend(q, keys, values, slots.bias, shared_k, shared_v, slots.shared_bias)


class _RaggedLayout:
    """Where each stream's key sets sit in the padded batch buffer, and the additive mask over it.

    Stream i's rows read `[0, shared_span_i)` = its shared prompt slots, then `[shared_span_i, S_i)` = its
    own slots; `[S_i, S_max)` is padding. Built once per pass: the spans are fixed until `end_chunk`.
    """

    def __init__(self, streams: list[StreamRows], like: torch.Tensor) -> None:
        spans = [(rows.slots.shared_span, rows.slots.span) for rows in streams]
        self.spans = spans
        self.width = max(shared + own for shared, own in spans)
        batch = CFG_ROWS * len(streams)
        bias = torch.full((batch, 1, 1, self.width), float("-inf"), dtype=like.dtype, device=like.device)
        for i, (rows, (shared, own)) in enumerate(zip(streams, spans, strict=True)):
            pair = bias[CFG_ROWS * i : CFG_ROWS * (i + 1)]
            pair[..., :shared] = rows.slots.shared_bias if rows.slots.shared_bias is not None else 0.0
            pair[..., shared : shared + own] = rows.slots.bias if rows.slots.bias is not None else 0.0
        self.bias = bias
        heads, head_dim = like.shape[1], like.shape[3]
        # Zeros, not garbage: a masked key contributes exp(-inf) * value, which is NaN for a non-finite value.
        self.keys = like.new_zeros(batch, heads, self.width, head_dim)
        self.values = like.new_zeros(batch, heads, self.width, head_dim)


class AttentionPass:
    """The attention of one batched estimator pass: its streams, Euler step and mode.

    Args:
        streams: the streams in row order (stream i = rows 2 i, 2 i + 1).
        step: the Euler step (selects the caches).
        mode: ``per-stream`` or ``ragged`` (module docstring).
    """

    def __init__(self, streams: list[StreamRows], step: int, mode: AttentionMode) -> None:
        self.streams = streams
        self.step = step
        self.mode = mode
        self._layout: _RaggedLayout | None = None

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int) -> torch.Tensor:
        """`q, k, v [2 N, H, F_max, d]` of one block -> attention output of the same shape.

        Writes every stream's new keys/values (its valid frames) into its cache first. Rows of padded frames
        get finite values that the caller ignores.
        """
        if len(self.streams) == 1:
            return attend_stream(self.streams[0], self.step, block, q, k, v)
        if self.mode == "ragged":
            return self._ragged(q, k, v, block)
        out = q.new_zeros(q.shape)  # padded frames attend to nothing; they only need to stay finite
        for i, rows in enumerate(self.streams):
            pair, valid = slice(CFG_ROWS * i, CFG_ROWS * (i + 1)), rows.frames
            out[pair, :, :valid] = attend_stream(
                rows, self.step, block, q[pair, :, :valid], k[pair, :, :valid], v[pair, :, :valid]
            )
        return out

    def _ragged(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int) -> torch.Tensor:
        layout = self._layout
        if layout is None:
            layout = self._layout = _RaggedLayout(self.streams, k)
        for i, (rows, (shared, own)) in enumerate(zip(self.streams, layout.spans, strict=True)):
            pair = slice(CFG_ROWS * i, CFG_ROWS * (i + 1))
            store_keys(rows, self.step, block, k[pair, :, : rows.frames], v[pair, :, : rows.frames])
            k_buf, v_buf, shared_k, shared_v = rows.cache.step_keys(self.step, block)
            if shared and shared_k is not None and shared_v is not None:
                layout.keys[pair, :, :shared] = shared_k[:, :, :shared]
                layout.values[pair, :, :shared] = shared_v[:, :, :shared]
            layout.keys[pair, :, shared : shared + own] = k_buf[:, :, :own]
            layout.values[pair, :, shared : shared + own] = v_buf[:, :, :own]
        return F.scaled_dot_product_attention(q, layout.keys, layout.values, attn_mask=layout.bias)

    @contextmanager
    def active(self) -> Iterator[AttentionPass]:
        """Install this pass for ``token2wav::dit_attention`` calls on this thread (compiled estimators)."""
        previous = getattr(_ACTIVE, "attention", None)
        _ACTIVE.attention = self
        try:
            yield self
        finally:
            _ACTIVE.attention = previous


_ACTIVE = threading.local()


# Tagged unsafe for CUDA graphs: its key placement is decided in Python at every call, so a captured replay
# would write the slots of the capture. Inductor splits its CUDA-graph partitions around it instead.
@torch.library.custom_op("token2wav::dit_attention", mutates_args=(), tags=(torch.Tag.cudagraph_unsafe,))
def dit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int) -> torch.Tensor:
    """Block `block`'s attention for the pass installed by `AttentionPass.active` (writes the new keys).

    An op the compiler cannot see into: it keeps the caches' Python bookkeeping out of compiled graphs. Its
    side effect on the caches is not declared, which is safe because its output feeds the rest of the block,
    so it runs exactly once per block and in order.
    """
    attention: AttentionPass | None = getattr(_ACTIVE, "attention", None)
    if attention is None:
        raise RuntimeError("token2wav::dit_attention called outside AttentionPass.active()")
    return attention(q, k, v, block).contiguous()  # the layout the fake promises


@dit_attention.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int) -> torch.Tensor:
    return q.new_empty(q.shape)
