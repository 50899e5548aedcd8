"""Neural-source-filter excitation for the HiFT vocoder: f0 predictor and harmonic sine source.

The source is the "type 2" NSF of CosyVoice2 (docs/TOKEN2WAV.md §3.4, §7.3): the phase is
accumulated at frame rate and linearly interpolated to the sample rate, which keeps it cheap (no per-sample
cumulative sum) and smooth. Parity with the oracle depends on the exact float32 operation order, so
`harmonic_phase` spells it out step by step; do not "simplify" it algebraically.

Randomness: the reference draws a random initial phase per harmonic (not the fundamental) and additive
Gaussian noise. `NSFSource` takes an optional `torch.Generator` for both, or replaces both with zeros when
`deterministic=True` (the oracle's setting). Note that the initial phase is added to sample 0 only, and the
linear down-sampling to frame rate reads samples 480 i + 239.5 (align_corners=False), so it never reaches
the output: in this source type only the noise is actually random (a test pins this down).

Two implementations of the same source. `NSFSource.forward` follows the reference step by step on the
sample-rate f0, one stream at a time (the parity arm). `NSFSource.excitation` gives the same values for a
whole batch of streams in one pass with less work (docs/TOKEN2WAV.md §8.2): the phase increments, the
voicing and the noise amplitude are constant within a frame, so they are computed per frame (the reference
computes them for each of the 480 samples of a frame, then averages the increments back down to frame rate,
which returns the same float32 values); the random draws stay per stream, in the reference's order, so a
seeded stream gives the same excitation whichever streams it is batched with; and no sine is computed for
the samples a streaming call overwrites with the previous call's excitation anyway.

Threading: modules hold weights only; calls are re-entrant as long as each caller passes its own generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# The reference keeps the fundamental's initial phase at zero and randomises only the overtones.
_FUNDAMENTAL = 0
# Unvoiced noise std is the sine amplitude divided by this (reference SineGen constant).
_UNVOICED_NOISE_DIVISOR = 3.0
# Number of weight-normalised conv + ELU stages in the f0 predictor (ConvRNNF0Predictor).
F0_CONDNET_LAYERS = 5
_F0_KERNEL = 3


class F0Predictor(nn.Module):
    """`ConvRNNF0Predictor`: 5 x (Conv1d k3 + ELU), Linear -> |.|, giving f0 in Hz per mel frame.

    Parameter names follow the checkpoint: `condnet.{0,2,4,6,8}` (ELUs sit at the odd indices) and
    `classifier`. Weight norm is folded at load time, so the convs are plain `Conv1d`.
    """

    def __init__(self, in_channels: int, cond_channels: int, num_class: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(F0_CONDNET_LAYERS):
            layers.append(
                nn.Conv1d(in_channels if i == 0 else cond_channels, cond_channels, _F0_KERNEL, padding=1)
            )
            layers.append(nn.ELU())
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cond_channels, num_class)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Predict f0.

        Args:
            mel: log-mel [B, 80, T].

        Returns:
            f0 in Hz [B, T] (non-negative).
        """
        h = self.condnet(mel).transpose(1, 2)  # [B, T, C]
        return torch.abs(self.classifier(h).squeeze(-1))


def harmonic_phase(
    fn: torch.Tensor, sampling_rate: int, upsample_scale: int, initial_phase: torch.Tensor | None
) -> torch.Tensor:
    """Phase track of the fundamental and its harmonics, in the reference float32 operation order.

    Args:
        fn: per-harmonic frequency at the sample rate, [B, L, H] with L = T * upsample_scale: f0
            nearest-upsampled by `upsample_scale`, times the harmonic numbers 1..H.
        sampling_rate: output sample rate in Hz.
        upsample_scale: samples per mel frame (480).
        initial_phase: [B, H] initial phase in cycles added to the first increment (column 0, the
            fundamental, is 0 in the reference), or None for all-zero phases.

    Returns:
        Phase in radians [B, L, H] (not wrapped).
    """
    increments = (fn / sampling_rate) % 1  # cycles per sample, [B, L, H]
    if initial_phase is not None:
        increments[:, 0, :] = increments[:, 0, :] + initial_phase
    # Down to frame rate (f0 is constant per frame, so this is the per-frame increment), accumulate,
    # then back up: the reference multiplies by 2, then by pi, then by the scale, in this order.
    per_frame = F.interpolate(increments.transpose(1, 2), scale_factor=1 / upsample_scale, mode="linear")
    phase = torch.cumsum(per_frame.transpose(1, 2), dim=1) * 2 * math.pi
    phase = F.interpolate(phase.transpose(1, 2) * upsample_scale, scale_factor=upsample_scale, mode="linear")
    return phase.transpose(1, 2)


def frame_phase(
    f0: torch.Tensor, multiples: torch.Tensor, sampling_rate: int, upsample_scale: int
) -> torch.Tensor:
    """`harmonic_phase` from frame-rate f0: the same float32 values, without per-sample increments.

    The reference's per-sample increments are constant within a frame (f0 is nearest-upsampled), and its
    linear down-sampling reads the two middle samples of each frame with weights 1/2 and 1/2, which returns
    that constant exactly. So the increments are computed once per frame, with the same operations in the
    same order, and only the final up-sampling runs at the sample rate. The initial phase is not taken: the
    reference adds it to sample 0, which that down-sampling never reads.

    Args:
        f0: f0 in Hz per mel frame, [B, T].
        multiples: harmonic numbers 1..H, [H].
        sampling_rate: output sample rate in Hz.
        upsample_scale: samples per mel frame (480).

    Returns:
        Phase in radians [B, H, T * upsample_scale] (channel-major: the layout the up-sampling produces).
    """
    increments = (f0.unsqueeze(-1) * multiples.view(1, 1, -1) / sampling_rate) % 1  # [B, T, H]
    phase = torch.cumsum(increments, dim=1) * 2 * math.pi
    return F.interpolate(phase.transpose(1, 2) * upsample_scale, scale_factor=upsample_scale, mode="linear")


class NSFSource(nn.Module):
    """`SourceModuleHnNSF2`: harmonic sines + noise merged by Linear(H -> 1) and tanh.

    Holds only `l_linear` (checkpoint name `m_source.l_linear`).
    """

    def __init__(
        self,
        sampling_rate: int,
        upsample_scale: int,
        nb_harmonics: int,
        sine_amp: float,
        noise_std: float,
        voiced_threshold: float,
    ) -> None:
        super().__init__()
        self.sampling_rate = sampling_rate
        self.upsample_scale = upsample_scale
        self.num_sines = nb_harmonics + 1
        self.sine_amp = sine_amp
        self.noise_std = noise_std
        self.voiced_threshold = voiced_threshold
        self.l_linear = nn.Linear(self.num_sines, 1)

    def forward(
        self, f0_up: torch.Tensor, *, deterministic: bool, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Build the excitation.

        Args:
            f0_up: f0 at the sample rate, [B, L, 1] (nearest-upsampled from frame rate).
            deterministic: zero initial phases and zero noise (the oracle's setting).
            generator: random source for phases and noise when not deterministic (None: torch default).

        Returns:
            Excitation [B, L, 1] in (-1, 1).
        """
        batch = f0_up.shape[0]
        multiples = torch.arange(1, self.num_sines + 1, dtype=f0_up.dtype, device=f0_up.device)
        fn = f0_up * multiples.view(1, 1, -1)  # [B, L, H]
        initial_phase: torch.Tensor | None = None
        if not deterministic:
            initial_phase = torch.rand(
                batch, self.num_sines, generator=generator, device=f0_up.device, dtype=f0_up.dtype
            )
            initial_phase[:, _FUNDAMENTAL] = 0
        sines = torch.sin(harmonic_phase(fn, self.sampling_rate, self.upsample_scale, initial_phase))
        sines = sines * self.sine_amp
        uv = (f0_up > self.voiced_threshold).to(f0_up.dtype)  # [B, L, 1]
        if deterministic:
            sines = sines * uv
        else:
            noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / _UNVOICED_NOISE_DIVISOR
            noise = noise_amp * torch.randn(
                sines.shape, generator=generator, device=sines.device, dtype=sines.dtype
            )
            sines = sines * uv + noise
        return torch.tanh(self.l_linear(sines))

    def excitation(
        self,
        f0: torch.Tensor,
        *,
        deterministic: bool,
        generators: Sequence[torch.Generator | None],
        prefixes: Sequence[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """The excitation of a batch of windows in one pass (module docstring); row i equals `forward` on it.

        Args:
            f0: f0 in Hz per mel frame, [B, T].
            deterministic: zero initial phases and zero noise (the oracle's setting).
            generators: per row, its random source (None: torch's default), drawn from in row order.
            prefixes: per row, `[1, 1, n]` excitation that replaces the row's first n samples (the streaming
                source cache), or None.

        Returns:
            Excitation [B, 1, T * upsample_scale] in (-1, 1), prefixes applied.
        """
        batch, frames = f0.shape
        samples = frames * self.upsample_scale
        prefixes = list(prefixes) if prefixes is not None else [None] * batch
        overwritten = [0 if p is None else int(p.shape[-1]) for p in prefixes]
        if max(overwritten) > samples:
            raise ValueError(f"cache_source has {max(overwritten)} samples, more than the window's {samples}")
        skip = min(overwritten)  # samples every row overwrites: no sine is computed for them
        multiples = torch.arange(1, self.num_sines + 1, dtype=f0.dtype, device=f0.device)
        phase = frame_phase(f0, multiples, self.sampling_rate, self.upsample_scale)[:, :, skip:]
        # Channel-major `[B, H, L - skip]`, the layout the phase comes in: every pass below reads it
        # contiguously (the noise, drawn sample-major like the reference's, is read through a transposed view).
        sines = torch.sin(phase).mul_(self.sine_amp)
        uv_frames = (f0 > self.voiced_threshold).to(f0.dtype)
        sines.mul_(uv_frames.repeat_interleave(self.upsample_scale, dim=1)[:, None, skip:])
        if not deterministic:
            amp_frames = (
                uv_frames * self.noise_std + (1 - uv_frames) * self.sine_amp / _UNVOICED_NOISE_DIVISOR
            )
            noise_amp = amp_frames.repeat_interleave(self.upsample_scale, dim=1)[:, None, skip:]
            noise = sines.new_empty(samples, self.num_sines)  # one row's draws, reused (stays in cache)
            for row, generator in enumerate(generators):
                # The reference's draws in its order: the initial phases (no effect, see frame_phase), then
                # the noise of every sample, overwritten ones included, so seeded streams keep their values.
                torch.rand(1, self.num_sines, generator=generator, device=f0.device, dtype=f0.dtype)
                noise.normal_(generator=generator)
                sines[row].addcmul_(noise_amp[row], noise[skip:].T)
        # l_linear (H -> 1) as one [1, H] x [B, H, L] product, then tanh, written after the skipped samples.
        out = sines.new_empty(batch, 1, samples)
        merged = torch.matmul(self.l_linear.weight, sines).add_(self.l_linear.bias.view(1, 1, 1))
        torch.tanh(merged, out=out[:, :, skip:])
        for row, prefix in enumerate(prefixes):
            if prefix is not None and prefix.shape[-1] > 0:
                out[row, :, : prefix.shape[-1]] = prefix[0]
        return out
