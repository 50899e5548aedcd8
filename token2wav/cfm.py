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
from token2wav.dit import DiT, DitCache, StepModulation
from token2wav.errors import Token2WavError

CFG_BATCH = 2
MEL_BINS = 80

# trace(step, x_after_step, v_cond, v_uncond): optional per-step observer for tests.
StepTrace = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def make_noise(frames: int, seed: int, channels: int = MEL_BINS) -> torch.Tensor:
    """The CFM noise buffer `randn(1, channels, frames)` from a CPU generator seeded `seed` (float32)."""
    return torch.randn(1, channels, frames, generator=torch.Generator().manual_seed(seed))


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
        frames = mu.shape[2]
        x = self.initial_noise(cache.length, frames, mu)
        steps = self.steps(mu)
        rate = self.config.inference_cfg_rate
        packed = mu.new_zeros(CFG_BATCH, 4 * MEL_BINS, frames)
        packed[0, MEL_BINS : 2 * MEL_BINS] = mu[0]
        packed[0, 2 * MEL_BINS : 3 * MEL_BINS] = spk[0].unsqueeze(-1)
        packed[0, 3 * MEL_BINS :] = cond[0]
        slots = cache.begin_chunk(frames)
        for index, step in enumerate(steps):
            packed[:, :MEL_BINS] = x
            if reuse_step_cache:
                cache.conv1.zero_()
                cache.conv2.zero_()
            v = self.estimator.forward_cached(
                packed, step.modulation, cache, 0 if reuse_step_cache else index, slots
            )
            v_cond, v_uncond = v[0:1], v[1:2]
            x = x + step.dt * ((1.0 + rate) * v_cond - rate * v_uncond)
            if trace is not None:
                trace(index, x, v_cond, v_uncond)
        cache.end_chunk()
        return x
