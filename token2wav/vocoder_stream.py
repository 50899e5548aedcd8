"""Streaming stage of the vocoder: per-stream caches, Hamming cross-fade and withheld tail.

Implements docs/TOKEN2WAV.md §5.1-§5.2 exactly. HiFT is not causal, so each call re-renders
the last `MEL_CACHE_FRAMES` mel frames of the previous call with left context, overrides the start of the
new excitation with the previous call's excitation for those frames, and cross-fades the re-rendered audio
with the previous rendering. The previous rendering of those frames is withheld from the previous call's
output and emitted (faded) by the next one; the last call emits everything.

The state is an immutable value: `vocode_chunk` returns a new `VocoderState` and never mutates its input,
so streams cannot leak into each other and a state can be copied by reference.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from token2wav.hift import HiFTGenerator

# Mel frames carried from one call to the next (reference `mel_cache_len`); the cached source and speech
# tails cover the same frames, i.e. MEL_CACHE_FRAMES * samples_per_frame samples (3840 at 24 kHz).
MEL_CACHE_FRAMES = 8
# Full-scale value of int16 PCM used by the reference conversion (clip to ±1, then scale, then truncate).
_INT16_SCALE = np.float32(32767.0)


@dataclass(frozen=True)
class VocoderState:
    """Per-stream vocoder caches. All None before the first call.

    Attributes:
        mel: last <= MEL_CACHE_FRAMES mel frames of the previous HiFT input, [1, 80, m].
        source: last <= MEL_CACHE_FRAMES * 480 excitation samples of the previous call, [1, 1, s].
        speech: last MEL_CACHE_FRAMES * 480 speech samples of the previous call after its cross-fade
            (the withheld audio), [1, k], CPU float32.
    """

    mel: torch.Tensor | None = None
    source: torch.Tensor | None = None
    speech: torch.Tensor | None = None

    @property
    def started(self) -> bool:
        """True once a chunk has gone through (there is a withheld tail to fade into)."""
        return self.speech is not None

    @property
    def pending_samples(self) -> int:
        """Samples produced but not yet emitted (the withheld tail)."""
        return 0 if self.speech is None else int(self.speech.shape[-1])


@functools.lru_cache(maxsize=4)
def _crossfade_window(overlap: int) -> torch.Tensor:
    # numpy's symmetric Hamming of twice the overlap, kept in float64 as the reference does.
    return torch.from_numpy(np.hamming(2 * overlap))


def crossfade(new: torch.Tensor, old_tail: torch.Tensor) -> torch.Tensor:
    """Fade the start of `new` [1, L] with `old_tail` [1, n], n <= L; returns a new tensor.

    new[:n] * w[:n] + old[:n] * w[n:] with w = hamming(2n), computed in float64 and stored in new's
    dtype (the reference multiplies float32 audio by a float64 window).
    """
    n = old_tail.shape[-1]
    window = _crossfade_window(n).to(new.device)
    faded = new[..., :n].double() * window[:n] + old_tail.double() * window[n:]
    out = new.clone()
    out[..., :n] = faded.to(new.dtype)
    return out


@torch.inference_mode()
def vocode_chunk(
    hift: HiFTGenerator,
    state: VocoderState,
    chunk_mel: torch.Tensor,
    last: bool,
    *,
    generator: torch.Generator | None = None,
) -> tuple[np.ndarray, VocoderState]:
    """Vocode one chunk of mel and return the PCM that is final now.

    Args:
        hift: the vocoder (weights only; shared by streams).
        state: this stream's caches (not modified).
        chunk_mel: the flow's new mel frames [1, 80, F] (without the cached frames).
        last: final chunk of the stream: emit everything, including the tail.
        generator: random source for the NSF when the vocoder is not deterministic.

    Returns:
        (float32 PCM [N] in ±audio_limit, new state). N = 480 * (m + F) - (0 if last else 3840) where m is
        the number of cached mel frames: 960 H - 3840 for a first chunk of H tokens, 960 H afterwards.

    Raises:
        ValueError: bad shape, or a non-final window shorter than the cache (no full tail to withhold).
    """
    if chunk_mel.dim() != 3 or chunk_mel.shape[0] != 1 or chunk_mel.shape[-1] == 0:
        raise ValueError(f"chunk_mel must be [1, n_mels, F>0], got {tuple(chunk_mel.shape)}")
    mel_in = chunk_mel if state.mel is None else torch.cat([state.mel, chunk_mel], dim=-1)
    if not last and mel_in.shape[-1] < MEL_CACHE_FRAMES:
        raise ValueError(
            f"a non-final vocoder window needs at least {MEL_CACHE_FRAMES} mel frames, got {mel_in.shape[-1]}"
        )
    speech, source = hift.inference(mel_in, state.source, generator=generator)
    # Audio leaves as CPU float32 anyway; fading there also avoids float64 on accelerators (the reference
    # moves to the CPU for its fade too). The mel and source caches stay on the model's device.
    return _finish_window(hift, state, mel_in, speech.to(device="cpu", dtype=torch.float32), source, last)


def _finish_window(
    hift: HiFTGenerator,
    state: VocoderState,
    mel_in: torch.Tensor,
    speech: torch.Tensor,
    source: torch.Tensor,
    last: bool,
) -> tuple[np.ndarray, VocoderState]:
    """Cross-fade one stream's rendered window `[1, N]` (CPU float32) with its tail; new caches, final PCM."""
    tail_samples = MEL_CACHE_FRAMES * hift.samples_per_frame
    if not last and mel_in.shape[-1] < MEL_CACHE_FRAMES:
        raise ValueError(
            f"a non-final vocoder window needs at least {MEL_CACHE_FRAMES} mel frames, got {mel_in.shape[-1]}"
        )
    if state.speech is not None:
        speech = crossfade(speech, state.speech)
    new_state = VocoderState(
        mel=mel_in[..., -MEL_CACHE_FRAMES:].clone(),
        source=source[..., -tail_samples:].clone(),
        speech=speech[..., -tail_samples:].clone(),
    )
    emitted = speech if last else speech[..., :-tail_samples]
    return emitted[0].numpy(), new_state


@torch.inference_mode()
def vocode_chunks(
    hift: HiFTGenerator,
    states: list[VocoderState],
    chunk_mels: list[torch.Tensor],
    lasts: list[bool],
    generators: list[torch.Generator | None],
) -> list[tuple[np.ndarray, VocoderState]]:
    """`vocode_chunk` for several streams: windows of equal HiFT input length run as one batch.

    Each result equals that stream's `vocode_chunk` alone up to floating-point summation order (the NSF
    source is drawn per stream from its own generator).
    """
    results: list[tuple[np.ndarray, VocoderState] | None] = [None] * len(states)
    groups: dict[tuple[int, bool], list[int]] = {}
    for i, (state, mel) in enumerate(zip(states, chunk_mels, strict=True)):
        cached = 0 if state.mel is None else state.mel.shape[-1]
        # Same input length and same kind of source override (none / some) -> same shapes throughout.
        groups.setdefault((cached + mel.shape[-1], state.source is None), []).append(i)
    for members in groups.values():
        if len(members) == 1:
            i = members[0]
            results[i] = vocode_chunk(hift, states[i], chunk_mels[i], lasts[i], generator=generators[i])
            continue
        mel_ins = []
        for i in members:
            mel = chunk_mels[i]
            if mel.dim() != 3 or mel.shape[0] != 1 or mel.shape[-1] == 0:
                raise ValueError(f"chunk_mel must be [1, n_mels, F>0], got {tuple(mel.shape)}")
            state = states[i]
            mel_ins.append(mel if state.mel is None else torch.cat([state.mel, mel], dim=-1))
        speech, source = hift.inference_batch(
            torch.cat(mel_ins, dim=0), [states[i].source for i in members], [generators[i] for i in members]
        )
        speech = speech.to(device="cpu", dtype=torch.float32)
        for row, i in enumerate(members):
            results[i] = _finish_window(
                hift, states[i], mel_ins[row], speech[row : row + 1], source[row : row + 1], lasts[i]
            )
    return [r for r in results if r is not None]


def pcm_float_to_int16(pcm: np.ndarray) -> np.ndarray:
    """Float PCM -> little-endian int16 the reference way: truncate(clip(x, -1, 1) * 32767) in float32.

    Truncation toward zero, not rounding (docs/TOKEN2WAV.md §5.4).
    """
    scaled = np.clip(np.asarray(pcm, dtype=np.float32), -1.0, 1.0) * _INT16_SCALE
    return scaled.astype("<i2")
