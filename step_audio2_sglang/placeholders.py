"""Step-Audio-2 audio placeholder arithmetic: how many prompt tokens a clip becomes inside SGLang.

Torch-free and dependency-free on purpose: the SGLang plugin (`step_audio2_sglang.audio`, which computes the
features) and the server's prompt builder (`realtime.backends.sglang.prompt`, which must predict the prompt
length SGLang reports) import this one module, so there is one formula, not two kept equal by a test.

A clip (16 kHz mono) is cut into blocks of at most 25 s; each block becomes ``<audio_start> <audio_patch>×N
<audio_end>``. A block of T mel frames (hop 160 after appending 479 zero samples, last frame dropped) yields
``enc = (T + 1) // 2 // 2`` encoder frames (25 Hz) and ``N = (enc − 1) // 2 + 1`` placeholders (12.5 Hz): the
adapter's Conv1d with kernel 3, stride 2, padding 1.
"""

from __future__ import annotations

from collections.abc import Sequence

SAMPLE_RATE = 16_000  # Hz, what the encoder was trained on
HOP_LENGTH = 160  # 10 ms hop: 100 mel frames per second
PAD_SAMPLES = 479  # zero samples appended before the STFT (reference `padding_mels`)
BLOCK_SECONDS = 25  # longest audio block per <audio_start>..<audio_end> span
BLOCK_SAMPLES = BLOCK_SECONDS * SAMPLE_RATE
ENCODER_DOWNSAMPLE = 2  # conv stride 2: 100 Hz -> 50 Hz
ENCODER_POOL = 2  # average pool 2: 50 Hz -> 25 Hz
ADAPTER_KERNEL = 3
ADAPTER_STRIDE = 2
ADAPTER_PADDING = 1
PLACEHOLDER_TOKENS = 3  # <audio_start><audio_patch><audio_end> as sent, before expansion
SPAN_MARKERS = 2  # <audio_start> and <audio_end> around each expanded block


def num_mel_frames(n_samples: int) -> int:
    """Mel frames of a block of ``n_samples`` samples (centred STFT of the padded block, last frame dropped)."""
    return (n_samples + PAD_SAMPLES) // HOP_LENGTH


def num_encoder_frames(mel_frames: int) -> int:
    """Encoder output frames (25 Hz) for ``mel_frames`` mel frames: conv stride 2, then average pool 2."""
    return (mel_frames + 1) // ENCODER_DOWNSAMPLE // ENCODER_POOL


def num_patches(mel_frames: int) -> int:
    """Placeholder (``<audio_patch>``) count of one block with ``mel_frames`` mel frames (12.5 Hz)."""
    enc = num_encoder_frames(mel_frames)
    return (enc + 2 * ADAPTER_PADDING - ADAPTER_KERNEL) // ADAPTER_STRIDE + 1


def block_patch_counts(n_samples: int, block_samples: int = BLOCK_SAMPLES) -> list[int]:
    """Placeholder counts of every block of a clip of ``n_samples`` samples, without computing features."""
    if n_samples <= 0:
        raise ValueError("empty audio clip: nothing to encode")
    full, rest = divmod(n_samples, block_samples)
    sizes = [block_samples] * full + ([rest] if rest else [])
    return [num_patches(num_mel_frames(size)) for size in sizes]


def clip_prompt_tokens(n_samples: int, block_samples: int = BLOCK_SAMPLES) -> int:
    """Prompt tokens one clip occupies after expansion: per block ``<audio_start>`` + N patches + ``<audio_end>``."""
    return sum(count + SPAN_MARKERS for count in block_patch_counts(n_samples, block_samples))


def expected_prompt_tokens(
    n_prompt_ids: int, clip_samples: Sequence[int], block_samples: int = BLOCK_SAMPLES
) -> int:
    """Prompt length SGLang should report for a prompt holding one 3-token placeholder per clip.

    Args:
        n_prompt_ids: length of the prompt as sent (each clip as ``<audio_start><audio_patch><audio_end>``).
        clip_samples: sample count of every clip at 16 kHz, in prompt order.
        block_samples: block length in samples.
    """
    return n_prompt_ids + sum(clip_prompt_tokens(n, block_samples) - PLACEHOLDER_TOKENS for n in clip_samples)
