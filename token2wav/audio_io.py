"""Reading and checking voice-prompt audio.

A voice prompt arrives as a file path or as an in-memory `(samples, sample_rate)` pair. This module turns
either into a validated float32 `PromptAudio` (channels first) and offers the two mono views the frontend
needs, following docs/TOKEN2WAV.md §2:

* `first_channel(...)`: channel 0, used for the speech tokens and the speaker embedding (the reference's
  `s3tokenizer.load_audio` keeps the first channel);
* `channel_mean(...)`: the average of all channels, used for the 24 kHz prompt mel.

Files are read with `soundfile` (never `torchaudio.load`, which needs torchcodec in our stack). Resampling
uses `torchaudio.functional.resample` with its default windowed-sinc kernel, like the reference.

Documented conversions: any sample rate from `MIN_SAMPLE_RATE` up is resampled; stereo or multi-channel
audio is reduced as above; integer PCM is scaled to [-1, 1]. Everything else that cannot be used (unreadable
file, empty, non-finite samples, silent, shorter than `MIN_PROMPT_SECONDS` or longer than
`MAX_PROMPT_SECONDS`) raises `VoiceError` with the reason.

Thread-safety: pure functions; safe from any thread.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio.functional as audio_functional

from token2wav.errors import VoiceError

MIN_PROMPT_SECONDS = 1.0  # < 25 prompt codes; the look-ahead needs >= 3 (docs/TOKEN2WAV.md §2.1)
MAX_PROMPT_SECONDS = 30.0  # the tokenizer's window, as in CosyVoice (docs/TOKEN2WAV.md §2.1)
MIN_SAMPLE_RATE = 8000  # below telephone band there is no speech left to condition on
MAX_CHANNELS = 8  # a 2-D array whose small side is at most this is read as (samples, channels)
# RMS below this (-60 dBFS) is treated as silence: no voice to clone, and CAM++ would embed noise.
SILENCE_RMS_DBFS = -60.0

AudioSource = str | Path | tuple[np.ndarray, int]


@dataclass(frozen=True)
class PromptAudio:
    """Decoded prompt audio.

    Attributes:
        samples: float32 array `[channels, frames]`, values nominally in [-1, 1], C-contiguous.
        sample_rate: frames per second of `samples`.
        source: a short description for error messages (file path or "<array>").
    """

    samples: np.ndarray
    sample_rate: int
    source: str

    @property
    def num_channels(self) -> int:
        """Number of channels (1 for mono)."""
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return float(self.samples.shape[1]) / self.sample_rate

    def content_hash(self) -> str:
        """SHA-256 (hex) of the decoded PCM bytes, its shape and its sample rate: the voice cache key."""
        digest = hashlib.sha256()
        digest.update(f"{self.sample_rate}:{self.samples.shape[0]}x{self.samples.shape[1]}:".encode())
        digest.update(np.ascontiguousarray(self.samples, dtype=np.float32).tobytes())
        return digest.hexdigest()


def read_prompt_audio(source: AudioSource) -> PromptAudio:
    """Decode a prompt from a file path or a `(samples, sample_rate)` pair, without judging its content.

    Args:
        source: a path readable by libsndfile (WAV, FLAC, OGG...), or `(array, sample_rate)` where the array
            is 1-D `[frames]` or 2-D; a 2-D array is `(frames, channels)` as `soundfile` returns it, or
            `(channels, frames)` when its first side is the small one (at most `MAX_CHANNELS`). Integer
            arrays are PCM and are scaled by their type's full range.

    Returns:
        The decoded audio, float32, channels first.

    Raises:
        VoiceError: unreadable file, bad array shape or dtype, bad sample rate, no samples, NaN or Inf.
    """
    if isinstance(source, tuple):
        if len(source) != 2:
            raise VoiceError("voice prompt tuple must be (samples, sample_rate)")
        array, rate = source
        return _from_array(np.asarray(array), rate, "<array>")
    path = Path(source)
    if not path.is_file():
        raise VoiceError(f"voice prompt {path}: no such file")
    try:
        info = soundfile.info(str(path))
        # refuse over-long files from the header, before decoding them into memory
        if info.samplerate > 0 and info.frames / info.samplerate > MAX_PROMPT_SECONDS:
            raise VoiceError(_too_long(str(path), info.frames / info.samplerate))
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        if isinstance(exc, VoiceError):
            raise
        raise VoiceError(f"voice prompt {path}: cannot decode audio ({exc})") from None
    return _validated(np.ascontiguousarray(data.T), int(rate), str(path))


def _from_array(array: np.ndarray, rate: object, name: str) -> PromptAudio:
    if isinstance(rate, bool) or not isinstance(rate, int | np.integer):
        raise VoiceError(f"voice prompt {name}: sample rate must be an int, got {rate!r}")
    if array.ndim == 1:
        channels_first = array[np.newaxis, :]
    elif array.ndim == 2:
        # (frames, channels) unless the first side is clearly the channel axis
        is_channels_first = array.shape[0] <= MAX_CHANNELS and array.shape[0] < array.shape[1]
        channels_first = array if is_channels_first else array.T
    else:
        raise VoiceError(f"voice prompt {name}: expected a 1-D or 2-D array, got shape {array.shape}")
    if np.issubdtype(channels_first.dtype, np.integer):
        full_scale = float(-np.iinfo(channels_first.dtype).min)
        floats = channels_first.astype(np.float32) / np.float32(full_scale)
    elif np.issubdtype(channels_first.dtype, np.floating):
        floats = channels_first.astype(np.float32)
    else:
        raise VoiceError(f"voice prompt {name}: unsupported sample dtype {array.dtype}")
    return _validated(np.ascontiguousarray(floats), int(rate), name)


def _validated(samples: np.ndarray, rate: int, name: str) -> PromptAudio:
    if rate < MIN_SAMPLE_RATE:
        raise VoiceError(f"voice prompt {name}: sample rate {rate} Hz is below {MIN_SAMPLE_RATE} Hz")
    if samples.shape[0] == 0 or samples.shape[1] == 0:
        raise VoiceError(f"voice prompt {name}: contains no audio samples")
    if not np.isfinite(samples).all():
        raise VoiceError(f"voice prompt {name}: contains NaN or infinite samples")
    return PromptAudio(samples=samples, sample_rate=rate, source=name)


def check_usable(audio: PromptAudio) -> None:
    """Reject prompts that cannot condition a voice (docs/TOKEN2WAV.md §2.1).

    Raises:
        VoiceError: shorter than `MIN_PROMPT_SECONDS`, longer than `MAX_PROMPT_SECONDS`, or silent
            (RMS of channel 0 and of the channel mean both below `SILENCE_RMS_DBFS`).
    """
    duration = audio.duration_s
    if duration < MIN_PROMPT_SECONDS:
        raise VoiceError(
            f"voice prompt {audio.source}: {duration:.2f} s is too short; use at least "
            f"{MIN_PROMPT_SECONDS:.0f} s of speech (3-10 s recommended)"
        )
    if duration > MAX_PROMPT_SECONDS:
        raise VoiceError(_too_long(audio.source, duration))
    level = max(_rms_dbfs(audio.samples[0]), _rms_dbfs(audio.samples.mean(axis=0)))
    if level < SILENCE_RMS_DBFS:
        raise VoiceError(
            f"voice prompt {audio.source}: silent (RMS {level:.0f} dBFS, below {SILENCE_RMS_DBFS:.0f} dBFS)"
        )


def _too_long(source: str, duration: float) -> str:
    return (
        f"voice prompt {source}: {duration:.1f} s is too long; the limit is "
        f"{MAX_PROMPT_SECONDS:.0f} s (3-10 s recommended)"
    )


def _rms_dbfs(mono: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(mono, dtype=np.float64))))
    return 20.0 * math.log10(rms) if rms > 0.0 else -math.inf


def first_channel(audio: PromptAudio, sample_rate: int) -> torch.Tensor:
    """Channel 0 at `sample_rate`, float32 `[frames]` on CPU (tokenizer and speaker-embedding input)."""
    return resample(torch.from_numpy(audio.samples[0].copy()), audio.sample_rate, sample_rate)


def channel_mean(audio: PromptAudio, sample_rate: int) -> torch.Tensor:
    """The mean of all channels at `sample_rate`, float32 `[frames]` on CPU (prompt-mel input)."""
    mono = torch.from_numpy(audio.samples.copy()).mean(dim=0)
    return resample(mono, audio.sample_rate, sample_rate)


def resample(wave: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """Resample `[..., frames]` with torchaudio's default sinc-Hann kernel; identity when rates match."""
    if from_rate == to_rate:
        return wave
    resampled: torch.Tensor = audio_functional.resample(wave, orig_freq=from_rate, new_freq=to_rate)
    return resampled
