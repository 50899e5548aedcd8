"""Step-Audio-2 audio front end: 25 s blocks, Whisper log-mel features, placeholder counts and expansion.

Pure torch (no SGLang import), so it is unit-tested on its own and shared by the SGLang processor and by clients
that must predict the prompt length SGLang reports (``meta_info.prompt_tokens``).

Conventions (Step-Audio-2 reference): 16 kHz mono float samples in [-1, 1]; each clip is cut into blocks of at
most 25 s and every block becomes its own ``<audio_start> <audio_patch>×N <audio_end>`` span. Mel features: 128
bins, ``n_fft`` 400, hop 160, Hann window, 479 zero samples appended before the (centred) STFT, last frame dropped,
log10 clamped to (max − 8), then ``(x + 4) / 4``. A block of T mel frames yields
``enc = (T + 1) // 2 // 2`` encoder frames (25 Hz) and ``N = (enc − 1) // 2 + 1`` placeholders (12.5 Hz).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
import torchaudio

from step_audio2_sglang.placeholders import (
    BLOCK_SAMPLES,
    HOP_LENGTH,
    PAD_SAMPLES,
    SAMPLE_RATE,
    block_patch_counts,
    clip_prompt_tokens,
    expected_prompt_tokens,
    num_encoder_frames,
    num_mel_frames,
    num_patches,
)

__all__ = [
    "BLOCK_SAMPLES",
    "N_MELS",
    "SAMPLE_RATE",
    "PlaceholderIds",
    "block_patch_counts",
    "clip_prompt_tokens",
    "expand_placeholders",
    "expected_prompt_tokens",
    "log_mel",
    "num_encoder_frames",
    "num_mel_frames",
    "num_patches",
    "split_blocks",
]

N_FFT = 400  # 25 ms window
N_MELS = 128
LOG_FLOOR = 1e-10  # clamp before log10
DYNAMIC_RANGE = 8.0  # log10 units kept below the maximum (80 dB)
LOG_OFFSET = 4.0  # (x + 4) / 4 normalisation
LOG_SCALE = 4.0


@dataclass(frozen=True)
class PlaceholderIds:
    """Token ids of the audio placeholder ``<audio_start><audio_patch><audio_end>``."""

    audio_start: int
    audio_patch: int
    audio_end: int


def split_blocks(samples: torch.Tensor, block_samples: int = BLOCK_SAMPLES) -> list[torch.Tensor]:
    """Cut a clip into consecutive blocks of at most ``block_samples`` samples.

    Args:
        samples: float tensor of shape (n,), 16 kHz mono; must not be empty.
        block_samples: block length in samples (25 s by default).

    Returns:
        Views of ``samples`` in order; every block is non-empty, only the last may be shorter.
    """
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples of shape (n,), got {tuple(samples.shape)}")
    if samples.numel() == 0:
        raise ValueError("empty audio clip: nothing to encode")
    return list(torch.split(samples, block_samples))


@lru_cache(maxsize=1)
def mel_filters() -> torch.Tensor:
    """Slaney-normalised mel filter bank of shape (N_MELS, N_FFT // 2 + 1), float32 (cached)."""
    banks: torch.Tensor = torchaudio.functional.melscale_fbanks(
        n_freqs=N_FFT // 2 + 1,
        f_min=0.0,
        f_max=SAMPLE_RATE / 2,
        n_mels=N_MELS,
        sample_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return banks.T.contiguous()


def log_mel(samples: torch.Tensor) -> torch.Tensor:
    """Whisper-style log-mel features of one block.

    Args:
        samples: float tensor of shape (n,), 16 kHz mono, n > 0.

    Returns:
        float32 tensor of shape (N_MELS, num_mel_frames(n)).
    """
    audio = torch.nn.functional.pad(samples.to(torch.float32), (0, PAD_SAMPLES))
    window = torch.hann_window(N_FFT, device=audio.device)
    stft = torch.stft(audio, N_FFT, HOP_LENGTH, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2  # (freqs, frames): drop the last frame like the reference
    mel = mel_filters().to(audio.device) @ power
    logs = torch.clamp(mel, min=LOG_FLOOR).log10()
    logs = torch.maximum(logs, logs.max() - DYNAMIC_RANGE)
    features: torch.Tensor = (logs + LOG_OFFSET) / LOG_SCALE
    return features


def clip_features(samples: torch.Tensor, block_samples: int = BLOCK_SAMPLES) -> list[torch.Tensor]:
    """Log-mel features of every block of a clip: a list of (N_MELS, T_i) float32 tensors."""
    return [log_mel(block) for block in split_blocks(samples, block_samples)]


def expand_placeholders(
    ids: Sequence[int], patch_counts: Sequence[Sequence[int]], placeholder: PlaceholderIds
) -> list[int]:
    """Replace the i-th ``<audio_start><audio_patch><audio_end>`` by clip i's blocks.

    Every block of clip i becomes ``<audio_start>`` + ``<audio_patch>`` × N + ``<audio_end>``; all other ids
    are kept verbatim (no re-tokenisation).

    Args:
        ids: prompt ids holding exactly ``len(patch_counts)`` 3-token placeholders.
        patch_counts: for every clip, the placeholder count of each of its blocks.
        placeholder: the three placeholder ids.

    Raises:
        ValueError: when the number of placeholders and clips differ, or a clip has no block.
    """
    triple = [placeholder.audio_start, placeholder.audio_patch, placeholder.audio_end]
    out: list[int] = []
    clip = 0
    i = 0
    while i < len(ids):
        if list(ids[i : i + 3]) == triple:
            if clip >= len(patch_counts):
                raise ValueError(
                    f"prompt has more audio placeholders than the {len(patch_counts)} clips given"
                )
            if not patch_counts[clip]:
                raise ValueError(f"audio clip {clip} has no blocks")
            for count in patch_counts[clip]:
                out.append(placeholder.audio_start)
                out.extend([placeholder.audio_patch] * count)
                out.append(placeholder.audio_end)
            clip += 1
            i += 3
        else:
            out.append(ids[i])
            i += 1
    if clip != len(patch_counts):
        raise ValueError(f"prompt has {clip} audio placeholders but {len(patch_counts)} clips were given")
    return out


def patch_runs(ids: Sequence[int] | torch.Tensor, patch_id: int) -> list[tuple[int, int]]:
    """Inclusive (start, end) index ranges of the consecutive ``patch_id`` runs, in order."""
    runs: list[tuple[int, int]] = []
    values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    start = -1
    for index, value in enumerate(values):
        if value == patch_id:
            if start < 0:
                start = index
        elif start >= 0:
            runs.append((start, index - 1))
            start = -1
    if start >= 0:
        runs.append((start, len(values) - 1))
    return runs
