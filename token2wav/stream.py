"""Per-stream streaming state and the chunk schedule (docs/TOKEN2WAV.md §4.1, §4.3, §5.3).

A `Token2WavStream` owns everything that changes while one response is decoded: pending codes, the flow
caches (they share the voice's primed caches read-only, so nothing large is copied at start), the vocoder
caches, the call counter and the hop schedule. The model object holds only weights and constants, so any
number of streams interleave on one model with the same results as each alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from token2wav.errors import Token2WavError
from token2wav.flow import FlowStreamState
from token2wav.vocoder_stream import VocoderState

LOOKAHEAD_TOKENS = 3
REFERENCE_HOP = 25
DEFAULT_FIRST_HOP = 10
# The vocoder's first window must hold at least its 8-frame cache: 2 x first hop >= 8.
MIN_FIRST_HOP = 4
SAMPLES_PER_TOKEN = 960  # 2 mel frames x 480 samples at 24 kHz
# Each hop may be at most this much larger than the one before it. Jumping from a 10-token first hop
# (240 ms of audio) straight to 25 makes the second chunk wait for 25 more codes (~0.4 s at 80 LLM tokens/s),
# longer than the first chunk lasts: a player starves once per response. 10 -> 15 -> 23 -> 25 keeps every
# chunk ahead of playback while the LLM is at least ~2x real time (measured with `realtime bench e2e`).
DEFAULT_HOP_GROWTH = 1.5


@dataclass(frozen=True)
class ChunkSchedule:
    """Windows of `hop + lookahead` codes advancing by `hop`; the first hop may be smaller.

    The reference runs 25 throughout (`ChunkSchedule.reference()`); our default starts with 10 for a faster
    first sound (first emission 960 x 10 - 3840 = 5760 samples = 240 ms), then 25.
    """

    first_hop_tokens: int = DEFAULT_FIRST_HOP
    hop_tokens: int = REFERENCE_HOP
    lookahead_tokens: int = LOOKAHEAD_TOKENS
    hop_growth: float = DEFAULT_HOP_GROWTH

    def __post_init__(self) -> None:
        if not self.hop_growth >= 1.0:
            raise Token2WavError(f"hop_growth must be >= 1, got {self.hop_growth}")
        if self.first_hop_tokens < MIN_FIRST_HOP:
            raise Token2WavError(f"first_hop_tokens must be >= {MIN_FIRST_HOP}, got {self.first_hop_tokens}")
        if self.hop_tokens < 1:
            raise Token2WavError(f"hop_tokens must be >= 1, got {self.hop_tokens}")
        if self.lookahead_tokens != LOOKAHEAD_TOKENS:
            raise Token2WavError(f"lookahead_tokens must be {LOOKAHEAD_TOKENS} (the model's look-ahead)")

    @classmethod
    def reference(cls) -> ChunkSchedule:
        """The Step-Audio2 reference schedule: 25 tokens per chunk throughout."""
        return cls(first_hop_tokens=REFERENCE_HOP, hop_tokens=REFERENCE_HOP)

    def hop(self, call_index: int) -> int:
        """Codes consumed by non-final call number `call_index` (0-based).

        The first hop is `first_hop_tokens`; each later hop grows by at most `hop_growth` (rounded up)
        until it reaches `hop_tokens`, then stays there. With `first_hop_tokens == hop_tokens` (the
        reference) every hop is `hop_tokens`.
        """
        hop = self.first_hop_tokens
        for _ in range(call_index):
            if hop >= self.hop_tokens:
                return self.hop_tokens
            hop = min(self.hop_tokens, max(hop + 1, math.ceil(hop * self.hop_growth)))
        return hop if call_index == 0 else min(hop, self.hop_tokens)

    def max_window_tokens(self) -> int:
        """Largest window any call sends (a final call sends fewer than this)."""
        return max(self.first_hop_tokens, self.hop_tokens) + self.lookahead_tokens

    def plan(self, total_tokens: int) -> list[tuple[int, int, bool]]:
        """The (start, end, last) code windows a stream of `total_tokens` codes runs, in order."""
        windows: list[tuple[int, int, bool]] = []
        start = 0
        while total_tokens - start >= self.hop(len(windows)) + self.lookahead_tokens:
            hop = self.hop(len(windows))
            windows.append((start, start + hop + self.lookahead_tokens, False))
            start += hop
        if total_tokens > start:
            windows.append((start, total_tokens, True))
        return windows


@dataclass
class ChunkTiming:
    """Wall time of one chunk, split by stage (seconds)."""

    tokens: int
    samples: int
    flow_s: float
    hift_s: float


@dataclass(eq=False)
class Token2WavStream:
    """State of one response being decoded. Owned by one response; use from the model's worker thread.

    Attributes:
        voice_key: content hash of the voice it was started from.
        schedule: its hop schedule.
        flow: flow caches (cloned from the voice's primed caches at start).
        vocoder: vocoder caches (mel, source, withheld speech tail).
        pending: codes received but not yet consumed by a call.
        calls: chunk calls made so far.
        finished: `finish` was called; further pushes are an error.
        emitted_samples: PCM samples returned so far.
        generator: random source of the NSF when the vocoder is not deterministic (seeded per stream).
        timings: per-chunk timings (for benchmarks).
    """

    voice_key: str
    schedule: ChunkSchedule
    flow: FlowStreamState
    vocoder: VocoderState = field(default_factory=VocoderState)
    pending: list[int] = field(default_factory=list)
    calls: int = 0
    finished: bool = False
    emitted_samples: int = 0
    generator: torch.Generator | None = None
    timings: list[ChunkTiming] = field(default_factory=list)

    def next_hop(self) -> int:
        """Hop of the next non-final call."""
        return self.schedule.hop(self.calls)

    def ready(self) -> bool:
        """Enough pending codes for a non-final call."""
        return len(self.pending) >= self.next_hop() + self.schedule.lookahead_tokens

    def close(self) -> None:
        """Drop the caches now (barge-in / cancel): the withheld tail is discarded, nothing is emitted."""
        self.finished = True
        self.pending = []
        self.vocoder = VocoderState()
