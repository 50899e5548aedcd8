"""CFM sampler (`CausalConditionalCFM`): Euler ODE on a cosine grid with CFG (docs/TOKEN2WAV.md §3.3).

Quirks kept for parity (docs/TOKEN2WAV.md §3.3): the time grid is `1 - cos(linspace(0, 1, S+1) *
pi/2)` in the model dtype; after each step `t += dt` and the next `dt = t_span[k+1] - t` is taken from the
accumulated t. Every step evaluates the estimator on a batch of 2 (conditional, unconditional with mu, spk
and cond zero) and mixes `v = (1 + r) v_cond - r v_uncond`.

The initial noise is a slice of one fixed buffer `[1, 80, 30000]` drawn once from a CPU generator with an
explicit seed (default 0), kept in float32 and indexed by absolute frame (offline: 0; streaming: the DiT
cache length), so runs are deterministic and the oracle's noise can be injected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from token2wav.config import CfmConfig, SamplerConfig
from token2wav.dit import DiT, StepModulation, context_index
from token2wav.dit_attention import StreamRows
from token2wav.dit_cache import DitCache
from token2wav.errors import Token2WavError

CFG_BATCH = 2
MEL_BINS = 80

# trace(step, x_after_step, v_cond, v_uncond): optional per-step observer for tests.
StepTrace = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def make_noise(frames: int, seed: int, channels: int = MEL_BINS) -> torch.Tensor:
    """The CFM noise buffer `randn(1, channels, frames)` from a CPU generator seeded `seed` (float32)."""
    return torch.randn(1, channels, frames, generator=torch.Generator().manual_seed(seed))


@dataclass(frozen=True)
class SolveItem:
    """One stream's input to a batched solve.

    Attributes:
        mu: `[1, 80, F]` encoder output for its new frames.
        spk: `[1, 80]` projected speaker embedding.
        cond: `[1, 80, F]` conditioning mel (zeros for generated frames).
        cache: its DiT caches (read and updated; its length is its noise offset).
    """

    mu: torch.Tensor
    spk: torch.Tensor
    cond: torch.Tensor
    cache: DitCache


@dataclass(frozen=True)
class EulerStep:
    """One Euler step: the t fed to the estimator, its dt, and the precomputed modulations."""

    t: torch.Tensor
    dt: torch.Tensor
    modulation: StepModulation


def time_grid(
    n_steps: int, device: torch.device, dtype: torch.dtype
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(t, dt) per Euler step, with the reference's accumulated-t arithmetic."""
    t_span = torch.linspace(0, 1, n_steps + 1, device=device, dtype=dtype)
    t_span = 1 - torch.cos(t_span * 0.5 * torch.pi)
    t, dt = t_span[0], t_span[1] - t_span[0]
    grid = []
    for step in range(1, n_steps + 1):
        grid.append((t, dt))
        t = t + dt
        if step < n_steps:
            dt = t_span[step + 1] - t
    return grid


class CausalConditionalCFM(nn.Module):
    """The flow decoder: owns the DiT estimator (state-dict prefix `decoder.estimator.`) and the noise."""

    def __init__(self, config: CfmConfig, sampler: SamplerConfig, noise: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        self.sampler = sampler
        self.estimator = DiT(config.estimator)
        # Plain attribute, not a buffer: it is not in flow.pt and must stay float32 under .to(dtype).
        self.noise = noise if noise is not None else make_noise(sampler.noise_frames, sampler.noise_seed)
        self._steps: list[EulerStep] | None = None

    def invalidate(self) -> None:
        """Forget precomputed modulations (after new weights, or a device/dtype change)."""
        self._steps = None
        self.estimator.invalidate()

    def steps(self, like: torch.Tensor) -> list[EulerStep]:
        """The Euler steps with their adaLN modulations, computed once per weights/device/dtype."""
        cached = self._steps
        if cached is None or cached[0].t.device != like.device or cached[0].t.dtype != like.dtype:
            grid = time_grid(self.sampler.n_timesteps, like.device, like.dtype)
            cached = [EulerStep(t, dt, self.estimator.modulations(t, CFG_BATCH)) for t, dt in grid]
            self._steps = cached
        return cached

    def initial_noise(self, offset: int, frames: int, like: torch.Tensor) -> torch.Tensor:
        """`noise[:, :, offset:offset+frames]` scaled by the temperature, in `like`'s device/dtype."""
        end = offset + frames
        if end > self.noise.shape[2]:
            raise Token2WavError(
                f"utterance too long: needs noise frames up to {end}, the buffer holds {self.noise.shape[2]}"
            )
        return (
            self.noise[:, :, offset:end].to(device=like.device, dtype=like.dtype) * self.sampler.temperature
        )

    def solve(
        self,
        mu: torch.Tensor,
        spk: torch.Tensor,
        cond: torch.Tensor,
        cache: DitCache,
        *,
        reuse_step_cache: bool = False,
        trace: StepTrace | None = None,
    ) -> torch.Tensor:
        """Integrate the ODE over new frames against (and into) the DiT caches.

        Args:
            mu: `[1, 80, F]` encoder output for the new frames.
            spk: `[1, 80]` projected speaker embedding.
            cond: `[1, 80, F]` conditioning mel (prompt mel, or zeros for generated frames).
            cache: DiT caches; its length before the call is the noise offset.
            reuse_step_cache: offline mode: every step uses cache step 0 from empty conv context (the
                caches are not needed after the call, so one step's worth of memory suffices).
            trace: optional observer called after every step.

        Returns:
            mel `[1, 80, F]`.
        """
        item = SolveItem(mu, spk, cond, cache)
        return self.solve_batch([item], reuse_step_cache=reuse_step_cache, trace=trace)[0]

    def solve_batch(
        self, items: list[SolveItem], *, reuse_step_cache: bool = False, trace: StepTrace | None = None
    ) -> list[torch.Tensor]:
        """`solve` for several streams at once: one estimator pass per Euler step over all their CFG pairs.

        The streams may differ in voice, frame count and cache length. All run the same Euler times (the
        grid is fixed), so they share the step modulations; each reads its own noise slice and keys. Each
        result equals the stream's `solve` alone up to floating-point summation order.

        Returns:
            mel `[1, 80, F_i]` per item, in order.
        """
        if reuse_step_cache and len(items) != 1:
            raise Token2WavError("reuse_step_cache is for a single offline pass")
        like = items[0].mu
        frames = [item.mu.shape[2] for item in items]
        longest = max(frames)
        n = len(items)
        steps = self.steps(like)
        rate = self.config.inference_cfg_rate
        x = like.new_zeros(n, MEL_BINS, longest)
        packed = like.new_zeros(CFG_BATCH * n, 4 * MEL_BINS, longest)
        streams: list[StreamRows] = []
        for i, (item, count) in enumerate(zip(items, frames, strict=True)):
            x[i, :, :count] = self.initial_noise(item.cache.length, count, like)[0]
            cond_row = CFG_BATCH * i  # the unconditional row keeps mu, spk and cond at zero
            packed[cond_row, MEL_BINS : 2 * MEL_BINS, :count] = item.mu[0]
            packed[cond_row, 2 * MEL_BINS : 3 * MEL_BINS, :count] = item.spk[0].unsqueeze(-1)
            packed[cond_row, 3 * MEL_BINS :, :count] = item.cond[0]
            streams.append(StreamRows(item.cache, item.cache.begin_chunk(count), count))
        # Conv contexts: a lone stream updates its own; a batch works on a stacked copy, written back after.
        if n == 1:
            conv1, conv2 = items[0].cache.conv1, items[0].cache.conv2
        else:
            conv1 = torch.cat([item.cache.conv1 for item in items], dim=2)
            conv2 = torch.cat([item.cache.conv2 for item in items], dim=2)
        # A compiled pass always takes the gather index (even when no row is padded): one graph for both cases.
        compiled = self.estimator.compiled_pass is not None
        rows = [f for f in frames for _ in range(CFG_BATCH)]
        ends = context_index(rows, conv1.shape[-1], like.device, always=compiled)
        for index, step in enumerate(steps):
            packed[:, :MEL_BINS] = x if n == 1 else x.repeat_interleave(CFG_BATCH, dim=0)
            if reuse_step_cache:
                conv1.zero_()
                conv2.zero_()
            at = 0 if reuse_step_cache else index
            v = self.estimator.forward_cached(
                packed, step.modulation, streams, at, conv1[at], conv2[at], ends
            )
            v_cond, v_uncond = v[0::CFG_BATCH], v[1::CFG_BATCH]
            x = x + step.dt * ((1.0 + rate) * v_cond - rate * v_uncond)
            if trace is not None and n == 1:
                trace(index, x[:, :, : frames[0]], v_cond[:, :, : frames[0]], v_uncond[:, :, : frames[0]])
        out: list[torch.Tensor] = []
        for i, (item, count) in enumerate(zip(items, frames, strict=True)):
            item.cache.end_chunk()
            if n > 1:
                item.cache.conv1.copy_(conv1[:, :, CFG_BATCH * i : CFG_BATCH * (i + 1)])
                item.cache.conv2.copy_(conv2[:, :, CFG_BATCH * i : CFG_BATCH * (i + 1)])
            out.append(x[i : i + 1, :, :count])
        return out
