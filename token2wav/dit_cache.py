"""Per-stream DiT key/value caches that share the voice's primed prompt keys (docs/TOKEN2WAV.md §4.3, §4.4).

A stream's DiT cache holds, for every ODE step and block, the keys of the voice prompt (P frames, written
once when the voice is primed) and the keys of the frames the stream generated. The prompt keys never change
after priming, so every stream of a voice reads the voice's tensors directly (no copy at stream start) and
only the generated keys live in per-stream buffers, allocated lazily and grown on demand.

Slot numbering: slots `[0, shared)` are the shared prompt keys, slots `[shared, shared + capacity)` the
stream's own buffer. `order` lists the occupied slots in the reference's cache order (newest chunk first,
each chunk in time order); the reference's `[:P] + [-100:]` trim is done on `order` only, so nothing is
copied and evicted prompt keys are masked out of the attention instead of deleted. The DiT has no positional
encoding and attends without a mask, so only the SET of cached keys matters.

Once the stream has generated P frames, the only prompt keys left are the last `keep_tail` (100) frames, for
good. Then they are copied once into the own buffer and the shared part is dropped: from there on attention
reads one buffer (one fused kernel instead of two plus a merge, ~10% of a steady chunk at full size).

Bound: after a trim the order keeps at most P generated frames (the newest ones), a chunk adds at most
`max_chunk_frames` before its trim, and the copied prompt tail adds `keep_tail`: the own buffer never exceeds
`P + keep_tail + max_chunk_frames` slots, of which only the slots written so far are resident.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from token2wav.config import DitConfig

CONV_KERNEL = 3
CONV_CONTEXT = CONV_KERNEL - 1  # causal convs keep 2 frames of left context
# Own-buffer growth without a bound (offline, priming): at least this many slots at a time, at least doubling.
GROW_MIN_SLOTS = 64


@dataclass(frozen=True)
class KeySlots:
    """Where a chunk's new keys go in the own buffers, and which slots attention reads.

    Attributes:
        index: int64 `[F]` own-buffer index of each new frame.
        start: first own index when the new slots are contiguous (cheap slice copy), else None.
        span: attention reads own slots `[0, span)`.
        shared_span: attention reads shared prompt slots `[0, shared_span)` (0: none).
        bias: additive mask `[1, 1, 1, span]` over the own slots read (0 or -inf), None when all are valid.
        shared_bias: same over the shared slots read.
    """

    index: torch.Tensor
    start: int | None
    span: int
    shared_span: int
    bias: torch.Tensor | None
    shared_bias: torch.Tensor | None


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    shared_k: torch.Tensor | None = None,
    shared_v: torch.Tensor | None = None,
    shared_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax attention of `q [B, H, F, d]` over the union of own keys and (optionally) shared keys.

    Args:
        q: queries.
        k: own keys `[B, H, S, d]` (already sliced to the span read; S >= 1).
        v: own values, same shape.
        bias: additive mask `[1, 1, 1, S]` or None.
        shared_k: shared prompt keys `[B, H, Ps, d]` (sliced), or None / Ps = 0 for none.
        shared_v: shared prompt values.
        shared_bias: additive mask `[1, 1, 1, Ps]` or None.

    Returns:
        `[B, H, F, d]`. With shared keys, each key set runs through a fused attention kernel that also returns
        its log-sum-exp, and the two partial results are merged exactly (softmax over the union), so the key
        sets are never copied into one tensor. Where no such kernel exists the two sets are concatenated.
    """
    if shared_k is None or shared_v is None or shared_k.shape[2] == 0:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    if q.device.type == "cpu":
        flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        out_s, lse_s = flash(q, shared_k, shared_v, 0.0, False, attn_mask=shared_bias)[:2]
        out_o, lse_o = flash(q, k, v, 0.0, False, attn_mask=bias)[:2]
        lse = torch.logaddexp(lse_s, lse_o)
        merged = out_s * torch.exp(lse_s - lse).unsqueeze(-1) + out_o * torch.exp(lse_o - lse).unsqueeze(-1)
        return merged.to(q.dtype)
    mask: torch.Tensor | None = None
    if bias is not None or shared_bias is not None:
        mask = torch.cat(
            [
                shared_bias if shared_bias is not None else q.new_zeros(1, 1, 1, shared_k.shape[2]),
                bias if bias is not None else q.new_zeros(1, 1, 1, k.shape[2]),
            ],
            dim=-1,
        )
    keys, values = torch.cat([shared_k, k], dim=2), torch.cat([shared_v, v], dim=2)
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)


def _bias(valid: list[int], span: int, like: torch.Tensor) -> torch.Tensor | None:
    """Additive mask over `span` slots: 0 at `valid`, -inf elsewhere; None when all are valid."""
    if len(valid) == span:
        return None
    bias = torch.full((span,), float("-inf"), dtype=like.dtype)
    bias[valid] = 0.0
    return bias.view(1, 1, 1, -1).to(like.device)


class DitCache:
    """DiT caches of one stream (or of a voice being primed) for every ODE step.

    Buffers: own `k`, `v` `[steps, depth, B, H, capacity, d]` (capacity may be 0 until the first chunk);
    `shared_k`, `shared_v` the voice's prompt keys `[steps, depth, B, H, P, d]` or None; `conv1`, `conv2`
    `[steps, depth, B, 2, h]` (per stream: updated in place every chunk). `len(order)` is the reference cache
    length and therefore the noise offset.
    """

    def __init__(
        self,
        config: DitConfig,
        steps: int,
        batch: int,
        capacity: int,
        like: torch.Tensor,
        keep_tail: int = 100,
    ) -> None:
        shape = (steps, config.depth, batch, config.num_heads, capacity, config.head_dim)
        self.k = like.new_zeros(shape)
        self.v = like.new_zeros(shape)
        conv_shape = (steps, config.depth, batch, CONV_CONTEXT, config.hidden_size)
        self.conv1 = like.new_zeros(conv_shape)
        self.conv2 = like.new_zeros(conv_shape)
        self.shared_k: torch.Tensor | None = None
        self.shared_v: torch.Tensor | None = None
        self.order: list[int] = []
        self.prompt_frames = 0
        self.keep_tail = keep_tail
        self.max_slots: int | None = None  # own-buffer bound (None: unbounded, offline and priming)
        self._pending: list[int] = []

    @property
    def shared(self) -> int:
        """Slots in the shared prompt part."""
        return 0 if self.shared_k is None else int(self.shared_k.shape[4])

    @property
    def capacity(self) -> int:
        """Slots of the own buffer."""
        return int(self.k.shape[4])

    @property
    def length(self) -> int:
        """Keys in the cache (the reference's `att_cache.shape[4]`)."""
        return len(self.order)

    def share(self, max_chunk_frames: int) -> DitCache:
        """A stream's cache over this primed cache: its keys become the shared prompt part (no copy).

        Only the conv contexts (2 frames per step and block) are copied; the own key buffer is allocated by
        the first chunk. This cache must not be written afterwards.
        """
        new = DitCache.__new__(DitCache)
        new.shared_k = self.k[:, :, :, :, : len(self.order)]
        new.shared_v = self.v[:, :, :, :, : len(self.order)]
        new.k = self.k.new_empty((*self.k.shape[:4], 0, self.k.shape[5]))
        new.v = new.k
        new.conv1 = self.conv1.clone()
        new.conv2 = self.conv2.clone()
        new.order = list(self.order)
        new.prompt_frames = self.prompt_frames
        new.keep_tail = self.keep_tail
        new.max_slots = self.prompt_frames + self.keep_tail + max_chunk_frames
        new._pending = []
        return new

    def _grow(self, needed: int) -> None:
        # A stream reserves its bound at once: `empty` only reserves address space, and pages become resident
        # when a chunk first writes them, so this costs no copy now and none later (growing by doubling
        # copied up to the whole buffer inside a chunk).
        capacity = max(needed, 2 * self.capacity, GROW_MIN_SLOTS)
        if self.max_slots is not None:
            capacity = max(needed, self.max_slots)
        # Unwritten slots are never read: slots are taken lowest-first, so every slot below the highest one in
        # use has been written, and attention reads only up to that one.
        k = self.k.new_empty((*self.k.shape[:4], capacity, self.k.shape[5]))
        v = torch.empty_like(k)
        k[:, :, :, :, : self.capacity] = self.k
        v[:, :, :, :, : self.capacity] = self.v
        self.k, self.v = k, v

    def _detach_prompt(self) -> None:
        """Copy the prompt keys still in use into the own buffer and stop reading the shared ones."""
        shared = self.shared
        kept = [s for s in self.order if s < shared]
        used = {s - shared for s in self.order if s >= shared}
        free = [j for j in range(self.capacity) if j not in used]
        if len(free) < len(kept):
            self._grow(self.capacity + len(kept) - len(free))
            free = [j for j in range(self.capacity) if j not in used]
        assert self.shared_k is not None and self.shared_v is not None
        src = torch.tensor(kept, dtype=torch.long, device=self.k.device)
        dst = torch.tensor(free[: len(kept)], dtype=torch.long, device=self.k.device)
        self.k.index_copy_(4, dst, self.shared_k.index_select(4, src))
        self.v.index_copy_(4, dst, self.shared_v.index_select(4, src))
        moved = dict(zip(kept, free, strict=False))
        self.order = [moved[s] if s < shared else s - shared for s in self.order]
        self.shared_k = self.shared_v = None

    def begin_chunk(self, frames: int) -> KeySlots:
        """Reserve own slots for `frames` new keys; returns their placement and what attention reads."""
        # Never on a stream's first chunk (short prompts are within the tail from the start): that one stays free.
        shared_kept = sum(1 for s in self.order if s < self.shared)
        if self.shared_k is not None and shared_kept <= self.keep_tail and shared_kept < len(self.order):
            self._detach_prompt()
        shared = self.shared
        used = {s - shared for s in self.order if s >= shared}
        free = [s for s in range(self.capacity) if s not in used]
        if len(free) < frames:
            self._grow(self.capacity + frames - len(free))
            free = [s for s in range(self.capacity) if s not in used]
        new = free[:frames]
        own_valid = used.union(new)
        span = max(own_valid) + 1 if own_valid else 0
        shared_valid = [s for s in self.order if s < shared]
        shared_span = max(shared_valid) + 1 if shared_valid else 0
        self._pending = [shared + s for s in new]
        contiguous = bool(new) and new == list(range(new[0], new[0] + frames))
        index = torch.tensor(new, dtype=torch.long, device=self.k.device)
        # Holes (evicted keys) below the last slot read are masked. While the keys are prefixes (until the
        # first trim) no mask is built: attention with a mask is ~30% slower on the short first chunks.
        return KeySlots(
            index,
            new[0] if contiguous else None,
            span,
            shared_span,
            _bias(sorted(own_valid), span, self.k),
            _bias(shared_valid, shared_span, self.k),
        )

    def end_chunk(self) -> None:
        """Record the chunk's keys in front of the cache order (the reference prepends new keys)."""
        self.order = self._pending + self.order
        self._pending = []

    def trim(self) -> None:
        """Reference trim: above P + tail keys, keep the first P and the last `keep_tail` of the order."""
        limit = self.prompt_frames + self.keep_tail
        if len(self.order) > limit:
            self.order = self.order[: self.prompt_frames] + self.order[-self.keep_tail :]

    def step_keys(
        self, step: int, block: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(own k, own v, shared k, shared v) buffers of one (step, block)."""
        if self.shared_k is None or self.shared_v is None:
            return self.k[step, block], self.v[step, block], None, None
        return (
            self.k[step, block],
            self.v[step, block],
            self.shared_k[step, block],
            self.shared_v[step, block],
        )

    def packed_attention(self) -> torch.Tensor:
        """The reference's K|V layout `[steps, depth, B, H, T, 2d]` in cache order (for tests)."""
        k, v = self.k, self.v
        if self.shared_k is not None and self.shared_v is not None:
            k, v = torch.cat([self.shared_k, k], dim=4), torch.cat([self.shared_v, v], dim=4)
        index = torch.tensor(self.order, dtype=torch.long, device=k.device)
        return torch.cat([k.index_select(4, index), v.index_select(4, index)], dim=-1)

    def packed_conv(self) -> torch.Tensor:
        """The reference's conv cache `[steps, depth, B, 2h, 2]` (conv1 input | conv2 input)."""
        return torch.cat([self.conv1, self.conv2], dim=4).transpose(3, 4)

    def nbytes(self) -> int:
        """Bytes this cache has written (resident): own key slots up to the highest used, and conv contexts.

        The shared prompt keys are the voice's and are not counted; reserved but never written slots are not
        counted either (see `bound_nbytes`).
        """
        used = [s - self.shared for s in self.order if s >= self.shared]
        slots = max(used) + 1 if used else 0
        steps, depth, batch, heads, _, dim = self.k.shape
        per_slot = steps * depth * batch * heads * dim * self.k.element_size()
        return 2 * slots * per_slot + sum(t.numel() * t.element_size() for t in (self.conv1, self.conv2))

    def bound_nbytes(self) -> int:
        """Most bytes this cache can own: the own buffer at `max_slots` plus the conv contexts."""
        slots = self.max_slots if self.max_slots is not None else self.capacity
        steps, depth, batch, heads, _, dim = self.k.shape
        per_slot = steps * depth * batch * heads * dim * self.k.element_size()
        conv = sum(t.numel() * t.element_size() for t in (self.conv1, self.conv2))
        return 2 * slots * per_slot + conv
