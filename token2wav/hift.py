"""HiFT vocoder (NSF + iSTFTNet): mel [B, 80, T] at 50 Hz -> waveform [B, 480 T] at 24 kHz.

Architecture: docs/TOKEN2WAV.md §3.4; checkpoint layout and its two weight-norm namings: TOKEN2WAV.md §1.3.
Parameter names and shapes equal the released `hift.pt` after weight norm is folded into plain `.weight`
tensors (`load_hift_state_dict` does the folding), so inference pays no parametrization overhead.

HiFT is not causal; streaming uses a mel/source cache and a cross-fade (`token2wav.vocoder_stream`).

Threading: a `HiFTGenerator` holds weights only. `inference` allocates everything it returns, so one module
can serve many streams (from one thread at a time, like any torch module).
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from token2wav.config import HiftConfig
from token2wav.errors import ModelLoadError
from token2wav.nsf import F0Predictor, NSFSource

# Slope of the final leaky ReLU before conv_post (torch's default; the stages use `lrelu_slope`).
_POST_LRELU_SLOPE = 0.01
_PRE_POST_KERNEL = 7
# Snake: x + 1/(alpha + eps) * sin(alpha x)^2; eps guards alpha == 0 (reference constant).
_SNAKE_EPS = 1e-9
# Clip of the predicted STFT magnitude before the iSTFT (exp of the log-magnitude channels).
_MAGNITUDE_MAX = 100.0
_CHECKPOINT_PREFIX = "generator."


def samples_per_frame(config: HiftConfig) -> int:
    """Output samples per mel frame: prod(upsample_rates) * iSTFT hop (480 for the released model)."""
    return math.prod(config.upsample_rates) * config.hop_len


def stft_channels(config: HiftConfig) -> int:
    """Real + imaginary bins of the source STFT: n_fft + 2 (18)."""
    return config.n_fft + 2


def _same_padding(kernel_size: int, dilation: int) -> int:
    return (kernel_size * dilation - dilation) // 2


class Snake(nn.Module):
    """Snake activation with a per-channel linear-scale alpha [C] (checkpoint name `alpha`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.view(1, -1, 1)
        # x + sin(alpha x)^2 / alpha in 4 passes over the (large) activation instead of 5: the square runs in
        # place on the temporary and the scale-and-add is one addcmul.
        wave = torch.sin(x * alpha).square_()
        return torch.addcmul(x, 1.0 / (alpha + _SNAKE_EPS), wave)


class ResBlock(nn.Module):
    """HiFi-GAN residual block with Snake activations: per dilation, x += conv2(snake(conv1(snake(x))))."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=_same_padding(kernel_size, d))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=_same_padding(kernel_size, 1))
            for _ in dilations
        )
        self.activations1 = nn.ModuleList(Snake(channels) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(channels) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv1, conv2, act1, act2 in zip(
            self.convs1, self.convs2, self.activations1, self.activations2, strict=True
        ):
            x = conv2(act2(conv1(act1(x)))) + x
        return x


def _periodic_hann(n_fft: int) -> torch.Tensor:
    # scipy.signal.get_window("hann", n, fftbins=True) in float64, stored as float32 like the reference.
    phases = np.linspace(-np.pi, np.pi, n_fft + 1)[:n_fft]
    return torch.from_numpy((0.5 + 0.5 * np.cos(phases)).astype(np.float32))


class HiFTGenerator(nn.Module):
    """NSF + iSTFTNet vocoder with an f0 predictor (module tree = released checkpoint key layout).

    Args:
        config: hyper-parameters.
        deterministic_source: zero NSF initial phases and noise (oracle parity); otherwise they are drawn
            from the generator passed to `inference`.
    """

    stft_window: torch.Tensor

    def __init__(self, config: HiftConfig | None = None, *, deterministic_source: bool = False) -> None:
        super().__init__()
        cfg = config or HiftConfig()
        self.config = cfg
        self.deterministic_source = deterministic_source
        base = cfg.base_channels
        n_stages = len(cfg.upsample_rates)
        self.samples_per_frame = samples_per_frame(cfg)
        self.m_source = NSFSource(
            cfg.sampling_rate,
            self.samples_per_frame,
            cfg.nb_harmonics,
            cfg.nsf_alpha,
            cfg.nsf_sigma,
            cfg.nsf_voiced_threshold,
        )
        self.conv_pre = nn.Conv1d(cfg.in_channels, base, _PRE_POST_KERNEL, padding=_PRE_POST_KERNEL // 2)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(base >> i, base >> (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True))
        )
        # The source STFT (hop = istft hop) is brought to each stage's rate by strided convs; the strides
        # are the cumulative products of the *later* upsampling rates (15, 3, 1 for [8, 5, 3]).
        later_rates = [1, *cfg.upsample_rates[::-1][:-1]]
        strides = np.cumprod(later_rates)[::-1].tolist()
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        for i, (stride, k, d) in enumerate(
            zip(strides, cfg.source_resblock_kernel_sizes, cfg.source_resblock_dilation_sizes, strict=True)
        ):
            channels = base >> (i + 1)
            if stride == 1:
                self.source_downs.append(nn.Conv1d(stft_channels(cfg), channels, 1))
            else:
                self.source_downs.append(
                    nn.Conv1d(stft_channels(cfg), channels, stride * 2, stride, padding=stride // 2)
                )
            self.source_resblocks.append(ResBlock(channels, k, d))
        self.resblocks = nn.ModuleList(
            ResBlock(base >> (i + 1), k, d)
            for i in range(n_stages)
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True)
        )
        self.conv_post = nn.Conv1d(
            base >> n_stages, stft_channels(cfg), _PRE_POST_KERNEL, padding=_PRE_POST_KERNEL // 2
        )
        f0 = cfg.f0_predictor
        self.f0_predictor = F0Predictor(f0.in_channels, f0.cond_channels, f0.num_class)
        self.register_buffer("stft_window", _periodic_hann(cfg.n_fft), persistent=False)
        # How, not what (token2wav.options): the NSF excitation of a batch in one pass.
        self.batched_source = True

    def _stft(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L] -> [B, n_fft + 2, L / hop + 1]: real parts then imaginary parts."""
        n_fft = self.config.n_fft
        spec = torch.stft(x, n_fft, self.config.hop_len, n_fft, window=self.stft_window, return_complex=True)
        spec = torch.view_as_real(spec)
        return torch.cat([spec[..., 0], spec[..., 1]], dim=1)

    def _istft(self, magnitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        magnitude = torch.clip(magnitude, max=_MAGNITUDE_MAX)
        spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        n_fft = self.config.n_fft
        return torch.istft(spec, n_fft, self.config.hop_len, n_fft, window=self.stft_window)

    def decode(self, mel: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Filter part: mel [B, 80, T] and excitation [B, 1, 480 T] -> waveform [B, 480 T] in ±audio_limit."""
        cfg = self.config
        s_stft = self._stft(source.squeeze(1))
        x = self.conv_pre(mel)
        n_kernels = len(cfg.resblock_kernel_sizes)
        last = len(self.ups) - 1
        for i, up in enumerate(self.ups):
            x = F.leaky_relu(x, cfg.lrelu_slope)
            x = up(x)
            if i == last:
                x = F.pad(x, (1, 0), mode="reflect")  # length 120 T -> 120 T + 1 = STFT frames
            x = x + self.source_resblocks[i](self.source_downs[i](s_stft))
            xs: torch.Tensor = self.resblocks[i * n_kernels](x)
            for j in range(1, n_kernels):
                xs += self.resblocks[i * n_kernels + j](x)
            x = xs / n_kernels
        x = F.leaky_relu(x, _POST_LRELU_SLOPE)
        x = self.conv_post(x)
        n_mag = cfg.n_fft // 2 + 1
        wav = self._istft(torch.exp(x[:, :n_mag, :]), torch.sin(x[:, n_mag:, :]))
        return torch.clamp(wav, -cfg.audio_limit, cfg.audio_limit)

    def source(self, mel: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """NSF excitation for a mel window: [B, 80, T] -> [B, 1, 480 T]."""
        f0 = self.f0_predictor(mel)  # [B, T]
        f0_up = F.interpolate(f0[:, None], scale_factor=self.samples_per_frame, mode="nearest")
        s: torch.Tensor = self.m_source(
            f0_up.transpose(1, 2), deterministic=self.deterministic_source, generator=generator
        )
        return s.transpose(1, 2)

    def excite(
        self,
        mel: torch.Tensor,
        cache_sources: list[torch.Tensor | None],
        generators: list[torch.Generator | None],
    ) -> torch.Tensor:
        """NSF excitation of B windows, row i with its own cached prefix and generator: [B, 1, 480 T].

        With `batched_source` (the default) one pass over the batch (`NSFSource.excitation`); otherwise the
        reference path row by row (`source`), kept as the benchmark's and the tests' yardstick.
        """
        f0 = self.f0_predictor(mel)  # [B, T]
        if self.batched_source:
            return self.m_source.excitation(
                f0, deterministic=self.deterministic_source, generators=generators, prefixes=cache_sources
            )
        f0_up = F.interpolate(f0[:, None], scale_factor=self.samples_per_frame, mode="nearest").transpose(
            1, 2
        )
        rows = []
        for i, (cache, generator) in enumerate(zip(cache_sources, generators, strict=True)):
            row = self.m_source(
                f0_up[i : i + 1], deterministic=self.deterministic_source, generator=generator
            )
            row = row.transpose(1, 2)
            if cache is not None and cache.shape[-1] > 0:
                n = cache.shape[-1]
                if n > row.shape[-1]:
                    raise ValueError(f"cache_source has {n} samples, more than the window's {row.shape[-1]}")
                row[:, :, :n] = cache
            rows.append(row)
        return torch.cat(rows, dim=0)

    @torch.inference_mode()
    def inference_batch(
        self,
        mel: torch.Tensor,
        cache_sources: list[torch.Tensor | None],
        generators: list[torch.Generator | None],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`inference` for B windows of equal length at once; row i equals `inference` on row i alone.

        The F0 predictor and the decoder run on the whole batch; each row's NSF source reads its own generator
        (so a row's random excitation does not depend on what it is batched with).

        Args:
            mel: [B, 80, T].
            cache_sources: per row, [1, 1, S] excitation override or None.
            generators: per row, its random source (ignored when deterministic_source).
        """
        mel = mel.to(self.conv_pre.weight.dtype)
        s = self.excite(mel, cache_sources, generators)
        return self.decode(mel, s), s

    @torch.inference_mode()
    def inference(
        self,
        mel: torch.Tensor,
        cache_source: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Vocode one mel window.

        Args:
            mel: [B, 80, T] log-mel at 50 Hz.
            cache_source: [B, 1, S] excitation that replaces the first S samples of the new one (streaming
                continuity, docs/TOKEN2WAV.md §5.1 step 2); None or S = 0 for none. S <= 480 T.
            generator: random source for the NSF phases/noise (ignored when deterministic_source).
                The mel is cast to the module's dtype; keep HiFT in float32 (its sine phase is accumulated
                in the working dtype, and torch.stft has no bf16 kernel), whatever the flow's dtype.

        Returns:
            (speech [B, 480 T] clamped to ±audio_limit, source [B, 1, 480 T] after the override).
        """
        if mel.shape[0] == 1:
            return self.inference_batch(mel, [cache_source], [generator])
        mel = mel.to(self.conv_pre.weight.dtype)
        s = self.source(mel, generator)  # several rows, one generator: the reference's draws for the batch
        if cache_source is not None and cache_source.shape[-1] > 0:
            n = cache_source.shape[-1]
            if n > s.shape[-1]:
                raise ValueError(f"cache_source has {n} samples, more than the window's {s.shape[-1]}")
            s[:, :, :n] = cache_source
        return self.decode(mel, s), s


_LEGACY_G, _LEGACY_V = ".weight_g", ".weight_v"
_PARAM_G, _PARAM_V = ".parametrizations.weight.original0", ".parametrizations.weight.original1"


def fold_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """w = g * v / ||v||, norm over all dims but 0 (also for ConvTranspose, where dim 0 = in_channels)."""
    if v.is_meta or g.is_meta:
        return torch.empty_like(v)
    return torch._weight_norm(v, g, 0)


def convert_hift_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Normalise a HiFT checkpoint to our module keys.

    Strips a leading `generator.`, and folds weight-norm pairs in either naming (`weight_g`/`weight_v`
    or `parametrizations.weight.original0/1`) into a plain `weight`.

    Raises:
        ModelLoadError: a g without its v (or vice versa), or two keys mapping to one name.
    """
    plain: dict[str, torch.Tensor] = {}
    gains: dict[str, torch.Tensor] = {}
    directions: dict[str, torch.Tensor] = {}
    duplicates: list[str] = []

    def put(target: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> None:
        if key in target:
            duplicates.append(key)
        target[key] = value

    for raw_key, value in state_dict.items():
        if not isinstance(raw_key, str) or not isinstance(value, torch.Tensor):
            raise ModelLoadError(f"HiFT checkpoint: entry {raw_key!r} is not a named tensor")
        key = raw_key.removeprefix(_CHECKPOINT_PREFIX)
        for suffix_g, suffix_v in ((_LEGACY_G, _LEGACY_V), (_PARAM_G, _PARAM_V)):
            if key.endswith(suffix_g):
                put(gains, key.removesuffix(suffix_g), value)
                break
            if key.endswith(suffix_v):
                put(directions, key.removesuffix(suffix_v), value)
                break
        else:
            put(plain, key, value)
    unpaired = sorted(set(gains) ^ set(directions))
    if unpaired:
        raise ModelLoadError(f"HiFT checkpoint: weight-norm g/v pair incomplete for {unpaired}")
    for base in sorted(gains):
        g, v = gains[base], directions[base]
        if v.dim() < 2 or tuple(g.shape) != (v.shape[0],) + (1,) * (v.dim() - 1):
            raise ModelLoadError(
                f"HiFT checkpoint: {base}: weight-norm g {tuple(g.shape)} does not fit v {tuple(v.shape)}"
            )
        put(plain, f"{base}.weight", fold_weight_norm(g, v))
    if duplicates:
        raise ModelLoadError(f"HiFT checkpoint: keys given twice (after renaming): {sorted(duplicates)}")
    return plain


def load_hift_state_dict(module: HiFTGenerator, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a HiFT checkpoint (released or current naming) into `module`, strictly.

    Raises:
        ModelLoadError: missing, unexpected or mis-shaped keys, all listed.
    """
    converted = convert_hift_state_dict(state_dict)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    mis_shaped = sorted(
        f"{k}: checkpoint {tuple(converted[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(converted)
        if converted[k].shape != expected[k].shape
    )
    problems = []
    if missing:
        problems.append(f"missing {missing}")
    if unexpected:
        problems.append(f"unexpected {unexpected}")
    if mis_shaped:
        problems.append(f"wrong shape {mis_shaped}")
    if problems:
        raise ModelLoadError("HiFT checkpoint does not match the model: " + "; ".join(problems))
    module.load_state_dict(converted, strict=True)


def load_hift(
    path: str | Path,
    config: HiftConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    deterministic_source: bool = False,
) -> HiFTGenerator:
    """Build a HiFTGenerator and load `hift.pt` (released or current naming) into it, in eval mode.

    Raises:
        ModelLoadError: the file is missing or unreadable, or its keys/shapes do not match `config`.
    """
    p = Path(path)
    try:
        state_dict = torch.load(p, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise ModelLoadError(f"{p}: cannot read the HiFT checkpoint: {exc}") from None
    if not isinstance(state_dict, Mapping):
        raise ModelLoadError(f"{p}: expected a state dict, got {type(state_dict).__name__}")
    model = HiFTGenerator(config, deterministic_source=deterministic_source)
    try:
        load_hift_state_dict(model, state_dict)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{p}: {exc}") from None
    return model.to(device).eval()
