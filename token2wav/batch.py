"""Several streams decoded together: one batched flow pass and one batched vocoder pass per round.

`decode_steps` is what a scheduler calls with the streams it picked for one turn. Each stream gets its new
codes (and possibly its end); then, round by round, every stream that has a window ready contributes it, and
all those windows run as ONE flow call (`CausalMaskedDiffWithXvec.inference_chunks`: the encoder per stream,
one DiT pass per Euler step over every stream's CFG pair) and one vocoder call (`vocode_chunks`: equal-length
windows batched). A stream's audio is the same whichever streams it is batched with (up to floating-point
summation order), because every stream reads only its own caches, noise slice and generator.

Threading: like `Token2Wav`, call from one worker thread only.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from token2wav.errors import StreamError
from token2wav.flow import CausalMaskedDiffWithXvec, ChunkInput
from token2wav.hift import HiFTGenerator
from token2wav.stream import ChunkTiming, Token2WavStream
from token2wav.vocoder_stream import pcm_float_to_int16, vocode_chunks


class BatchModel(Protocol):
    """What batched decoding needs of `token2wav.model.Token2Wav` (a protocol: the model imports this module)."""

    flow: CausalMaskedDiffWithXvec
    hift: HiFTGenerator
    device: torch.device
    window_batches: Counter[int]

    def check(self, codes: Sequence[int]) -> list[int]: ...


@dataclass
class StreamStep:
    """One stream's work for a turn: codes to append, and whether its speech segment ends now.

    Attributes:
        stream: the stream (not finished).
        codes: validated 0-based audio codes to append.
        finish: decode everything pending as the final window and close the stream.
        out: int16 PCM chunks produced for this step (filled by `decode_steps`).
    """

    stream: Token2WavStream
    codes: Sequence[int] = ()
    finish: bool = False
    out: list[np.ndarray] = field(default_factory=list)


@dataclass(frozen=True)
class Window:
    """One chunk call: a stream, its code window, and whether it is the stream's final window."""

    stream: Token2WavStream
    codes: list[int]
    last: bool


def decode_steps(model: BatchModel, steps: Sequence[StreamStep], max_batch: int | None = None) -> None:
    """Append each step's codes, then run every ready window, batched across streams; fills `step.out`.

    Args:
        model: the decoder (weights only).
        steps: distinct, unfinished streams with their new codes.
        max_batch: most windows per batched call (None: all ready windows at once).

    Raises:
        StreamError: a finished stream, or one stream twice.
        InvalidCodes: codes out of range (nothing is appended for any step then).
    """
    if len({id(step.stream) for step in steps}) != len(steps):
        raise StreamError("a stream appears twice in one batch")
    if any(step.stream.finished for step in steps):
        raise StreamError("push on a finished stream")
    checked = [model.check(step.codes) for step in steps]
    for step, codes in zip(steps, checked, strict=True):
        step.stream.pending.extend(codes)
    while True:
        ready: list[tuple[StreamStep, Window, int]] = []
        for step in steps:
            stream = step.stream
            if stream.ready():
                hop = stream.next_hop()
                codes = stream.pending[: hop + stream.schedule.lookahead_tokens]
                ready.append((step, Window(stream, codes, last=False), hop))
            elif step.finish and stream.pending and not stream.finished:
                ready.append((step, Window(stream, list(stream.pending), last=True), len(stream.pending)))
        if not ready:
            break
        size = max_batch or len(ready)
        for at in range(0, len(ready), size):
            part = ready[at : at + size]
            pcms = run_windows(model, [window for _, window, _ in part])
            for (step, window, hop), pcm in zip(part, pcms, strict=True):
                del window.stream.pending[:hop]
                if window.last or pcm.size:  # a first hop of 4 codes yields no final samples yet
                    step.out.append(pcm_float_to_int16(pcm))
                if window.last:
                    window.stream.finished = True
    for step in steps:
        if step.finish:
            step.stream.pending = []
            step.stream.finished = True


@torch.inference_mode()
def run_windows(model: BatchModel, windows: Sequence[Window]) -> list[np.ndarray]:
    """Flow + vocoder for windows of distinct streams in one batched pass each; float32 PCM final now."""
    start = time.perf_counter()
    model.window_batches[len(windows)] += 1
    inputs = [
        ChunkInput(torch.tensor([list(w.codes)], dtype=torch.int64), w.stream.flow, w.last) for w in windows
    ]
    mels = [mel.float() for mel in model.flow.inference_chunks(inputs)]
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    flow_done = time.perf_counter()
    streams = [w.stream for w in windows]
    vocoded = vocode_chunks(
        model.hift,
        [s.vocoder for s in streams],
        mels,
        [w.last for w in windows],
        [s.generator for s in streams],
    )
    hift_done = time.perf_counter()
    pcms = []
    for window, (pcm, state) in zip(windows, vocoded, strict=True):
        stream = window.stream
        stream.vocoder = state
        stream.calls += 1
        stream.emitted_samples += int(pcm.shape[0])
        # Batched calls share their wall time: each stream records the batch's (what its client waited).
        timing = ChunkTiming(len(window.codes), int(pcm.shape[0]), flow_done - start, hift_done - flow_done)
        stream.timings.append(timing)
        pcms.append(pcm)
    return pcms
